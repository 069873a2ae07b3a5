"""Run configuration: frozen dataclasses loaded from YAML with `a.b=value` overrides.

Every key is checked: an unknown key or a value of the wrong type is a `ConfigError` that names
the dotted key, so a typo in a recipe fails before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass(frozen=True)
class EncoderConfig:
    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | resnet50 | resnet101 | resnet152
    weights: str = "imagenet"  # imagenet (pip package) | torchvision | none | /path/to/weights.pth
    layer: str = "last"  # which feature map feeds attention; see captioner.backbones
    image_size: int = 224
    grid: int = 7  # features are adaptively pooled to grid x grid = P cells
    fine_tune: int = 0  # number of last backbone stages trained; 0 keeps the encoder frozen


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embed_dim: int = 512
    attention_dim: int = 512
    decoder_dim: int = 512
    attention: str = "additive"  # additive | bilinear | dot
    # soft: z = Σ α_i a_i (§4.2); hard: z = a_s, s ~ Multinoulli(α), trained by the paper's rule
    # (§4.1, train.hard_*), decoded with the expected context
    attention_mode: str = "soft"
    gate: str = "scalar"  # scalar | vector | none
    # what α_t is scored against: `hidden` h_{t-1} (the paper's f_att(a_i, h_{t-1})); `hidden_and_word`
    # also the embedding of y_{t-1}, the word just emitted, which h_{t-1} has not read yet
    attention_query: str = "hidden"
    deep_output: bool = True
    feature_norm: bool = False  # LayerNorm on the encoder features before attention (not in the paper)
    dropout: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    format: str = "coco"  # coco | folder (your own images with a metadata.jsonl/.csv: docs/own-data.md)
    root: str = ""  # coco: folder holding annotations/, train2014/, val2014/; folder: the image folder
    # coco: Karpathy split JSON (None: captions_train2014 / captions_val2014);
    # folder: where its 90/5/5 split is kept when the metadata has no split column (None: beside it)
    split_file: str | None = None
    split_seed: int = 0  # folder: the seed of its 90/5/5 split, used when the split is first made
    train_split: str = "train"
    val_split: str = "val"
    min_word_count: int = 5
    max_caption_words: int = 50
    captions_per_image: int = 5  # captions drawn per image per epoch, sharing one encoder pass
    cache_features: bool = False  # encode each image once and train on stored features (frozen encoder)
    feature_cache_dir: str | None = None  # where cached features are kept for reuse; None: output_dir
    num_workers: int = 2
    val_max_images: int | None = None  # cap on validation images decoded per epoch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32  # images per batch; each brings captions_per_image captions
    lr: float = 4e-4
    encoder_lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"  # plateau | cosine | none
    lr_decay: float = 0.8
    lr_patience: int = 2
    attention_penalty: float = 1.0  # lambda of the doubly stochastic regulariser
    # Hard attention's learning rule (model.attention_mode=hard; Xu et al. §4.1, equations 11-12):
    hard_reinforce_weight: float = 1.0  # λ_r on (log p(y|s,a) − b) ∇log p(s|a)
    hard_entropy_weight: float = 0.002  # λ_e on ∇H[s], the attention's entropy
    hard_baseline_decay: float = 0.9  # b ← decay·b + (1 − decay)·log p(y|s,a), per batch
    hard_expected_context: float = 0.5  # share of batches trained on the expected context instead
    # cross_entropy: teacher forcing. scst: self-critical sequence training (Rennie et al., 2017),
    # a second stage started from a cross-entropy checkpoint (train.py --init): K captions sampled
    # per image, rewarded by CIDEr-D against the image's references (captioner/scst.py)
    objective: str = "cross_entropy"
    scst_samples: int = 5  # K samples per image
    scst_max_len: int = 16  # words per sample; one still running then is cut there
    scst_temperature: float = 1.0
    scst_baseline: str = "mean"  # mean of the image's other K − 1 rewards | greedy: its greedy caption's
    # > 0: the reward adds this weight × each sample's object F1 against its image's objects
    # (scst.ObjectNamingReward); needs the shapes world's annotations/shapes_objects.json
    scst_object_reward: float = 0.0
    grad_clip: float = 5.0  # 0 disables clipping
    clip_mode: str = "norm"  # norm | value
    val_metric: str = "CIDEr"  # Bleu_1..4, ROUGE_L or CIDEr of the validation captions
    early_stopping: int = 10  # epochs without improvement before stopping; 0 disables
    max_decode_len: int = 20
    checkpoint_every: int = 0  # also save checkpoint_last every N steps; 0: at epoch ends only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # Fast paths (each gives the plain path's numbers; tests/test_fast_paths.py checks it):
    fused_decoder: bool = True  # per-image work once per image, all-steps projections in one product
    compile: bool = False  # torch.compile the fused decoder's recurrent step (needs a C++ compiler)
    report: bool = True  # write RUN_DIR/report/ (curves, scores, attention gallery) when training ends
    seed: int = 0


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(cls: type, values: dict, prefix: str = ""):
    """Build dataclass `cls` from nested plain `values`, validating every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {name: _check(hints[name], value, prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def _check(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept what Python reads as a number.
            with contextlib.suppress(ValueError):
                return float(value)
        if kind is not type(None) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"config key {key}: expected {names}, got {value!r}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Return `values` with each `a.b.c=value` applied; the value is parsed as YAML."""
    values = _deep_copy(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        *parents, leaf = key.strip().split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return values


def _deep_copy(values: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (or the defaults when `path` is None) plus overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    return from_dict(Config, apply_overrides(values, overrides or []))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
