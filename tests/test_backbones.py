import os
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import models

from captioner.backbones import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsUnavailableError,
    build_backbone,
    imagenet_classifier,
)
from captioner.images import Preprocess, load_image

COFFEE = Path(__file__).parent / "fixtures" / "coffee.png"
# ImageNet-1k class indices.
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504


@pytest.fixture(scope="module")
def classifier():
    return imagenet_classifier()


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> Path:
    """A random resnet50 state dict saved the way torchvision's own weight files are."""
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.manual_seed(0)
    torch.save(models.resnet50(weights=None).state_dict(), path)
    return path


def coffee_batch(mean, std) -> torch.Tensor:
    """(1, 3, 224, 224) coffee image normalised with `mean` / `std`."""
    return Preprocess(224, mean, std)(load_image(COFFEE)).unsqueeze(0)


# --- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("layer", "dim", "stride"),
    [("blocks.3", 80, 16), ("blocks.4", 112, 16), ("blocks.5", 192, 32), ("blocks.6", 320, 32), ("last", 1280, 32)],
)
def test_efficientnet_lite0_layers(layer, dim, stride):
    backbone = build_backbone("efficientnet_lite0", "none", layer).eval()
    assert (backbone.feature_dim, backbone.stride) == (dim, stride)
    assert backbone.mean == EFFICIENTNET_LITE0_MEAN and backbone.std == EFFICIENTNET_LITE0_STD
    assert backbone.default_image_size == 224
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, dim, 64 // stride, 64 // stride)


@pytest.mark.parametrize(("layer", "dim", "side"), [("last", 2048, 2), ("layer3", 1024, 4)])
def test_resnet50_layers(layer, dim, side):
    backbone = build_backbone("resnet50", "none", layer).eval()
    assert (backbone.feature_dim, backbone.stride) == (dim, 64 // side)
    assert backbone.mean == IMAGENET_MEAN and backbone.std == IMAGENET_STD
    with torch.no_grad():
        assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, dim, side, side)


def test_stages_run_in_forward_order():
    backbone = build_backbone("efficientnet_lite0", "none").eval()
    assert len(backbone.stages) == 9  # stem, seven block groups, conv_head
    images = torch.randn(1, 3, 32, 32)
    features = images
    with torch.no_grad():
        for stage in backbone.stages:
            features = stage(features)
        torch.testing.assert_close(features, backbone(images))


def test_unknown_name_and_layer_list_the_choices():
    with pytest.raises(ValueError, match="resnet101"):
        build_backbone("vgg16", "none")
    with pytest.raises(ValueError, match="layer3"):
        build_backbone("resnet50", "none", layer="layer2")


# --- the EfficientNet-Lite0 ImageNet weights ---------------------------------------------------

def test_imagenet_weights_recognise_the_coffee_cup(classifier):
    with torch.no_grad():
        top5 = classifier(coffee_batch(EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD)).topk(5).indices[0]
    assert {ESPRESSO, CUP, COFFEE_MUG} & set(top5.tolist()), top5


def test_normalisation_matches_the_stem_batch_norm_statistics(classifier):
    # The first batch norm saw the stem's outputs on training images normalised the right way,
    # so the right mean/std puts the coffee image's stem statistics closest to its running ones.
    def mismatch(mean, std) -> float:
        with torch.no_grad():
            stem = classifier.conv_stem(coffee_batch(mean, std))
        bn = classifier.bn1
        scale = (bn.running_var + bn.eps).sqrt()
        return float(((stem.mean((0, 2, 3)) - bn.running_mean) / scale).abs().mean())

    assert mismatch(EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD) < 0.7 * mismatch(IMAGENET_MEAN, IMAGENET_STD)


def test_backbone_shares_the_classifier_weights(classifier):
    backbone = build_backbone("efficientnet_lite0", "imagenet")
    stem_conv = backbone.stages[0][0]
    assert torch.equal(stem_conv.weight, classifier.conv_stem.weight)
    assert torch.equal(backbone.stages[-1][0].weight, classifier.conv_head.weight)


def test_efficientnet_timm_state_dict_file_round_trip(tmp_path, classifier):
    path = tmp_path / "lite0.pth"
    torch.save(classifier.state_dict(), path)
    reloaded = imagenet_classifier(str(path))
    for (name, expected), actual in zip(classifier.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_efficientnet_rejects_a_file_of_another_architecture(resnet50_file):
    with pytest.raises(WeightsUnavailableError, match="does not fit") as caught:
        build_backbone("efficientnet_lite0", str(resnet50_file))
    assert str(resnet50_file) in str(caught.value)


# --- ResNet weights ----------------------------------------------------------------------------

def test_resnet_local_weights_file_round_trip(resnet50_file):
    expected = torch.load(resnet50_file, weights_only=True)
    backbone = build_backbone("resnet50", str(resnet50_file))
    # Backbone names → torchvision names: stages[0] is (conv1, bn1, relu, maxpool), then layer1..4.
    prefixes = {"stages.0.0.": "conv1.", "stages.0.1.": "bn1.", **{f"stages.{i}.": f"layer{i}." for i in range(1, 5)}}

    def torchvision_name(key: str) -> str:
        prefix = next(p for p in prefixes if key.startswith(p))
        return prefixes[prefix] + key[len(prefix):]

    loaded = {torchvision_name(key): tensor for key, tensor in backbone.state_dict().items()}
    assert loaded.keys() == {key for key in expected if not key.startswith("fc.")}
    for key, tensor in loaded.items():
        assert torch.equal(tensor, expected[key]), key


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "resnet101-nowhere.pth"
    with pytest.raises(WeightsUnavailableError, match="not found") as caught:
        build_backbone("resnet101", str(missing))
    assert str(missing) in str(caught.value) and "'torchvision'" in str(caught.value)


def test_a_file_that_is_not_a_state_dict_names_the_path(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not weights")
    with pytest.raises(WeightsUnavailableError) as caught:
        build_backbone("resnet50", str(path))
    assert str(path) in str(caught.value)


def test_resnet_rejects_a_file_with_other_keys(tmp_path):
    path = tmp_path / "renamed.pth"
    torch.save({"model.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsUnavailableError, match="missing") as caught:
        build_backbone("resnet50", str(path))
    assert str(path) in str(caught.value)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty TORCH_HOME and a torch hub whose downloads fail like a machine without network.

    Returns the list of URLs a download was attempted for.
    """
    attempts = []

    def no_network(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # torchvision's WeightsEnum.get_state_dict → torch.hub.load_state_dict_from_url, which looks
    # this name up in torch.hub at call time to fetch a file missing from the cache.
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return attempts


def test_torchvision_weights_offline_explain_how_to_provide_them(offline_hub, tmp_path):
    url = models.ResNet101_Weights.DEFAULT.url
    filename = url.rsplit("/", 1)[-1]
    with pytest.raises(WeightsUnavailableError) as caught:
        build_backbone("resnet101", "torchvision")
    message = str(caught.value)
    assert offline_hub == [url]
    assert url in message and filename in message
    assert f"model.encoder.weights=/path/to/{filename}" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message


def test_torchvision_weights_come_from_the_hub_cache(offline_hub, tmp_path, resnet50_file):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    cached = checkpoints / models.ResNet50_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    cached.symlink_to(resnet50_file)
    backbone = build_backbone("resnet50", "torchvision", layer="layer3")
    assert offline_hub == []
    expected = torch.load(resnet50_file, weights_only=True)
    assert torch.equal(backbone.stages[0][0].weight, expected["conv1.weight"])


def test_a_damaged_hub_cache_file_is_named(offline_hub, tmp_path):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    cached = checkpoints / models.ResNet50_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    cached.write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError, match="Delete that file") as caught:
        build_backbone("resnet50", "torchvision")
    assert str(cached) in str(caught.value) and offline_hub == []


def hub_cache_file(tmp_path, weights: models.WeightsEnum) -> Path:
    """Where the `offline_hub` fixture's torch hub looks for `weights`; its folder exists."""
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    return checkpoints / weights.url.rsplit("/", 1)[-1]


class MakeDirectoryWhenUnpickled:
    """Unpickling this calls os.mkdir(path): an observable stand-in for arbitrary code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_a_planted_pickle_in_the_hub_cache_is_refused_and_never_run(offline_hub, tmp_path, container):
    marker = tmp_path / "payload-ran"
    cached = hub_cache_file(tmp_path, models.ResNet50_Weights.DEFAULT)
    payload = {"conv1.weight": MakeDirectoryWhenUnpickled(marker)}
    if container == "torch.save":
        torch.save(payload, cached)
    else:  # the pre-1.6 format torch.load still reads; protocol 2 is what it writes
        cached.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(WeightsUnavailableError, match="Delete that file") as caught:
        build_backbone("resnet50", "torchvision")
    assert not marker.exists()
    assert str(cached) in str(caught.value) and "more than tensors" in str(caught.value)
    assert offline_hub == []


def test_a_hub_cache_file_that_is_not_a_state_dict_is_refused(offline_hub, tmp_path):
    cached = hub_cache_file(tmp_path, models.ResNet50_Weights.DEFAULT)
    torch.save(["conv1.weight", 3], cached)  # weights-only loading allows lists, strings and numbers
    with pytest.raises(WeightsUnavailableError, match="not a state dict") as caught:
        build_backbone("resnet50", "torchvision")
    assert str(cached) in str(caught.value) and offline_hub == []


def test_a_damaged_weights_file_is_named_whatever_the_unpickler_raises(tmp_path):
    # The weights-only unpickler raises KeyError for this one (a reference to an unset memo slot).
    path = tmp_path / "resnet50-half.pth"
    path.write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError) as caught:
        build_backbone("resnet50", str(path))
    assert str(path) in str(caught.value)
