"""Batch captioning's inputs and outputs: which files to caption, their COCO image ids, and
result files that are never left half-written (JSONL, CSV or COCO results)."""

from __future__ import annotations

import csv
import glob
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from captioner.atomic import AtomicFile
from captioner.inference import CaptionResult

# What a folder contributes. SVG and HEIC are listed although they cannot be read, so that a
# folder's vector or phone images are reported as failures instead of silently skipped.
IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .webp .bmp .dib .gif .tif .tiff .ppm .pgm .pbm .pnm .tga .ico "
    ".jp2 .avif .heic .heif .svg .svgz".split()
)
FORMATS = ("jsonl", "csv", "coco")


def expand_inputs(inputs: Iterable[str], recursive: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders, glob patterns and @list.txt files (one path per line, '#' comments)
    → (paths to caption in a stable order without repeats, [(input, problem)] for inputs that
    name nothing). A named file is always kept, whatever its suffix: reading it decides."""
    paths, problems = [], []
    for item in inputs:
        if item.startswith("@"):
            try:
                lines = Path(item[1:]).read_text().splitlines()
            except OSError as error:
                problems.append((item, f"cannot read list file: {error.strerror or error}"))
                continue
            found, bad = expand_inputs([line.strip() for line in lines if line.strip() and not line.startswith("#")],
                                       recursive)
            paths += found
            problems += bad
        elif Path(item).is_dir():
            pattern = "**/*" if recursive else "*"
            files = [p for p in Path(item).glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            if not files:
                problems.append((item, "folder holds no image files" + ("" if recursive else " (try --recursive)")))
            paths += sorted(str(p) for p in files)
        elif glob.has_magic(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                problems.append((item, "pattern matched no files"))
            found, bad = expand_inputs(matches, recursive)
            paths += found
            problems += bad
        else:
            paths.append(item)  # a missing file is reported by the loader, in order, like any bad file
    return list(dict.fromkeys(paths)), problems


def load_image_ids(path: str | Path) -> dict[str, int]:
    """File name → COCO image id, from a COCO annotations file (its images[] file_name/id)
    or a plain JSON object {"file name or path": id}."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"--ids {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--ids {path}: not valid JSON ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return {image["file_name"]: int(image["id"]) for image in data["images"]}
    if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
        return data
    raise ValueError(f"--ids {path}: expected a COCO annotations file or a JSON object of file name → integer id")


def image_id(path: str, ids: dict[str, int] | None) -> int | None:
    """The COCO id of an image: from `ids` (by path, then file name), else the number at the
    end of a COCO-style name such as COCO_val2014_000000391895.jpg or 000000391895.jpg."""
    if ids is not None:
        return ids.get(path, ids.get(Path(path).name))
    match = re.search(r"(\d+)$", Path(path).stem)
    return int(match.group(1)) if match else None


def _flag(value: bool) -> str:
    """A CSV cell for a yes/no column, spelled as in the JSONL records."""
    return "true" if value else "false"


class ResultWriter:
    """Writes result records to `path` (None: stdout) in one of FORMATS.

    A caption that reached the length limit without `<end>` is marked unfinished: `finished`
    in JSONL records and CSV rows. COCO results stay the plain [{image_id, caption}] list
    that the evaluation tools read.

    A file is written under a temporary name in the same folder and renamed into place by
    `close`, so readers never see half a file and an existing file survives a crash. `close`
    after an interruption still produces a valid file holding the records written so far.
    """

    def __init__(self, path: str | Path | None, format: str, ids: dict[str, int] | None = None,
                 alternatives: bool = False):
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        self.path, self.format, self.ids, self.alternatives = (Path(path) if path else None), format, ids, alternatives
        self.coco: list[dict] = []
        self._file = AtomicFile(self.path, newline="") if self.path else None
        self.stream: TextIO = self._file.handle if self._file else sys.stdout
        self._csv = None
        if format == "csv":
            self._csv = csv.writer(self.stream)
            self._csv.writerow(["path", "caption", "score", "log_prob", "finished", "error"]
                               + (["alternatives"] if alternatives else []))

    def write(self, result: CaptionResult, attention_file: str | None = None) -> str | None:
        """Record one result; returns a problem that makes it a failure in this format, if any."""
        if self.format == "coco":
            if not result.ok:
                return result.error
            number = image_id(result.source, self.ids)
            if number is None:
                return (f"{result.source}: no COCO image id (name files like COCO_val2014_000000391895.jpg "
                        f"or pass --ids)")
            self.coco.append({"image_id": number, "caption": result.text})
            return None
        alternatives = [{"caption": a.text, "score": a.score} for a in result.alternatives]
        if self.format == "jsonl":
            record = {"path": result.source}
            if result.ok:
                record.update(caption=result.text, score=result.score, log_prob=result.log_prob,
                              finished=result.finished)
                if self.alternatives:
                    record["alternatives"] = alternatives
                if attention_file:
                    record["attention"] = attention_file
            else:
                record["error"] = result.error
            self.stream.write(json.dumps(record) + "\n")
        else:
            row = [result.source, result.text, f"{result.score:.6f}" if result.ok else "",
                   f"{result.log_prob:.6f}" if result.ok else "", _flag(result.finished) if result.ok else "",
                   result.error or ""]
            self._csv.writerow(row + ([" | ".join(a["caption"] for a in alternatives)] if self.alternatives else []))
        self.stream.flush()
        return result.error

    def close(self) -> None:
        """Finish the output: COCO's list is written, a file is renamed into place."""
        if self.format == "coco":
            json.dump(self.coco, self.stream, indent=1)
            self.stream.write("\n")
        self.stream.flush()
        if self._file is not None:
            self._file.commit()

    def discard(self) -> None:
        """Drop a file output after a crash, leaving any existing file at `path` untouched."""
        if self._file is not None:
            self._file.discard()
