import pytest

from captioner.data.shapes import generate


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory):
    """A tiny shapes world in the official COCO layout plus a Karpathy split file."""
    root = tmp_path_factory.mktemp("shapes")
    generate(root, num_images=24, seed=7, splits={"train": 0.5, "val": 0.25, "test": 0.25}, image_size=96,
             progress=False)
    return root
