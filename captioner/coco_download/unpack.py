"""Unpacking a verified archive into the data folder: every member name checked before anything
is written, extracted into a temporary folder and moved into place whole, then marked done."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from captioner.atomic import AtomicFile
from captioner.coco_download.archives import CHUNK_BYTES, DOWNLOADS_DIR, CocoFile, DownloadError

UNPACKED_SUFFIX = ".unpacked"
UNPACK_TEMP_PREFIX = ".unpacking-"


def _member_parts(member: str, archive: str) -> tuple[str, ...]:
    """A member's path parts, refusing any that could land outside root or inside downloads/."""
    name = member.replace("\\", "/")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    drive = bool(parts) and len(parts[0]) == 2 and parts[0][1] == ":"
    if name.startswith("/") or drive or ".." in parts:
        raise DownloadError(f"{archive}: refusing to unpack member {member!r}: absolute path or '..' "
                            f"would write outside the data folder; nothing was unpacked")
    if parts and (parts[0] == DOWNLOADS_DIR or parts[0].startswith(UNPACK_TEMP_PREFIX)):
        raise DownloadError(f"{archive}: refusing to unpack member {member!r} into {parts[0]}/, "
                            f"which holds the downloads; nothing was unpacked")
    return parts


def _plan_members(entry: CocoFile, archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """(member, target parts) to extract: every member, or with `flatten` only the named files, at root.

    All names are checked before anything is written, so a hostile archive leaves no trace.
    """
    plan, taken = [], set()
    for info in archive.infolist():
        parts = _member_parts(info.filename, entry.name)
        if not parts:
            continue
        if entry.flatten:
            if info.is_dir() or parts[-1] not in entry.flatten or parts[0] == "__MACOSX" or parts[-1] in taken:
                continue
            taken.add(parts[-1])
            parts = (parts[-1],)
        plan.append((info, parts))
    return plan


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)


def _move_into_place(source: Path, destination: Path) -> None:
    """Move every entry of `source` into `destination`, merging folders that already exist there.

    Each rename is atomic, so even an interrupted merge only ever shows complete files.
    """
    for child in source.iterdir():
        target = destination / child.name
        if child.is_dir():
            if target.is_dir() and not target.is_symlink():
                _move_into_place(child, target)
                continue
            if target.exists() or target.is_symlink():
                target.unlink()
        elif target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(child, target)


def _remove_stale_unpacks(root: Path, name: str) -> None:
    """Temporary folders left by a run that was killed while unpacking `name`."""
    for stale in root.glob(f"{UNPACK_TEMP_PREFIX}{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def unpack_archive(entry: CocoFile, archive_path: Path, root: Path, log: Callable[[str], None], progress: bool) -> None:
    """Extract into a temporary folder inside root, move it into place, then write the marker."""
    _remove_stale_unpacks(root, entry.name)
    temp = Path(tempfile.mkdtemp(prefix=f"{UNPACK_TEMP_PREFIX}{entry.name}-", dir=root))
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                plan = _plan_members(entry, archive)
                for info, parts in tqdm(plan, desc=f"unpacking {entry.name}", unit="file", disable=not progress,
                                        file=sys.stderr, leave=False):
                    _extract_member(archive, info, temp.joinpath(*parts))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
            archive_path.unlink(missing_ok=True)  # e.g. an HTML error page saved under the zip's name
            raise DownloadError(f"{archive_path} is not a readable zip archive ({error}); it was deleted, "
                                f"run the command again to fetch it anew") from None
        _move_into_place(temp, root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    missing = [path for path in entry.provides if not (root / path).exists()]
    if missing:
        raise DownloadError(f"{archive_path} unpacked into {root} but did not provide {', '.join(missing)}: "
                            f"is it the right archive?")
    with AtomicFile(_marker(root, entry)) as handle:
        json.dump({"archive": entry.name, "root": str(root)}, handle)
    log(f"{entry.name}: unpacked into {root}")


def _marker(root: Path, entry: CocoFile) -> Path:
    return root / DOWNLOADS_DIR / (entry.name + UNPACKED_SUFFIX)


def is_unpacked(root: Path, entry: CocoFile) -> bool:
    """Marker written and what it promised still there (a deleted train2014/ is unpacked again)."""
    return _marker(root, entry).is_file() and all((root / path).exists() for path in entry.provides)
