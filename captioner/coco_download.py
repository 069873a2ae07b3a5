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

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO

from tqdm import tqdm

from captioner.atomic import AtomicFile

COCO_IMAGES_URL = "http://images.cocodataset.org/zips/"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/"
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/"

# One timeout for connecting and for each read: short, so an offline machine fails in seconds;
# a stalled transfer that already moved bytes is resumed rather than waited for.
DEFAULT_TIMEOUT_S = 15.0
# Resumes within one run after a transfer breaks mid-way (never after a failed connect).
RESUME_ATTEMPTS = 3
CHUNK_BYTES = 1 << 20
USER_AGENT = "captioner-coco-download/1"

DOWNLOADS_DIR = "downloads"
PARTIAL_SUFFIX = ".partial"
UNPACKED_SUFFIX = ".unpacked"
UNPACK_TEMP_PREFIX = ".unpacking-"
UNVERIFIED = "unverified (no published checksum)"
UNVERIFIED_SIZE = "unverified (no published size)"

CAPTION_FILES = ("annotations/captions_train2014.json", "annotations/captions_val2014.json")
SPLIT_FILE = "dataset_coco.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# What the real COCO 2014 holds; check_coco compares against these, it does not assume them.
EXPECTED_IMAGES = MappingProxyType({"train2014": 82_783, "val2014": 40_504})
EXPECTED_SPLITS = MappingProxyType({"train": 82_783, "restval": 30_504, "val": 5_000, "test": 5_000})


@dataclass(frozen=True)
class CocoFile:
    """One archive to fetch: where from, what it must be, and what unpacking it must produce.

    `size` (bytes), `md5` and `sha256` are the published values; None means unknown and that
    check is reported as unverified. `provides` are paths relative to root that must exist once
    the archive is unpacked. `flatten`, when given, extracts only members with these base names,
    straight into root (the split archive nests its JSON files in a folder in some copies).
    """

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    provides: tuple[str, ...] = ()
    flatten: tuple[str, ...] = ()


# Provenance of the published values (none computed here: this project is built offline).
# - Sizes of train2014.zip, val2014.zip and annotations_trainval2014.zip: the Content-Length that
#   images.cocodataset.org serves, as recorded in several independent public wget/Keras download
#   logs and download scripts.
# - MD5s of the same three: listed identically by several independent public download scripts
#   (Salesforce LAVIS, PaddleNLP, pystiche, ...); annotations' MD5 also equals the S3 ETag of its
#   single-part upload. The COCO site itself publishes no checksums.
# - No SHA-256 is published for any of them: sha256 stays None (reported unverified).
# - caption_datasets.zip: neither size nor checksum is published anywhere we could find, so it
#   is accepted unverified; unpacking still checks that it yields dataset_coco.json.
COCO_FILES: Mapping[str, CocoFile] = MappingProxyType({
    entry.name: entry for entry in (
        CocoFile("annotations_trainval2014.zip", COCO_ANNOTATIONS_URL + "annotations_trainval2014.zip",
                 size=252_872_794, md5="0a379cfc70b0e71301e0f377548639bd", provides=CAPTION_FILES),
        CocoFile("caption_datasets.zip", KARPATHY_URL + "caption_datasets.zip",
                 provides=(SPLIT_FILE,),
                 flatten=(SPLIT_FILE, "dataset_flickr8k.json", "dataset_flickr30k.json")),
        CocoFile("val2014.zip", COCO_IMAGES_URL + "val2014.zip",
                 size=6_645_013_297, md5="a3d79f5ed8d289b7a7554ce06a5782b3", provides=("val2014",)),
        CocoFile("train2014.zip", COCO_IMAGES_URL + "train2014.zip",
                 size=13_510_573_713, md5="0da8c0bd3d6becc4dcb32757491aca88", provides=("train2014",)),
    )
})


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or unpacked; the message names it and says what to do."""


class _Unreachable(Exception):
    """The source's host (or folder) could not be reached at all: no byte was exchanged."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"cannot reach {host} ({reason})")
        self.host = host
        self.reason = reason


class _FetchFailed(Exception):
    """The source answered but the file could not be had this run (HTTP error, broken transfer)."""


class _RangeNotSatisfiable(Exception):
    """The server says the resume offset is at or past the end: the partial file may be whole."""


# --------------------------------------------------------------------------- small helpers

def _human_size(size: int | None) -> str:
    """Decimal units, as the COCO site and file managers show them."""
    if size is None:
        return "size not published"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _describe(error: BaseException) -> str:
    """A short human reason for a network error ('Connection refused', 'timed out')."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _default_log(progress: bool) -> Callable[[str], None]:
    """Messages go beside the progress bars (to stderr), and nowhere when progress is off."""
    if not progress:
        return lambda message: None
    return lambda message: tqdm.write(message, file=sys.stderr)


def _progress_bar(name: str, total: int | None, initial: int, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, file=sys.stderr, leave=False)


class _Hasher:
    """Running size and digests, only for the checks the table can verify (hashing 13 GB twice is slow)."""

    def __init__(self, entry: CocoFile):
        self.size = 0
        self._digests = {algorithm: hashlib.new(algorithm)
                         for algorithm in ("md5", "sha256") if getattr(entry, algorithm) is not None}

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for digest in self._digests.values():
            digest.update(chunk)

    @property
    def hashes(self) -> bool:
        """Whether any digest is wanted (else only the size matters and no byte need be read)."""
        return bool(self._digests)

    def update_from_file(self, path: Path, limit: int, bar: tqdm | None = None) -> None:
        """Feed the first `limit` bytes of `path` (the part of a resumed download already on disk)."""
        if limit <= 0:
            return
        with open(path, "rb") as handle:
            while self.size < limit:
                chunk = handle.read(min(CHUNK_BYTES, limit - self.size))
                if not chunk:
                    break
                self.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))

    def hexdigest(self, algorithm: str) -> str | None:
        digest = self._digests.get(algorithm)
        return digest.hexdigest() if digest else None


def _verify(entry: CocoFile, hasher: _Hasher) -> tuple[dict[str, str], list[str]]:
    """Each check's outcome ('ok', 'mismatch' or unverified) and the mismatches as 'md5 expected X, got Y'."""
    checks, problems = {}, []
    for key, expected, got in (("size", entry.size, hasher.size),
                               ("md5", entry.md5, hasher.hexdigest("md5")),
                               ("sha256", entry.sha256, hasher.hexdigest("sha256"))):
        if expected is None:
            checks[key] = UNVERIFIED_SIZE if key == "size" else UNVERIFIED
        elif got == expected:
            checks[key] = "ok"
        else:
            checks[key] = "mismatch"
            problems.append(f"{key} expected {expected}, got {got}")
    return checks, problems


def _hash_file(entry: CocoFile, path: Path, progress: bool) -> _Hasher:
    hasher = _Hasher(entry)
    size = path.stat().st_size
    if hasher.hashes:
        with _progress_bar(f"verifying {entry.name}", size, 0, progress) as bar:
            hasher.update_from_file(path, size, bar)
    else:
        hasher.size = size  # nothing to hash: the size is all there is to report
    return hasher


# --------------------------------------------------------------------------- sources

def _mirror_folder(mirror: str) -> Path | None:
    """The local folder a mirror names (a path or a file:// URL), or None for an HTTP(S) mirror."""
    if mirror.startswith(("http://", "https://")):
        return None
    if mirror.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path))
    return Path(mirror).expanduser()


def _source_for(entry: CocoFile, mirror: str | None) -> str | Path:
    """The URL or local path `entry` is fetched from: the table's URL, or the mirror's copy."""
    if mirror is None:
        return entry.url
    folder = _mirror_folder(mirror)
    return mirror.rstrip("/") + "/" + entry.name if folder is None else folder / entry.name


def _host_of(source: str | Path) -> str:
    if isinstance(source, Path):
        return f"mirror folder {source.parent}"
    return urllib.parse.urlparse(source).netloc or source


def _open_local(path: Path, offset: int) -> tuple[IO[bytes], int, int]:
    """A mirror folder's copy, positioned at `offset` when that is inside the file."""
    if not path.parent.is_dir():
        raise _Unreachable(_host_of(path), "no such folder")
    if not path.is_file():
        raise _FetchFailed(f"mirror folder {path.parent} has no {path.name}")
    stream = open(path, "rb")  # noqa: SIM115 - handed to the caller, which closes it
    total = os.fstat(stream.fileno()).st_size
    if offset >= total:
        stream.close()
        raise _RangeNotSatisfiable()
    stream.seek(offset)
    return stream, offset, total


def _content_range(response: http.client.HTTPResponse) -> tuple[int | None, int | None]:
    """(first byte, total size) from a 206's 'Content-Range: bytes START-END/TOTAL'."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.split("-")[0])
        return (start if unit == "bytes" else None), (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


def _urlopen(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            raise _RangeNotSatisfiable() from None
        raise _FetchFailed(f"{url} answered HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Unreachable(_host_of(url), _describe(error)) from None


def _open_http(url: str, offset: int, timeout: float) -> tuple[IO[bytes], int, int | None]:
    """The response body and the offset it starts at: `offset` when the server honours the
    Range request (206), else 0 (a 200 means the whole file comes again)."""
    response = _urlopen(url, offset, timeout)
    if offset and response.status == 206:
        start, total = _content_range(response)
        if start == offset:
            return response, start, total
        response.close()  # a range we did not ask for: safer to start over than to splice
        response = _urlopen(url, 0, timeout)
    length = response.headers.get("Content-Length")
    return response, 0, int(length) if length and length.isdigit() else None


def _open_source(source: str | Path, offset: int, timeout: float) -> tuple[IO[bytes], int, int | None]:
    """(stream, offset its first byte has in the file, file size or None)."""
    if isinstance(source, Path):
        return _open_local(source, offset)
    return _open_http(source, offset, timeout)


# --------------------------------------------------------------------------- downloading

def _copy_stream(stream: IO[bytes], partial: Path, start: int, total: int | None, hasher: _Hasher,
                 bar: tqdm) -> None:
    """Append the stream to `partial` from byte `start` on (truncating there), hashing as it goes.

    Whatever reaches the file before an interruption is a true prefix, kept for the next resume.
    """
    with open(partial, "r+b" if start else "wb") as out:
        out.truncate(start)
        out.seek(start)
        while True:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if total is not None and hasher.size < total:
        # http.client returns a short body silently when the peer closes early.
        raise ConnectionError(f"connection closed after {hasher.size} of {total} bytes")


def _fetch_to_partial(entry: CocoFile, source: str | Path, partial: Path, timeout: float, progress: bool,
                      log: Callable[[str], None], resume_attempts: int) -> _Hasher:
    """Bring `partial` to the whole file, resuming what is there; returns its size and digests."""
    resumes = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if entry.size is not None and offset > entry.size:
            partial.unlink()  # longer than the real file: not a prefix of it
            offset = 0
        if offset and offset == entry.size:
            return _hash_file(entry, partial, progress)
        try:
            stream, start, total = _open_source(source, offset, timeout)
        except _RangeNotSatisfiable:
            return _hash_file(entry, partial, progress)  # the server has nothing past our end
        if start:
            log(f"{entry.name}: resuming at {_human_size(start)}")
        hasher = _Hasher(entry)
        with _progress_bar(entry.name, total or entry.size, start, progress) as bar:
            try:
                with stream:
                    hasher.update_from_file(partial, start)
                    _copy_stream(stream, partial, start, total, hasher, bar)
                return hasher
            except (OSError, http.client.HTTPException) as error:
                have = partial.stat().st_size if partial.exists() else 0
                if have > offset and resumes < resume_attempts:
                    resumes += 1
                    log(f"{entry.name}: transfer broke ({_describe(error)}) at {_human_size(have)}; resuming")
                    continue
                raise _FetchFailed(
                    f"{entry.name}: transfer broke after {_human_size(have)} of {_human_size(total or entry.size)} "
                    f"({_describe(error)}); the part is kept in {partial} and the next run resumes it") from None


def _check_disk_space(entry: CocoFile, partial: Path) -> None:
    """Refuse before a 13 GB download that cannot fit, not after filling the disk."""
    if entry.size is None:
        return
    needed = entry.size - (partial.stat().st_size if partial.exists() else 0)
    free = shutil.disk_usage(partial.parent).free
    if needed > free:
        raise DownloadError(f"{entry.name} needs {_human_size(needed)} more in {partial.parent}, "
                            f"only {_human_size(free)} is free")


def _download(entry: CocoFile, source: str | Path, downloads: Path, timeout: float, progress: bool,
              log: Callable[[str], None], resume_attempts: int) -> dict[str, str]:
    """Fetch, verify and rename into place; a file failing verification is fetched once more."""
    final = downloads / entry.name
    partial = downloads / (entry.name + PARTIAL_SUFFIX)
    for attempt in (1, 2):
        _check_disk_space(entry, partial)
        hasher = _fetch_to_partial(entry, source, partial, timeout, progress, log, resume_attempts)
        checks, problems = _verify(entry, hasher)
        if not problems:
            os.replace(partial, final)
            return checks
        partial.unlink()
        if attempt == 1:
            log(f"{entry.name} failed verification ({'; '.join(problems)}); deleted, fetching it again")
    raise DownloadError(f"{entry.name} from {source} failed verification twice: {'; '.join(problems)}. "
                        f"The download was deleted; the source or the table's published values are wrong")


# --------------------------------------------------------------------------- unpacking

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


def _unpack(entry: CocoFile, archive_path: Path, root: Path, log: Callable[[str], None], progress: bool) -> None:
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


def _is_unpacked(root: Path, entry: CocoFile) -> bool:
    """Marker written and what it promised still there (a deleted train2014/ is unpacked again)."""
    return _marker(root, entry).is_file() and all((root / path).exists() for path in entry.provides)


# --------------------------------------------------------------------------- the command

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
    wanted = "".join(f"\n  {entry.name} ({_human_size(entry.size)}) from {entry.url}"
                     + (f" (mirror: {_source_for(entry, mirror)})" if mirror else "") for entry in pending)
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
    source = _source_for(entry, mirror)
    line = {"path": str(final), "source": str(source)}
    if _is_unpacked(root, entry):
        log(f"{entry.name}: already unpacked, skipped")
        return {**line, "status": "already unpacked", "verification": {}, "unpacked": True}
    status, checks = "already present", {}
    if final.is_file():
        checks, problems = _verify(entry, _hash_file(entry, final, progress))
        if problems:
            log(f"{final} failed verification ({'; '.join(problems)}); deleted, fetching it again")
            final.unlink()
    if not final.is_file():
        host = _host_of(source)
        if host in unreachable:
            raise _Unreachable(host, unreachable[host])
        checks = _download(entry, source, downloads, timeout, progress, log, resume_attempts)
        status = "downloaded"
    log(f"{entry.name}: {status}; " + ", ".join(f"{key} {value}" for key, value in checks.items()))
    _unpack(entry, final, root, log, progress)
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
    folder = None if mirror is None else _mirror_folder(mirror)
    if folder is not None and not folder.is_dir():
        raise DownloadError(f"mirror folder {folder} does not exist")
    report, failures, unreachable, pending = {}, [], {}, []
    for entry in _select(table, files):
        try:
            report[entry.name] = _prepare_one(entry, root, mirror, timeout, progress, log, resume_attempts,
                                              unreachable)
        except _Unreachable as error:
            unreachable[error.host] = error.reason
            pending.append(entry)
        except _FetchFailed as error:
            failures.append(str(error))
    if unreachable or failures:
        messages = failures[:]
        if unreachable:
            messages.insert(0, _manual_instructions(root, pending, unreachable, list(report), mirror))
        raise DownloadError("\n".join(messages))
    return {"root": str(root), "files": report, "check": check_coco(root)}


# --------------------------------------------------------------------------- checking

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
