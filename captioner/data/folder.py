"""Your own captioned images: a folder with a `metadata.jsonl` or `metadata.csv` (the Hugging Face
`imagefolder` convention) read into the same `ImageRecord`s as COCO, one split at a time.

Each row names an image (`file_name`, relative to the folder) and one caption (`text`; in JSONL a
list of captions is accepted too); an image with several captions has several rows. An optional
`split` column (train, validation or val, test) places each image. Without one, the images are
split 90/5/5 with `data.split_seed` once, and the assignment is written to `folder_split.json`
beside the metadata (or to `data.split_file`): every later load (validation, `captioner
evaluate`, a resumed run) reads the same assignment, even after images are added.

Bad rows never stop a run: a malformed line, a row without a usable file name or caption, a
missing or unreadable image are each reported with the reason, counted, and skipped.
See docs/own-data.md.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from captioner.atomic import AtomicFile
from captioner.config import DataConfig
from captioner.data.coco import DatasetError, ImageRecord
from captioner.images import ImageLoadError, load_image
from captioner.vocab import tokenize

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
SPLIT_FILE_NAME = "folder_split.json"
SPLITS = ("train", "validation", "test")
# What a `split` value or a requested split means; the configs' val_split is "val".
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
FRACTIONS = {"train": 0.90, "validation": 0.05, "test": 0.05}

# Problem kinds, as counted in the summary.
MALFORMED = "malformed line"
BAD_ROW = "bad row"
EMPTY_CAPTION = "empty caption"
MISSING_FILE = "missing file"
UNREADABLE = "unreadable image"


@dataclass(frozen=True)
class Problem:
    """A skipped row or image: where (a line of the metadata, or an image's file name), what, why."""

    where: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class Row:
    """One usable metadata row: an image and its captions (one, or several from a list)."""

    line: int
    file_name: str
    captions: tuple[str, ...]
    split: str | None


@dataclass
class FolderSplit:
    """The records of one split, what was skipped on the way, and notes worth printing."""

    split: str
    metadata: Path
    records: list[ImageRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(problem.kind for problem in self.problems)

    def summary(self) -> str:
        """One line: what was used and what was skipped, by kind."""
        line = f"{self.metadata.name}, split {self.split}: {len(self.records)} images"
        if not self.problems:
            return line
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        return f"{line}; {len(self.problems)} skipped ({kinds})"


def metadata_file(root: str | Path) -> Path:
    """The folder's metadata.jsonl or metadata.csv; an error naming the folder when there is
    none, or both (which one holds the captions would be a guess)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root} (data.root)")
    found = [root / name for name in METADATA_NAMES if (root / name).is_file()]
    if not found:
        raise DatasetError(f"{root} has no metadata.jsonl or metadata.csv: rows of file_name and text "
                           "are needed (see docs/own-data.md)")
    if len(found) > 1:
        raise DatasetError(f"{root} has both metadata.jsonl and metadata.csv: keep one")
    return found[0]


def load_folder_split(data: DataConfig, split: str) -> list[ImageRecord]:
    """Records of `split` (train, val/validation, test) of the folder `data.root`; skipped rows
    and images are printed to stderr, each with its reason, then a summary line."""
    result = read_folder_split(data, split)
    for line in [*map(str, result.problems), *result.notes]:
        print(f"  {line}", file=sys.stderr)
    print(result.summary(), file=sys.stderr)
    if not result.records:
        raise DatasetError(f"no usable image in split {result.split} of {data.root} ({result.summary()})")
    return result.records


def read_folder_split(data: DataConfig, split: str) -> FolderSplit:
    """The records of one split and every problem met, without printing or raising for bad rows."""
    if split not in SPLIT_ALIASES:
        raise DatasetError(f"unknown split {split!r} of an image folder: use train, validation (val) or test")
    root = Path(data.root)
    result = FolderSplit(SPLIT_ALIASES[split], metadata_file(root))
    rows = read_metadata(result.metadata, result.problems)
    images = _group(rows, result.problems)
    # ids by sorted file name: the same in every split and every run over the same metadata
    ids = {name: number for number, name in enumerate(sorted(images), start=1)}
    assignment = _assign_splits(images, data, result)
    for name in sorted(name for name, where in assignment.items() if where == result.split):
        problem = _image_problem(root, name)
        if problem is None:
            result.records.append(ImageRecord(ids[name], root / name, images[name].captions))
        else:
            result.problems.append(problem)
    return result


# ---------------------------------------------------------------------------- metadata rows


def read_metadata(path: Path, problems: list[Problem]) -> list[Row]:
    """The usable rows of a metadata file; each bad line or row is appended to `problems`."""
    entries = _jsonl_entries(path) if path.suffix == ".jsonl" else _csv_entries(path)
    rows = []
    for line, entry in entries:
        if isinstance(entry, Problem):
            problems.append(entry)
            continue
        row, row_problems = _row(line, entry)
        problems.extend(row_problems)
        if row is not None:
            rows.append(row)
    return rows


def _jsonl_entries(path: Path):
    """(line number, dict or Problem) for each non-blank line; each line is decoded on its own so
    that one bad line costs that line only."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield number, Problem(f"line {number}", MALFORMED, f"not UTF-8 text ({error.reason})")
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                reason = f"invalid JSON ({error.msg} at column {error.colno})"
                yield number, Problem(f"line {number}", MALFORMED, reason)
                continue
            if not isinstance(value, dict):
                reason = f"a JSON object is needed, got {type(value).__name__}"
                yield number, Problem(f"line {number}", MALFORMED, reason)
                continue
            yield number, value


def _csv_entries(path: Path):
    """(line number, dict or Problem) for each CSV record after the header. The header must name
    file_name and text: without them no row can be read, so that is an error for the file."""
    # utf-8-sig: spreadsheets often start CSV files with a byte-order mark; undecodable bytes
    # become U+FFFD and the row is reported below rather than failing the whole file
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle, strict=True)
        header = _csv_header(path, reader)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield start, Problem(f"line {start}", MALFORMED, f"invalid CSV ({error})")
                continue
            if not any(cell.strip() for cell in fields):
                continue
            if len(fields) != len(header):
                yield start, Problem(f"line {start}", MALFORMED, f"{len(fields)} fields, the header has {len(header)}")
            elif any("\ufffd" in cell for cell in fields):
                yield start, Problem(f"line {start}", MALFORMED, "not UTF-8 text")
            else:
                yield start, dict(zip(header, fields))


def _csv_header(path: Path, reader) -> list[str]:
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as error:
        raise DatasetError(f"{path}: the header line is not valid CSV ({error})") from error
    missing = [name for name in ("file_name", "text") if name not in header]
    if missing:
        raise DatasetError(f"{path}: the header line must name file_name and text columns; "
                           f"missing {', '.join(missing)} (header: {','.join(header) or 'empty'})")
    return header


def _row(line: int, entry: dict) -> tuple[Row | None, list[Problem]]:
    """A Row from one entry's fields, or None, with the problems found (a list of captions may
    lose some empty ones and keep the rest)."""
    where = f"line {line}"
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return None, [Problem(where, BAD_ROW, "no file_name")]
    name = name.strip()
    where = f"line {line} ({name})"
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return None, [Problem(where, BAD_ROW, "file_name must be a path inside the folder")]
    split = entry.get("split")
    if isinstance(split, str) and not split.strip():
        split = None  # an empty cell of a split column
    if split is not None and (not isinstance(split, str) or split.strip().lower() not in SPLIT_ALIASES):
        return None, [Problem(where, BAD_ROW, f"unknown split {split!r} (use train, validation, val or test)")]
    texts = entry.get("text")
    texts = texts if isinstance(texts, list) else [texts]
    if not texts or not all(isinstance(text, str) for text in texts):
        reason = f"text must be a caption or a list of captions, got {entry.get('text')!r}"
        return None, [Problem(where, BAD_ROW, reason)]
    problems = [Problem(where, EMPTY_CAPTION, "no words") for text in texts if not tokenize(text)]
    captions = tuple(text.strip() for text in texts if tokenize(text))
    row = Row(line, path.as_posix(), captions, SPLIT_ALIASES[split.strip().lower()] if split else None)
    return (row if captions else None), problems


@dataclass
class _Image:
    captions: tuple[str, ...]
    split: str | None
    line: int


def _group(rows: list[Row], problems: list[Problem]) -> dict[str, _Image]:
    """Each image's captions from all its rows; a row giving an image another split than its
    first row did is a bad row (one image in two splits would leak test captions into training)."""
    images: dict[str, _Image] = {}
    for row in rows:
        image = images.get(row.file_name)
        if image is None:
            images[row.file_name] = _Image(row.captions, row.split, row.line)
        elif row.split != image.split:
            problems.append(Problem(f"line {row.line} ({row.file_name})", BAD_ROW,
                                    f"split {row.split} differs from line {image.line}'s {image.split}"))
        else:
            image.captions += row.captions
    return images


def _image_problem(root: Path, name: str) -> Problem | None:
    """Why an image cannot be trained on, or None. It is decoded in full, as training will: a
    truncated file fails only there, and would stop the run mid-epoch."""
    path = root / name
    if not path.is_file():
        return Problem(name, MISSING_FILE, f"{path} not found")
    try:
        load_image(path)
    except ImageLoadError as error:
        return Problem(name, UNREADABLE, error.problem)
    return None


# ---------------------------------------------------------------------------- splits


def split_file_path(data: DataConfig) -> Path:
    """Where a folder without a split column keeps its split: data.split_file, else beside the metadata."""
    return Path(data.split_file) if data.split_file else Path(data.root) / SPLIT_FILE_NAME


def _assign_splits(images: dict[str, _Image], data: DataConfig, result: FolderSplit) -> dict[str, str]:
    """{file name: split}: from the split column when the metadata has one, else the stored split,
    made (and written) on first use."""
    if any(image.split is not None for image in images.values()):
        for name, image in images.items():
            if image.split is None:
                result.problems.append(Problem(f"line {image.line} ({name})", BAD_ROW,
                                               "no split, where other rows have one"))
        return {name: image.split for name, image in images.items() if image.split is not None}
    path = split_file_path(data)
    if not path.is_file():
        stored = random_split(sorted(images), data.split_seed)
        _write_split(path, stored, data.split_seed)
        result.notes.append(f"split {len(stored['train'])}/{len(stored['validation'])}/{len(stored['test'])} "
                            f"(train/validation/test, seed {data.split_seed}) written to {path}")
    else:
        stored = read_split_file(path)
    assignment = {name: split for split in SPLITS for name in stored[split] if name in images}
    new = [name for name in images if name not in assignment]
    if new:
        # new images join train: the validation and test images stay the ones scored before
        result.notes.append(f"{len(new)} new images (not in {path}) join train; delete that file to split again")
        assignment.update(dict.fromkeys(new, "train"))
    return assignment


def random_split(names: list[str], seed: int) -> dict[str, list[str]]:
    """90/5/5 of `names` shuffled with `seed`; validation and test get at least one image each
    when there are three or more, so that a small folder still validates and tests."""
    names = list(names)
    random.Random(seed).shuffle(names)
    held_out = {split: round(len(names) * FRACTIONS[split]) for split in ("validation", "test")}
    if len(names) >= 3:
        held_out = {split: max(1, n) for split, n in held_out.items()}
    validation, test = held_out["validation"], held_out["test"]
    return {
        "validation": sorted(names[:validation]),
        "test": sorted(names[validation: validation + test]),
        "train": sorted(names[validation + test:]),
    }


def _write_split(path: Path, splits: dict[str, list[str]], seed: int) -> None:
    try:
        with AtomicFile(path) as handle:
            json.dump({"seed": seed, **{split: splits[split] for split in SPLITS}}, handle, indent=1)
    except OSError as error:
        raise DatasetError(f"cannot write the image folder's split to {path} ({error.strerror}): "
                           "set data.split_file to a writable path") from error


def read_split_file(path: Path) -> dict[str, list[str]]:
    """A stored split: {"train": [...], "validation": [...], "test": [...]} of file names."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if all(isinstance(stored.get(split), list) for split in SPLITS):
            return {split: [str(name) for name in stored[split]] for split in SPLITS}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise DatasetError(f"cannot read the image folder's split {path} ({error}); "
                           "delete it to split again") from error
    raise DatasetError(f"{path} is not an image folder split (lists train, validation and test are needed); "
                       "delete it to split again")
