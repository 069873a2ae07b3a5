"""Files that appear whole or not at all: written under a temporary name beside their final
path, then renamed into place, so a crash or Ctrl-C never leaves half a file and never
damages the file that was there before."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


class AtomicFile:
    """An open temporary file that becomes `path` on `commit()` and vanishes on `discard()`.

    As a context manager it commits when the block succeeds and discards when it raises.
    """

    def __init__(self, path: str | Path, mode: str = "w", newline: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._temp, 0o666 & ~umask)  # mkstemp's private 0600 would otherwise survive the rename
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
