"""The shapes world generator: determinism, caption/object consistency, file formats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioner.data.shapes import (
    CAPTIONS_PER_IMAGE,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    SIZES,
    find_mentions,
    generate,
    load_objects,
    parse_caption,
)
from captioner.vocab import tokenize

NUM_IMAGES = 30
SIZE = 96
RELATIONS = ("to the left of", "to the right of", "above", "below")


def _generate(root: Path, seed: int = 7, workers: int = 1) -> Path:
    generate(root, NUM_IMAGES, seed, image_size=SIZE, workers=workers, progress=False)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def split_file(dataset) -> dict:
    return json.loads((dataset / "dataset_shapes.json").read_text())


@pytest.fixture(scope="module")
def objects(dataset):
    return load_objects(dataset / "annotations" / "shapes_objects.json")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(dataset, tmp_path):
    again = _files(_generate(tmp_path / "again"))
    assert again == _files(dataset)
    other = _files(_generate(tmp_path / "other", seed=8))
    assert other.keys() == again.keys()
    assert other["dataset_shapes.json"] != again["dataset_shapes.json"]
    first_image = "train2014/COCO_train2014_000000000001.jpg"
    assert other[first_image] != again[first_image]


def test_worker_processes_do_not_change_the_bytes(dataset, tmp_path):
    assert _files(_generate(tmp_path / "parallel", workers=2)) == _files(dataset)


def test_layout_and_summary(tmp_path):
    summary = generate(tmp_path, 10, seed=1, image_size=64, progress=False)
    assert summary["splits"] == {"train": 8, "val": 1, "test": 1}
    assert sorted(p.name for p in (tmp_path / "train2014").iterdir())[0] == "COCO_train2014_000000000001.jpg"
    assert sorted(p.name for p in (tmp_path / "val2014").iterdir()) == [
        "COCO_val2014_000000000009.jpg", "COCO_val2014_000000000010.jpg"
    ]
    assert all(Path(path).is_file() for path in summary["files"].values())


def test_every_reference_names_exactly_the_objects(split_file, objects):
    for image in split_file["images"]:
        expected = Counter((o.colour, o.shape) for o in objects[image["cocoid"]].objects)
        assert len(image["sentences"]) == CAPTIONS_PER_IMAGE
        for sentence in image["sentences"]:
            assert Counter(parse_caption(sentence["raw"])) == expected, sentence["raw"]
            assert sentence["tokens"] == tokenize(sentence["raw"])


def test_references_are_varied(split_file):
    distinct = [len({s["raw"] for s in image["sentences"]}) for image in split_file["images"]]
    assert min(distinct) == CAPTIONS_PER_IMAGE


def test_boxes_inside_image_and_apart(objects):
    assert len(objects) == NUM_IMAGES
    for image in objects.values():
        assert 1 <= len(image.objects) <= 3
        assert (image.width, image.height) == (SIZE, SIZE)
        for obj in image.objects:
            x, y, w, h = obj.bbox
            assert x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE and w > 0 and h > 0
            assert obj.shape in SHAPES and obj.colour in COLOURS and obj.size in SIZES
        for i, a in enumerate(image.objects):
            for b in image.objects[i + 1:]:
                ax, ay, aw, ah = a.bbox
                bx, by, bw, bh = b.bbox
                assert ax + aw < bx or bx + bw < ax or ay + ah < by or by + bh < ay


def test_small_and_large_sizes_differ(objects):
    sides = {size: [o.bbox[2] / SIZE for im in objects.values() for o in im.objects if o.size == size]
             for size in SIZES}
    assert max(sides["small"]) < min(sides["large"])


def test_coco_files_load_with_pycocotools(dataset, split_file):
    train = COCO(str(dataset / "annotations" / "captions_train2014.json"))
    val = COCO(str(dataset / "annotations" / "captions_val2014.json"))
    counts = Counter(image["split"] for image in split_file["images"])
    assert len(train.getImgIds()) == counts["train"] == 24
    assert len(val.getImgIds()) == counts["val"] + counts["test"] == 6
    assert set(train.getImgIds()).isdisjoint(val.getImgIds())
    assert len(train.getAnnIds()) == CAPTIONS_PER_IMAGE * counts["train"]
    for image in split_file["images"]:
        coco = train if image["split"] == "train" else val
        info = coco.loadImgs(image["cocoid"])[0]
        assert info["file_name"] == image["filename"]
        assert (dataset / image["filepath"] / image["filename"]).is_file()
        captions = sorted(a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image["cocoid"])))
        assert captions == sorted(s["raw"] for s in image["sentences"])


def test_parse_caption_counts_plurals_and_sizes():
    assert parse_caption("Two small red circles and an orange star.") == [
        ("red", "circle"), ("red", "circle"), ("orange", "star")
    ]
    assert parse_caption("a large blue cross to the left of a green triangle") == [
        ("blue", "cross"), ("green", "triangle")
    ]
    assert parse_caption("three yellow crosses") == [("yellow", "cross")] * 3


def test_parse_caption_tolerates_model_output():
    assert parse_caption("red circles blue star star on dark background") == [
        ("red", "circle"), ("red", "circle"), ("blue", "star")
    ]
    assert parse_caption("a circle") == []
    assert parse_caption("") == []


def test_find_mentions_reports_positions_and_missing_colours():
    mentions = find_mentions(["a", "circle", "and", "two", "blue", "stars"])
    assert [(m.index, m.colour, m.shape, m.count) for m in mentions] == [
        (1, None, "circle", 1), (5, "blue", "star", 2)
    ]


def test_find_mentions_spans_each_phrase_from_its_count_or_first_attribute():
    words = "an image with two small blue stars a large red circle and a square".split()
    spans = [(m.start, m.colour_index, m.index) for m in find_mentions(words)]
    # "two small blue stars" from the count; "large red circle" without its article; "square" alone
    assert spans == [(3, 5, 6), (8, 9, 10), (13, None, 13)]
    assert [" ".join(words[m.start:m.index + 1]) for m in find_mentions(words)] == [
        "two small blue stars", "large red circle", "square"]


def test_bad_splits_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="splits"):
        generate(tmp_path, 4, seed=0, splits={"train": 0.5, "dev": 0.5}, progress=False)


def _nearest_colour(pixel: np.ndarray) -> str:
    return min(COLOURS, key=lambda c: float(np.sum((np.asarray(COLOUR_RGB[c], float) - pixel) ** 2)))


def test_pixels_show_the_annotated_colours(dataset, objects):
    # Every shape covers its box centre, so the centre pixel carries the object's colour.
    for image_id, image in objects.items():
        folder = "train2014" if "train2014" in image.file_name else "val2014"
        pixels = np.asarray(Image.open(dataset / folder / image.file_name).convert("RGB"), float)
        for obj in image.objects:
            x, y, w, h = obj.bbox
            assert _nearest_colour(pixels[y + h // 2, x + w // 2]) == obj.colour


def test_spatial_relations_match_box_centres(split_file, objects):
    checked = 0
    for image in split_file["images"]:
        by_kind = {(o.colour, o.shape): o for o in objects[image["cocoid"]].objects}
        for sentence in image["sentences"]:
            relation = next((r for r in RELATIONS if f" {r} " in sentence["raw"]), None)
            if relation is None:
                continue
            first, second = (by_kind[kind] for kind in parse_caption(sentence["raw"]))
            dx = (second.bbox[0] + second.bbox[2] / 2) - (first.bbox[0] + first.bbox[2] / 2)
            dy = (second.bbox[1] + second.bbox[3] / 2) - (first.bbox[1] + first.bbox[3] / 2)
            expected = {"to the left of": dx > abs(dy), "to the right of": -dx > abs(dy),
                        "above": dy > abs(dx), "below": -dy > abs(dx)}
            assert expected[relation], sentence["raw"]
            checked += 1
    assert checked > 0
