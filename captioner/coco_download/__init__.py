"""Fetch COCO 2014 and Karpathy's split file for users who are online, then check what is there.

`download_coco(root)` downloads each archive of `COCO_FILES` to `root/downloads/NAME.partial`
(resuming an interrupted download with an HTTP Range request), verifies it against the sizes and
checksums the table publishes, renames it to `root/downloads/NAME`, and unpacks it into `root/`:

    root/train2014/  root/val2014/  root/annotations/captions_{train,val}2014.json
    root/dataset_coco.json  root/downloads/

Nothing is ever half-written: a final archive appears only after verification (temporary name,
then `os.replace`, as in `captioner.atomic`), and an archive is unpacked into a temporary folder
inside `root` and moved into place only once every member is out, so an interruption leaves
only a resumable `.partial` file or a temporary folder the next run removes. Files already
downloaded, or already unpacked (a marker `root/downloads/NAME.unpacked`), are not fetched again.

When the hosts cannot be reached the function fails fast with a `DownloadError` that says which
files to download elsewhere and where to put them; files placed there by hand are verified and
unpacked like downloaded ones. `mirror` replaces both hosts with a base URL (`MIRROR/NAME`),
a local folder or a `file://` URL.

`check_coco(root)` reports image counts, the caption files and the Karpathy split sizes;
`format_check(report)` prints it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from tqdm import tqdm

from captioner.coco_download.archives import (
    CAPTION_FILES,
    COCO_FILES,
    DOWNLOADS_DIR,
    SPLIT_FILE,
    CocoFile,
    DownloadError,
    human_size,
)
from captioner.coco_download.check import EXPECTED_IMAGES, EXPECTED_SPLITS, check_coco, format_check
from captioner.coco_download.fetch import (
    DEFAULT_TIMEOUT_S,
    RESUME_ATTEMPTS,
    FetchFailed,
    Unreachable,
    download,
    hash_file,
    host_of,
    mirror_folder,
    source_for,
    verify,
)
from captioner.coco_download.unpack import is_unpacked, unpack_archive

__all__ = ["CAPTION_FILES", "COCO_FILES", "EXPECTED_IMAGES", "EXPECTED_SPLITS", "SPLIT_FILE", "CocoFile",
           "DownloadError", "check_coco", "download_coco", "format_check"]


def _default_log(progress: bool) -> Callable[[str], None]:
    """Messages go beside the progress bars (to stderr), and nowhere when progress is off."""
    if not progress:
        return lambda message: None
    return lambda message: tqdm.write(message, file=sys.stderr)


def _select(table: Mapping[str, CocoFile], files: Iterable[str] | None) -> list[CocoFile]:
    if files is None:
        return list(table.values())
    names = list(files)
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ValueError(f"unknown COCO file(s) {', '.join(unknown)}; known: {', '.join(table)}")
    return [table[name] for name in names]


def _manual_instructions(root: Path, pending: list[CocoFile], unreachable: dict[str, str], done: list[str],
                         mirror: str | None) -> str:
    """What to do by hand when hosts are unreachable: which files, from where, into which folder."""
    reasons = "; ".join(f"cannot reach {host} ({reason})" for host, reason in unreachable.items())
    wanted = "".join(f"\n  {entry.name} ({human_size(entry.size)}) from {entry.url}"
                     + (f" (mirror: {source_for(entry, mirror)})" if mirror else "") for entry in pending)
    present = f"Already present: {', '.join(done)}." if done else "None of the files is present yet."
    return (f"{reasons}.\nDownload these files elsewhere and put them in {root / DOWNLOADS_DIR}/:{wanted}\n"
            f"then run the command again. {present}")


def _prepare_one(entry: CocoFile, root: Path, mirror: str | None, timeout: float, progress: bool,
                 log: Callable[[str], None], resume_attempts: int, unreachable: Mapping[str, str]) -> dict:
    """Make one archive present, verified and unpacked; returns its line of the report.

    A file whose host already failed to answer in this run is not tried again (each try could
    cost a full timeout), but one placed by hand is still verified and unpacked.
    """
    downloads = root / DOWNLOADS_DIR
    final = downloads / entry.name
    source = source_for(entry, mirror)
    line = {"path": str(final), "source": str(source)}
    if is_unpacked(root, entry):
        log(f"{entry.name}: already unpacked, skipped")
        return {**line, "status": "already unpacked", "verification": {}, "unpacked": True}
    status, checks = "already present", {}
    if final.is_file():
        checks, problems = verify(entry, hash_file(entry, final, progress))
        if problems:
            log(f"{final} failed verification ({'; '.join(problems)}); deleted, fetching it again")
            final.unlink()
    if not final.is_file():
        host = host_of(source)
        if host in unreachable:
            raise Unreachable(host, unreachable[host])
        checks = download(entry, source, downloads, timeout, progress, log, resume_attempts)
        status = "downloaded"
    log(f"{entry.name}: {status}; " + ", ".join(f"{key} {value}" for key, value in checks.items()))
    unpack_archive(entry, final, root, log, progress)
    return {**line, "status": status, "verification": checks, "unpacked": True}


def download_coco(root: str | Path, mirror: str | None = None, files: Iterable[str] | None = None,
                  progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S, *,
                  table: Mapping[str, CocoFile] = COCO_FILES, resume_attempts: int = RESUME_ATTEMPTS,
                  log: Callable[[str], None] | None = None) -> dict:
    """Download, verify and unpack COCO 2014 (+ Karpathy's splits) into `root`; return a report.

    `files` picks names of `table` (default all); `mirror` is a base URL, a folder or a file://
    URL that holds the files under their own names. Files already there are not fetched again.
    Raises `DownloadError` naming the file on verification or unpacking failures, and — after
    doing everything reachable — when some host could not be reached or a transfer broke, with
    instructions for placing the missing files by hand.

    Report: {"root", "files": {name: {"status", "path", "source", "verification", "unpacked"}},
    "check": check_coco(root)}.
    """
    root = Path(root).expanduser().resolve()
    (root / DOWNLOADS_DIR).mkdir(parents=True, exist_ok=True)
    log = log or _default_log(progress)
    folder = None if mirror is None else mirror_folder(mirror)
    if folder is not None and not folder.is_dir():
        raise DownloadError(f"mirror folder {folder} does not exist")
    report, failures, unreachable, pending = {}, [], {}, []
    for entry in _select(table, files):
        try:
            report[entry.name] = _prepare_one(entry, root, mirror, timeout, progress, log, resume_attempts,
                                              unreachable)
        except Unreachable as error:
            unreachable[error.host] = error.reason
            pending.append(entry)
        except FetchFailed as error:
            failures.append(str(error))
    if unreachable or failures:
        messages = failures[:]
        if unreachable:
            messages.insert(0, _manual_instructions(root, pending, unreachable, list(report), mirror))
        raise DownloadError("\n".join(messages))
    return {"root": str(root), "files": report, "check": check_coco(root)}
