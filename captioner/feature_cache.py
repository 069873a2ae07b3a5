"""Encoder features of an ordered list of images, computed once, stored on disk, memory-mapped.

Letters in shapes: N images, P grid cells, D feature dim.

One cache folder holds the features of one (encoder config, ordered image list):

    index.json    {"format": 1, "dtype": "float16", "shape": [N, P, D], "completed": k,
                   "encoder": {the model.encoder config}, "images": [path, ...]}
    features.f16  raw float16 in C order, shape (N, P, D): image i is bytes [i·P·D·2, (i+1)·P·D·2)

`read` maps features.f16 and returns it as a zero-copy (N, P, D) float16 tensor: the operating
system pages rows in as batches touch them, so a COCO-sized cache (120k × 196 × 2048 × 2 bytes
≈ 96 GB) never has to fit in memory. `build` encodes the images in batches and writes them
through the same mapping; index.json's `completed` only ever counts rows that are already on
disk, so a build stopped by Ctrl-C or a crash resumes from there. `open_or_build` is what
training and `captioner features` call: one folder `<root>/<split>_<key12>` per encoder config
and image list, so both find the same cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.atomic import AtomicFile
from captioner.config import EncoderConfig
from captioner.data.coco import ImageDataset, ImageRecord
from captioner.device import autocast

FORMAT = 1
INDEX = "index.json"
DATA = "features.f16"
_ITEM_BYTES = 2  # float16


class FeatureCacheError(ValueError):
    """A feature cache is missing, incomplete, damaged, or holds other features; the message
    names the folder and says how to proceed."""


def cache_key(encoder_config: EncoderConfig, records: Sequence[ImageRecord]) -> str:
    """sha1 of the encoder config and the image paths in order: what the features depend on."""
    identity = json.dumps([dataclasses.asdict(encoder_config), [str(r.path) for r in records]])
    return hashlib.sha1(identity.encode()).hexdigest()


def cache_folder(root: str | Path, split: str, encoder_config: EncoderConfig, records: Sequence[ImageRecord]) -> Path:
    """`<root>/<split>_<key12>`: the folder training and `captioner features` both use."""
    return Path(root) / f"{split}_{cache_key(encoder_config, records)[:12]}"


def open_or_build(
    encoder: torch.nn.Module,
    encoder_config: EncoderConfig,
    records: Sequence[ImageRecord],
    root: str | Path,
    split: str,
    device: torch.device,
    **options,
) -> torch.Tensor:
    """Features (N, P, D) float16 of `records` from their cache folder under `root`, encoding
    the images first if the cache is absent or unfinished. `options` are `build`'s."""
    folder = cache_folder(root, split, encoder_config, records)
    return build(encoder, encoder_config, records, folder, device, desc=f"encoding {split} images", **options)


def read(folder: str | Path) -> torch.Tensor:
    """The (N, P, D) float16 tensor of a complete cache, memory-mapped: indexing it
    (`features[i]`, `features[list]`) reads only those rows from disk."""
    folder = Path(folder)
    index = _load_index(folder)
    if index is None:
        raise FeatureCacheError(f"no feature cache in {folder} ({INDEX} not found)")
    N = index["shape"][0]
    if index["completed"] < N:
        raise FeatureCacheError(f"the feature cache in {folder} is incomplete: {index['completed']} of {N} images "
                                f"encoded; run `captioner features` (or feature_cache.build) again to finish it")
    return torch.from_numpy(_map(folder, index, "c"))


def build(
    encoder: torch.nn.Module,
    encoder_config: EncoderConfig,
    records: Sequence[ImageRecord],
    folder: str | Path,
    device: torch.device,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    amp: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    flush_seconds: float = 30.0,
    desc: str = "encoding images",
) -> torch.Tensor:
    """Encode `records` with `encoder` (a frozen `captioner.model.Encoder` built from
    `encoder_config`) into `folder`; returns `read(folder)`, the (N, P, D) float16 tensor.

    A complete cache of the same encoder config and images is returned as it is; an unfinished
    one is resumed from its completed count. Progress is made durable (features flushed, then
    index.json replaced atomically) every `flush_seconds` and whenever the build stops, Ctrl-C
    and errors included. A folder holding features of another encoder config or image list is
    an error unless `overwrite`, which deletes them first.
    """
    folder = Path(folder)
    if not records:
        raise FeatureCacheError(f"no images to encode into {folder}")
    wanted = _new_index(encoder_config, records, encoder_config.grid ** 2, encoder.feature_dim)
    if overwrite:
        _delete(folder)
    index = _load_index(folder)
    if index is not None:
        _check_same(index, wanted, folder)
    else:
        index = wanted
    N = index["shape"][0]
    if index["completed"] == N and _data_complete(folder, index):
        return read(folder)

    folder.mkdir(parents=True, exist_ok=True)
    if not _data_complete(folder, index):  # new, or its data file went missing: start over
        index["completed"] = 0
    _check_disk_space(folder, index, desc)
    _write_index(folder, index)
    data = _map(folder, index, "r+" if index["completed"] else "w+")

    def save_progress(completed: int) -> None:
        data.flush()  # the rows first: the index must never count rows that are not on disk
        index["completed"] = completed
        _write_index(folder, index)

    _encode_into(data, encoder, records, index["completed"], device, save_progress,
                 batch_size=batch_size, num_workers=num_workers, amp=amp, progress=progress,
                 flush_seconds=flush_seconds, desc=desc)
    return read(folder)


def size_estimate(N: int, P: int, D: int) -> int:
    """Bytes of a cache of N images: N·P·D float16 values."""
    return N * P * D * _ITEM_BYTES


def human_size(size: float) -> str:
    """Decimal units, as `df -H` and file managers show them."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


@torch.no_grad()
def _encode_into(
    data: np.memmap,
    encoder: torch.nn.Module,
    records: Sequence[ImageRecord],
    start: int,
    device: torch.device,
    save_progress: Callable[[int], None],
    *,
    batch_size: int,
    num_workers: int,
    amp: bool,
    progress: bool,
    flush_seconds: float,
    desc: str,
) -> None:
    """Write the features of records[start:] into rows start: of `data` (N, P, D)."""
    # Its own generator: a DataLoader otherwise draws its base seed from the global RNG, and
    # training would then see other dropout masks depending on whether the cache was built.
    loader = DataLoader(ImageDataset(records[start:], encoder.preprocess), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    was_training = encoder.training
    encoder.eval()
    bar = tqdm(total=len(records), initial=start, desc=desc, unit="img", disable=not progress, leave=False)
    completed, saved_at = start, time.monotonic()
    try:
        for _, pixels in loader:
            with autocast(device, amp):
                grid = encoder(pixels.to(device, non_blocking=True)).to("cpu", torch.float16)  # (B, P, D)
            _check_batch(grid, data.shape[1:], records[completed : completed + len(grid)])
            data[completed : completed + len(grid)] = grid.numpy()
            completed += len(grid)
            bar.update(len(grid))
            # The index is rewritten whole (it lists every image), so not after every batch.
            if time.monotonic() - saved_at >= flush_seconds:
                save_progress(completed)
                saved_at = time.monotonic()
    finally:  # Ctrl-C or a crash: the rows before `completed` are whole, keep them
        save_progress(completed)
        bar.close()
        encoder.train(was_training)


def _check_batch(grid: torch.Tensor, row_shape: tuple[int, int], records: Sequence[ImageRecord]) -> None:
    if tuple(grid.shape[1:]) != tuple(row_shape):
        raise FeatureCacheError(f"the encoder gave features of shape {tuple(grid.shape[1:])} per image, "
                                f"the cache expects (P, D) = {tuple(row_shape)}")
    finite = torch.isfinite(grid).flatten(1).all(dim=1)
    if not finite.all():
        bad = records[int((~finite).nonzero()[0])].path
        raise FeatureCacheError(f"features of {bad} are not finite in float16 (over 65504, or NaN); "
                                "this encoder's features cannot be cached as float16")


def _new_index(encoder_config: EncoderConfig, records: Sequence[ImageRecord], P: int, D: int) -> dict:
    # Small fields first, so that `head -c 300 index.json` shows them before the image list.
    return {"format": FORMAT, "dtype": "float16", "shape": [len(records), P, D], "completed": 0,
            "encoder": dataclasses.asdict(encoder_config), "images": [str(r.path) for r in records]}


def _load_index(folder: Path) -> dict | None:
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
        missing = sorted({"format", "dtype", "shape", "completed", "encoder", "images"} - set(index))
        problem = f"no {', '.join(missing)}" if missing else None
        if not missing and len(index["shape"]) != 3:
            problem = f"shape {index['shape']} is not (N, P, D)"
    except (json.JSONDecodeError, TypeError) as error:
        problem = str(error)
    if problem:
        raise FeatureCacheError(f"{path} is not a feature cache index ({problem}); delete {folder} "
                                "or pass --overwrite to rebuild it")
    return index


def _check_same(index: dict, wanted: dict, folder: Path) -> None:
    """Refuse to mix: name what differs between the cache in `folder` and what is asked for."""
    differences = []
    if index["format"] != wanted["format"] or index["dtype"] != wanted["dtype"]:
        differences.append(f"it was written in cache format {index['format']} ({index['dtype']}), "
                           f"this captioner writes format {wanted['format']} ({wanted['dtype']})")
    for key in sorted(set(index["encoder"]) | set(wanted["encoder"])):
        cached, asked = index["encoder"].get(key), wanted["encoder"].get(key)
        if cached != asked:
            differences.append(f"model.encoder.{key} is {cached!r} there, {asked!r} here")
    differences += _image_differences(index["images"], wanted["images"])
    if not differences and index["shape"] != wanted["shape"]:
        differences.append(f"its features are (N, P, D) = {tuple(index['shape'])}, this encoder gives "
                           f"{tuple(wanted['shape'])}")
    if differences:
        raise FeatureCacheError(f"{folder} holds features of other images or another encoder: "
                                + "; ".join(differences)
                                + ". Write these features to another folder, or pass --overwrite "
                                  "(overwrite=True) to delete that cache and encode again")


def _image_differences(cached: list[str], asked: list[str]) -> list[str]:
    if cached == asked:
        return []
    if len(cached) != len(asked):
        return [f"the image list has {len(cached)} images there, {len(asked)} here"]
    position = next(i for i, (a, b) in enumerate(zip(cached, asked)) if a != b)
    return [f"the image lists differ from position {position}: {cached[position]!r} there, {asked[position]!r} here"]


def _data_complete(folder: Path, index: dict) -> bool:
    path = folder / DATA
    return path.is_file() and path.stat().st_size == size_estimate(*index["shape"])


def _map(folder: Path, index: dict, mode: str) -> np.memmap:
    """features.f16 as an (N, P, D) float16 array. Readers use mode "c" (copy-on-write): a
    writable array, which torch.from_numpy wants, whose writes never reach the file."""
    if mode != "w+" and not _data_complete(folder, index):
        raise FeatureCacheError(f"{folder / DATA} is missing or not {size_estimate(*index['shape'])} bytes as "
                                f"{INDEX} says; delete {folder} or pass --overwrite to rebuild it")
    return np.memmap(folder / DATA, dtype=np.float16, mode=mode, shape=tuple(index["shape"]))


def _check_disk_space(folder: Path, index: dict, desc: str) -> None:
    """Say how large the cache will be, and stop before starting if the disk cannot hold it:
    a memory-mapped write that hits a full disk kills the process (SIGBUS) instead of raising."""
    N, P, D = index["shape"]
    total = size_estimate(N, P, D)
    needed = size_estimate(N - index["completed"], P, D)
    done = f", {index['completed']} already encoded" if index["completed"] else ""
    print(f"{desc}: {N} images x {P} cells x {D} features as float16 = {human_size(total)} in {folder}{done}",
          file=sys.stderr)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise FeatureCacheError(f"not enough disk space for the feature cache in {folder}: it needs "
                                f"{human_size(needed)} more, {human_size(free)} is free; free some space or "
                                "put the cache on a larger disk (--out, or data.feature_cache_dir)")


def _write_index(folder: Path, index: dict) -> None:
    with AtomicFile(folder / INDEX) as handle:
        json.dump(index, handle)


def _delete(folder: Path) -> None:
    """Remove this module's files only (the folder may hold others): the index first, so a
    crash half-way leaves no index that claims data."""
    (folder / INDEX).unlink(missing_ok=True)
    (folder / DATA).unlink(missing_ok=True)
