"""Fetching an archive: from an HTTP(S) host or a mirror folder, resumed with Range requests
after a broken transfer, checked against the published size and checksums, and renamed into
place only once verified."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm import tqdm

from captioner.coco_download.archives import CHUNK_BYTES, CocoFile, DownloadError, human_size

# One timeout for connecting and for each read: short, so an offline machine fails in seconds;
# a stalled transfer that already moved bytes is resumed rather than waited for.
DEFAULT_TIMEOUT_S = 15.0
# Resumes within one run after a transfer breaks mid-way (never after a failed connect).
RESUME_ATTEMPTS = 3
USER_AGENT = "captioner-coco-download/1"

PARTIAL_SUFFIX = ".partial"
UNVERIFIED = "unverified (no published checksum)"
UNVERIFIED_SIZE = "unverified (no published size)"


class Unreachable(Exception):
    """The source's host (or folder) could not be reached at all: no byte was exchanged."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"cannot reach {host} ({reason})")
        self.host = host
        self.reason = reason


class FetchFailed(Exception):
    """The source answered but the file could not be had this run (HTTP error, broken transfer)."""


class _RangeNotSatisfiable(Exception):
    """The server says the resume offset is at or past the end: the partial file may be whole."""


def _describe(error: BaseException) -> str:
    """A short human reason for a network error ('Connection refused', 'timed out')."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _progress_bar(name: str, total: int | None, initial: int, progress: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, file=sys.stderr, leave=False)


class Hasher:
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


def verify(entry: CocoFile, hasher: Hasher) -> tuple[dict[str, str], list[str]]:
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


def hash_file(entry: CocoFile, path: Path, progress: bool) -> Hasher:
    hasher = Hasher(entry)
    size = path.stat().st_size
    if hasher.hashes:
        with _progress_bar(f"verifying {entry.name}", size, 0, progress) as bar:
            hasher.update_from_file(path, size, bar)
    else:
        hasher.size = size  # nothing to hash: the size is all there is to report
    return hasher


def mirror_folder(mirror: str) -> Path | None:
    """The local folder a mirror names (a path or a file:// URL), or None for an HTTP(S) mirror."""
    if mirror.startswith(("http://", "https://")):
        return None
    if mirror.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path))
    return Path(mirror).expanduser()


def source_for(entry: CocoFile, mirror: str | None) -> str | Path:
    """The URL or local path `entry` is fetched from: the table's URL, or the mirror's copy."""
    if mirror is None:
        return entry.url
    folder = mirror_folder(mirror)
    return mirror.rstrip("/") + "/" + entry.name if folder is None else folder / entry.name


def host_of(source: str | Path) -> str:
    if isinstance(source, Path):
        return f"mirror folder {source.parent}"
    return urllib.parse.urlparse(source).netloc or source


def _open_local(path: Path, offset: int) -> tuple[IO[bytes], int, int]:
    """A mirror folder's copy, positioned at `offset` when that is inside the file."""
    if not path.parent.is_dir():
        raise Unreachable(host_of(path), "no such folder")
    if not path.is_file():
        raise FetchFailed(f"mirror folder {path.parent} has no {path.name}")
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
        raise FetchFailed(f"{url} answered HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise Unreachable(host_of(url), _describe(error)) from None


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


def _copy_stream(stream: IO[bytes], partial: Path, start: int, total: int | None, hasher: Hasher,
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
                      log: Callable[[str], None], resume_attempts: int) -> Hasher:
    """Bring `partial` to the whole file, resuming what is there; returns its size and digests."""
    resumes = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if entry.size is not None and offset > entry.size:
            partial.unlink()  # longer than the real file: not a prefix of it
            offset = 0
        if offset and offset == entry.size:
            return hash_file(entry, partial, progress)
        try:
            stream, start, total = _open_source(source, offset, timeout)
        except _RangeNotSatisfiable:
            return hash_file(entry, partial, progress)  # the server has nothing past our end
        if start:
            log(f"{entry.name}: resuming at {human_size(start)}")
        hasher = Hasher(entry)
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
                    log(f"{entry.name}: transfer broke ({_describe(error)}) at {human_size(have)}; resuming")
                    continue
                raise FetchFailed(
                    f"{entry.name}: transfer broke after {human_size(have)} of {human_size(total or entry.size)} "
                    f"({_describe(error)}); the part is kept in {partial} and the next run resumes it") from None


def _check_disk_space(entry: CocoFile, partial: Path) -> None:
    """Refuse before a 13 GB download that cannot fit, not after filling the disk."""
    if entry.size is None:
        return
    needed = entry.size - (partial.stat().st_size if partial.exists() else 0)
    free = shutil.disk_usage(partial.parent).free
    if needed > free:
        raise DownloadError(f"{entry.name} needs {human_size(needed)} more in {partial.parent}, "
                            f"only {human_size(free)} is free")


def download(entry: CocoFile, source: str | Path, downloads: Path, timeout: float, progress: bool,
              log: Callable[[str], None], resume_attempts: int) -> dict[str, str]:
    """Fetch, verify and rename into place; a file failing verification is fetched once more."""
    final = downloads / entry.name
    partial = downloads / (entry.name + PARTIAL_SUFFIX)
    for attempt in (1, 2):
        _check_disk_space(entry, partial)
        hasher = _fetch_to_partial(entry, source, partial, timeout, progress, log, resume_attempts)
        checks, problems = verify(entry, hasher)
        if not problems:
            os.replace(partial, final)
            return checks
        partial.unlink()
        if attempt == 1:
            log(f"{entry.name} failed verification ({'; '.join(problems)}); deleted, fetching it again")
    raise DownloadError(f"{entry.name} from {source} failed verification twice: {'; '.join(problems)}. "
                        f"The download was deleted; the source or the table's published values are wrong")
