"""Checking what COCO 2014 data a folder holds: image counts, caption files and the Karpathy
split sizes, compared with the real dataset's, and a terminal summary of it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from captioner.coco_download.archives import CAPTION_FILES, SPLIT_FILE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# What the real COCO 2014 holds; check_coco compares against these, it does not assume them.
EXPECTED_IMAGES = MappingProxyType({"train2014": 82_783, "val2014": 40_504})
EXPECTED_SPLITS = MappingProxyType({"train": 82_783, "restval": 30_504, "val": 5_000, "test": 5_000})


def _image_names(folder: Path) -> set[str]:
    """Image file names in `folder` (scandir: 82k entries stat'ed by the OS listing, not one by one)."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {entry.name for entry in entries
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()}


def _check_split_file(path: Path, expected: Mapping[str, int], images: Mapping[str, set[str]]) -> dict:
    """Image counts per split of a Karpathy file, and how many of its images are not on disk."""
    result = {"path": str(path), "present": path.is_file(), "error": None, "splits": {},
              "expected": dict(expected), "missing_images": None, "ok": False}
    if not result["present"]:
        return result
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)["images"]
        splits, missing = {}, 0
        for item in entries:
            splits[item["split"]] = splits.get(item["split"], 0) + 1
            folder, name = item.get("filepath", ""), item["filename"]
            on_disk = name in images[folder] if folder in images else (path.parent / folder / name).is_file()
            missing += not on_disk
    except (OSError, ValueError, KeyError, TypeError) as error:
        result["error"] = f"unreadable: {type(error).__name__}: {error}"
        return result
    result.update(splits=splits, missing_images=missing,
                  ok=missing == 0 and all(splits.get(split) == count for split, count in expected.items()))
    return result


def check_coco(root: str | Path, expected_images: Mapping[str, int] = EXPECTED_IMAGES,
               expected_splits: Mapping[str, int] = EXPECTED_SPLITS) -> dict:
    """What COCO 2014 data `root` holds, compared with what the real dataset has.

    {"root", "images": {folder: {"present", "count", "expected", "ok"}}, "captions": {path: bool},
    "split_file": {"path", "present", "error", "splits", "expected", "missing_images", "ok"},
    "complete": bool}. Counts are computed from disk and from dataset_coco.json, never assumed.
    """
    root = Path(root).expanduser()
    names = {folder: _image_names(root / folder) for folder in expected_images}
    images = {folder: {"present": (root / folder).is_dir(), "count": len(names[folder]), "expected": count,
                       "ok": len(names[folder]) == count}
              for folder, count in expected_images.items()}
    captions = {path: (root / path).is_file() for path in CAPTION_FILES}
    split_file = _check_split_file(root / SPLIT_FILE, expected_splits, names)
    complete = all(item["ok"] for item in images.values()) and all(captions.values()) and split_file["ok"]
    return {"root": str(root), "images": images, "captions": captions, "split_file": split_file,
            "complete": complete}


def format_check(report: Mapping) -> str:
    """`check_coco`'s report as a few aligned lines for a terminal."""
    lines = [f"COCO 2014 in {report['root']}: {'complete' if report['complete'] else 'INCOMPLETE'}"]
    for folder, item in report["images"].items():
        state = "ok" if item["ok"] else ("missing" if not item["present"] else f"expected {item['expected']:,}")
        lines.append(f"  {folder + '/':<40} {item['count']:>7,} images  {state}")
    for path, present in report["captions"].items():
        lines.append(f"  {path:<40} {'present' if present else 'missing'}")
    split = report["split_file"]
    name = Path(split["path"]).name
    if not split["present"]:
        lines.append(f"  {name:<40} missing")
    elif split["error"]:
        lines.append(f"  {name:<40} {split['error']}")
    else:
        names = list(split["expected"]) + [s for s in split["splits"] if s not in split["expected"]]
        counts = ", ".join(f"{s} {split['splits'].get(s, 0):,}"
                           + (f" (expected {split['expected'][s]:,})"
                              if s in split["expected"] and split["splits"].get(s, 0) != split["expected"][s] else "")
                           for s in names)
        lines.append(f"  {name:<40} {counts}  {'ok' if split['ok'] else ''}".rstrip())
        if split["missing_images"]:
            lines.append(f"  {'':<40} {split['missing_images']:,} of its images are not on disk")
    return "\n".join(lines)
