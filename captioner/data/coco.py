"""COCO-format captioning data: official annotation files and Karpathy split files.

`load_split` turns either source into `ImageRecord`s; `CaptionDataset` + `CaptionCollator`
turn records into batches in which one image (or its cached features) serves several of its
captions.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from captioner.config import ConfigError, DataConfig
from captioner.images import Preprocess, load_image
from captioner.vocab import Vocabulary

# Which official file holds a split when no Karpathy split file is given.
_OFFICIAL = {"train": "train2014", "val": "val2014", "test": "val2014"}


class DatasetError(ValueError):
    """An annotation or split file is missing or malformed; the message names it."""


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    path: Path
    captions: tuple[str, ...]


def load_coco_captions(annotation_file: str | Path, image_dir: str | Path) -> list[ImageRecord]:
    """Records of an official `captions_*.json` read with pycocotools, in image id order."""
    from pycocotools.coco import COCO  # noqa: PLC0415 - slow import, only needed here

    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise DatasetError(f"COCO annotation file not found: {annotation_file}")
    records = []
    with cyclic_gc_paused():
        coco = COCO(str(annotation_file))
        for image_id in sorted(coco.getImgIds()):
            info = coco.loadImgs(image_id)[0]
            captions = tuple(a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)))
            if captions:
                records.append(ImageRecord(int(image_id), Path(image_dir) / info["file_name"], captions))
    return records


def load_karpathy_split(split_file: str | Path, image_root: str | Path, split: str) -> list[ImageRecord]:
    """Records of one split of a Karpathy-style file (dataset_coco/flickr8k/flickr30k.json).

    `restval` images join `train`, as in the paper's COCO protocol. Image ids are `cocoid` when
    present (so results can be scored against the official COCO annotations), else `imgid`.
    """
    split_file = Path(split_file)
    with cyclic_gc_paused():
        return _karpathy_records(split_file, image_root, split)


def _karpathy_records(split_file: Path, image_root: str | Path, split: str) -> list[ImageRecord]:
    try:
        images = json.loads(split_file.read_text())["images"]
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {split_file}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(f"{split_file} is not a Karpathy split file ({error})") from error
    wanted = {"train", "restval"} if split == "train" else {split}
    try:
        records = [
            ImageRecord(
                int(image.get("cocoid", image.get("imgid"))),
                Path(image_root) / image.get("filepath", "") / image["filename"],
                tuple(sentence["raw"] for sentence in image["sentences"]),
            )
            for image in images
            if image["split"] in wanted and image["sentences"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DatasetError(f"{split_file} is not a Karpathy split file: bad image entry ({error!r})") from error
    if not records:
        found = sorted({image["split"] for image in images})
        raise DatasetError(f"split {split!r} has no images in {split_file} (splits present: {found})")
    return records


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off while a large annotation file is parsed into records.

    Parsing allocates millions of small dicts, lists and strings, none of them in a reference
    cycle (reference counting frees them), but each full collection walks every live object
    again: in the COCO-scale rehearsal (bench/coco_scale.py) the split and vocabulary stage's
    cost per image grew with the number of images, and profiling at 10,000 showed the collector
    taking most of the split file's load time. It is turned back on (if it was on) however the
    block ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def captions_file(root: str | Path, folder: str) -> Path:
    """The official captions file of COCO's image folder `folder` (val2014 → captions_val2014.json)."""
    return Path(root) / "annotations" / f"captions_{folder}.json"


def load_split(data: DataConfig, split: str) -> list[ImageRecord]:
    """Records of `split` (train/val/test) from the data config's split file or official files,
    or, with `data.format: folder`, from an image folder's metadata (captioner.data.folder)."""
    if data.format == "folder":
        if not data.root:
            raise DatasetError("data.root is not set: pass --set data.root=/path/to/your/images")
        # imported here: the folder module builds on this one's ImageRecord and DatasetError
        from captioner.data.folder import load_folder_split  # noqa: PLC0415

        return load_folder_split(data, split)
    if data.format != "coco":
        raise ConfigError(f"config key data.format: expected coco or folder, got {data.format!r}")
    if not data.root:
        raise DatasetError("data.root is not set: pass --set data.root=/path/to/coco")
    root = Path(data.root)
    if data.split_file:
        return load_karpathy_split(data.split_file, root, split)
    return load_coco_captions(official_captions_file(root, split), root / _official_folder(split))


def official_captions_file(root: str | Path, split: str) -> Path:
    """The official captions file that holds `split` when no Karpathy split file is given."""
    return captions_file(root, _official_folder(split))


def _official_folder(split: str) -> str:
    if split not in _OFFICIAL:
        raise DatasetError(f"unknown split {split!r} without data.split_file; use train, val or test")
    return _OFFICIAL[split]


class CaptionDataset(Dataset):
    """One item per image: its pixels (or cached features) and a choice of encoded captions.

    With `features` (N, P, D) given, items carry those instead of loading the image file.
    Which captions an image contributes changes every epoch but is fixed by (seed, epoch).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        preprocess: Preprocess | None = None,
        features: torch.Tensor | None = None,
        captions_per_image: int = 5,
        max_words: int = 50,
        seed: int = 0,
    ):
        if (preprocess is None) == (features is None):
            raise ValueError("give exactly one of preprocess or features")
        self.records = list(records)
        self.encoded = [[vocab.encode(c, max_words) for c in r.captions] for r in self.records]
        self.preprocess = preprocess
        self.features = features
        self.captions_per_image = captions_per_image
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        captions = self.encoded[index]
        if self.captions_per_image < len(captions):
            rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
            captions = rng.sample(captions, self.captions_per_image)
        if self.features is not None:
            pixels_or_features = self.features[index]
        else:
            pixels_or_features = self.preprocess(load_image(self.records[index].path))
        return {"index": index, "input": pixels_or_features, "captions": captions}


def collate_captions(items: list[dict], pad_id: int = 0) -> dict:
    """Batch of B images with N ≥ B captions: inputs (B, ...), captions (N, T) padded,
    lengths (N,), image_index (N,) mapping each caption to its image."""
    captions = [c for item in items for c in item["captions"]]
    image_index = [i for i, item in enumerate(items) for _ in item["captions"]]
    lengths = torch.tensor([len(c) for c in captions])
    padded = torch.full((len(captions), int(lengths.max())), pad_id, dtype=torch.long)
    for row, caption in enumerate(captions):
        padded[row, : len(caption)] = torch.tensor(caption)
    return {
        "indices": torch.tensor([item["index"] for item in items]),
        "inputs": torch.stack([item["input"] for item in items]),
        "captions": padded,
        "lengths": lengths,
        "image_index": torch.tensor(image_index),
    }


class EpochBatchSampler:
    """Shuffled batches of image indices, fixed by (seed, epoch), that can start mid-epoch.

    Resuming a run at batch k of epoch e replays exactly the batches an uninterrupted run
    would have seen next. With `world_size` processes (torchrun), every process draws the same
    order and takes its slice of each global batch of `batch_size · world_size` images, like
    DistributedSampler; the order is padded by repeating its start so that every process runs
    the same number of batches (a process with fewer would leave the others waiting forever).
    One process sees exactly the batches of a run without torchrun.
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / (self.batch_size * self.world_size)) - self.start)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        padding = -self.size % self.world_size
        order = torch.cat([order, order.repeat(padding // max(self.size, 1) + 1)[:padding]])
        global_batches = order.split(self.batch_size * self.world_size)[self.start:]
        yield from (batch.tensor_split(self.world_size)[self.rank].tolist() for batch in global_batches)


class ImageDataset(Dataset):
    """Preprocessed pixels of each record, for feature extraction and decoding: (index, (3, S, S))."""

    def __init__(self, records: Sequence[ImageRecord], preprocess: Preprocess):
        self.records = list(records)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.preprocess(load_image(self.records[index].path))
