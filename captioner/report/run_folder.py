"""What a run folder holds (config.yaml, metrics.jsonl, the scores of `captioner evaluate`)
and how the report reads it: a missing or damaged piece becomes a note, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

from captioner.config import Config, ConfigError, load_config

REPORT_DIR = "report"
INDEX = "index.md"
GALLERY_DIR = "gallery"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
SCORES_PATTERN = "*scores*.json"
# Preferred first: the best model is the one a user would deploy.
CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_last.pt")


class ReportError(ValueError):
    """The run folder or a file named explicitly cannot be used; the message names it."""


def read_metrics(path: str | Path) -> tuple[list[dict], int]:
    """(one record per epoch in epoch order, number of unreadable lines) from `metrics.jsonl`.

    A run resumed from an older checkpoint logs some epochs twice: the later line wins, since it
    belongs to the run that produced the final checkpoints. A line cut short by a crash is
    skipped and counted. A missing file gives no records.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    by_epoch: dict[int, dict] = {}
    skipped = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            skipped += 1
            continue
        by_epoch[epoch] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)], skipped


def read_config(path: Path, notes: list[str]) -> tuple[str | None, Config | None]:
    """The YAML text as written by `fit`, and the parsed config when it still validates."""
    if not path.is_file():
        notes.append(f"{CONFIG_FILE} not found: config, dataset and gallery images unknown.")
        return None, None
    text = path.read_text()
    try:
        return text, load_config(path)
    except ConfigError as error:
        notes.append(f"{CONFIG_FILE} does not load with this version of captioner ({error}).")
        return text, None


def read_scores(path: Path) -> dict | None:
    """A scores JSON's contents, or None when the file is not one (e.g. a `*_results.json` list)."""
    try:
        scores = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"scores file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return scores if isinstance(scores, dict) and isinstance(scores.get("metrics"), dict) else None


def find_scores(run_dir: str | Path) -> tuple[Path | None, dict | None]:
    """The newest `*scores*.json` in `run_dir` that holds metrics, with its contents.

    `captioner evaluate` writes the captions beside the scores as `*_scores_results.json`,
    which matches the pattern too; such files hold no 'metrics' and are passed over.
    """
    found = []
    for path in Path(run_dir).glob(SCORES_PATTERN):
        scores = read_scores(path) if path.is_file() else None
        if scores is not None:
            found.append((path, scores))
    if not found:
        return None, None
    return max(found, key=lambda item: (item[0].stat().st_mtime, item[0].name))


def dataset_name(config: Config | None, scores: dict | None) -> str | None:
    """"COCO", "shapes", another split file's dataset name, or None when unknown.

    Only COCO runs are comparable with the published figures; a scores file with shapes
    grounding figures is a shapes run whatever the split file is called.
    """
    if scores and "shapes" in scores:
        return "shapes"
    if config is None:
        return None
    if config.data.format == "folder":  # the user's own images: no published figures to compare with
        return Path(config.data.root).name or "an image folder"
    if config.data.split_file:
        stem = Path(config.data.split_file).stem
        name = stem.removeprefix("dataset_")
        return "COCO" if name.lower() == "coco" else name
    # Without a split file the data are the official captions_{train,val}2014.json.
    return "COCO" if config.data.root else None


def is_number(value) -> bool:
    """An int or float but not a bool; NaN counts, so a diverged epoch shows as a gap, not a missing row."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
