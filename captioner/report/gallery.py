"""The gallery of a run report: a few images captioned by the run's model, one attention
overlay per word, and the decoding speed measured on them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from captioner.backbones import WeightsUnavailableError
from captioner.checkpoint import CheckpointError
from captioner.config import Config
from captioner.data.coco import DatasetError, load_split
from captioner.images import ImageLoadError, load_image
from captioner.inference import Captioner, CaptionResult
from captioner.report.run_folder import CHECKPOINTS
from captioner.visualize import save_overlays

# Pixels per overlay tile: a 20-word caption still fits a page, and the report stays a few MB.
GALLERY_TILE = 160


@dataclass(frozen=True)
class DecodingSpeed:
    """Wall time to caption `images` already-decoded images in one `Captioner.caption` call."""

    images: int
    beam_size: int
    device: str
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class GalleryItem:
    source: str
    result: CaptionResult
    path: Path


def gallery_sources(
    gallery_images: Sequence[str | Path] | None,
    size: int,
    scores: dict | None,
    scores_path: Path | None,
    config: Config | None,
    notes: list[str],
) -> list[Path]:
    """Up to `size` image files for the gallery: given paths, else the scored test images,
    else the first validation images; a note says where they came from or why there are none."""
    if size == 0:
        notes.append("Gallery skipped: gallery size 0.")
        return []
    if gallery_images is not None:
        return [Path(p) for p in gallery_images][:size]
    found: list[Path] = []
    if scores is not None and config is not None:
        found = _scored_images(scores, scores_path, config, size, notes)
        if found:
            notes.append(f"Gallery: the first {len(found)} images of the scored results.")
    if not found and config is not None and config.data.root:
        try:
            records = load_split(config.data, config.data.val_split)
        except (DatasetError, OSError) as error:
            notes.append(f"Gallery skipped: the validation images cannot be listed ({error}).")
            return []
        found = [r.path for r in records if r.path.is_file()][:size]
        if found:
            notes.append(f"Gallery: the first {len(found)} images of the '{config.data.val_split}' split.")
    if not found:
        notes.append("Gallery skipped: no image files found (pass gallery_images / --images).")
    return found


def _scored_images(scores: dict, scores_path: Path, config: Config, size: int, notes: list[str]) -> list[Path]:
    """Files of the first `size` image ids of the scores' results, looked up in the config's data."""
    results = _results_file(scores, scores_path)
    if results is None:
        return []
    try:
        ids = list(dict.fromkeys(int(item["image_id"]) for item in json.loads(results.read_text())))
        records = load_split(config.data, scores.get("split", "test"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as error:
        # DatasetError is a ValueError: the data may live on another machine than the report.
        notes.append(f"Images of {results.name} not found ({error}).")
        return []
    paths = {r.image_id: r.path for r in records}
    found = [paths[i] for i in ids if i in paths and paths[i].is_file()][:size]
    if not found:
        notes.append(f"None of the images of {results.name} is a file of the config's "
                     f"'{scores.get('split', 'test')}' split: the scores may come from other data.")
    return found


def _results_file(scores: dict, scores_path: Path) -> Path | None:
    """The captions file the scores were computed from: as recorded (relative to where evaluate
    ran), else by name beside the scores file, which also covers a copied or moved run folder."""
    candidates = []
    if scores.get("results"):
        recorded = Path(scores["results"])
        candidates += [recorded, scores_path.parent / recorded.name]
    candidates.append(scores_path.with_name(scores_path.stem + "_results.json"))
    return next((c for c in candidates if c.is_file()), None)


def load_captioner(run_dir: Path, device: str | torch.device, notes: list[str]) -> Captioner | None:
    """The run's best (else last) checkpoint, or None with a note: a report without a gallery
    still says how training went."""
    for name in CHECKPOINTS:
        if (run_dir / name).is_file():
            try:
                return Captioner.load(run_dir / name, device)
            except (CheckpointError, WeightsUnavailableError, OSError) as error:
                notes.append(f"Gallery skipped: cannot load {name} ({error}).")
                return None
    notes.append(f"Gallery skipped: no {' or '.join(CHECKPOINTS)} in the run folder.")
    return None


def measure_decoding(
    captioner: Captioner, images: Sequence, beam_size: int
) -> tuple[list[CaptionResult], DecodingSpeed]:
    """Caption `images` (decoded PIL images) in one batch and time it: preprocessing, encoder and
    beam search, after one warm-up image so one-time costs (allocator, kernel selection) are excluded."""
    captioner.caption(images[:1], beam_size=beam_size)
    _synchronize(captioner.device)
    started = time.perf_counter()
    results = captioner.caption(images, beam_size=beam_size)
    _synchronize(captioner.device)
    seconds = time.perf_counter() - started
    return results, DecodingSpeed(len(images), beam_size, str(captioner.device), seconds)


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, which would otherwise finish after the clock stops."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def caption_gallery(
    captioner: Captioner, sources: Sequence[Path], beam_size: int, gallery_dir: Path, notes: list[str]
) -> tuple[DecodingSpeed | None, list[GalleryItem]]:
    """Caption the readable `sources`, time it, and save one overlay grid per image."""
    images, readable = [], []
    for source in sources:
        try:
            images.append(load_image(source))
            readable.append(source)
        except ImageLoadError as error:
            notes.append(f"Gallery: {error}")
    if not images:
        return None, []
    results, speed = measure_decoding(captioner, images, beam_size)
    gallery = []
    for index, (source, image, result) in enumerate(zip(readable, images, results), start=1):
        path = gallery_dir / f"{index:02d}_{_safe_stem(source)}.png"
        save_overlays(image, result.words, result.attention, path, tile=GALLERY_TILE)
        gallery.append(GalleryItem(str(source), result, path))
    return speed, gallery


def _safe_stem(path: Path) -> str:
    """A file-name stem that needs no escaping in a Markdown link."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60] or "image"
