"""Files that appear whole or not at all: written under a temporary name beside their final
path, then renamed into place, so a crash or Ctrl-C never leaves half a file and never
damages the file that was there before."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO


class AtomicFile:
    """An open temporary file that becomes `path` on `commit()` and vanishes on `discard()`.

    As a context manager it commits when the block succeeds and discards when it raises.
    """

    def __init__(self, path: str | Path, mode: str = "w", newline: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._temp = _create_beside(self.path)
        self.handle: IO = os.fdopen(fd, mode, newline=newline) if "b" not in mode else os.fdopen(fd, mode)

    def commit(self) -> Path:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self._temp, self.path)
        return self.path

    def discard(self) -> None:
        self.handle.close()
        Path(self._temp).unlink(missing_ok=True)

    def __enter__(self) -> IO:
        return self.handle

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def _create_beside(path: Path) -> tuple[int, str]:
    """A new empty file `.{name}.{random}.partial` in `path`'s folder: its descriptor and path.

    It is created with mode 0o666 so that the kernel applies the umask (and any default ACL of
    the folder) exactly as for a file opened the ordinary way, and the renamed result gets the
    permissions `open(path, "w")` would have given it. tempfile.mkstemp's private 0o600 would
    survive the rename, and reading the umask with os.umask changes it for a moment in every
    thread of the process. O_EXCL with 64 random bits in the name keeps concurrent writers
    apart.
    """
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.partial"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows only
    return os.open(temp, flags, 0o666), str(temp)
