import os
import stat

import pytest

from captioner.atomic import AtomicFile

posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits and the umask are POSIX")


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 (no group write, nothing for others) for one test."""
    set_umask = os.umask  # the real one, even if a test has replaced os.umask meanwhile
    before = set_umask(0o027)
    yield 0o027
    set_umask(before)


@pytest.fixture
def umask_untouchable(monkeypatch):
    """os.umask raises: setting it, even for a moment, races every other thread's file creation."""

    def refuse(mask):
        raise AssertionError(f"os.umask({mask:#o}) called; it changes the umask for every thread")

    monkeypatch.setattr(os, "umask", refuse)


@posix_only
@pytest.mark.parametrize("mode", ["w", "wb"])
def test_committed_file_gets_the_umask_mode_without_touching_the_umask(tmp_path, umask_027, umask_untouchable, mode):
    path = tmp_path / "out" / "report.json"
    with AtomicFile(path, mode) as handle:
        handle.write(b"{}" if "b" in mode else "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask_027 == 0o640
    plain = tmp_path / "plain.json"
    plain.write_text("{}")  # what an ordinary open() gives, umask and folder ACLs included
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


@posix_only
def test_discarding_never_touches_the_umask(tmp_path, umask_untouchable):
    path = tmp_path / "report.json"
    with pytest.raises(RuntimeError), AtomicFile(path):
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("old\n")
    atomic = AtomicFile(path, newline="")
    atomic.handle.write("new\r\n")
    assert path.read_text() == "old\n"  # nothing visible before the commit
    assert atomic.commit() == path
    assert path.read_bytes() == b"new\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["captions.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), AtomicFile(path) as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["captions.txt"]


def test_concurrent_writers_use_separate_temporaries(tmp_path):
    path = tmp_path / "captions.txt"
    first, second = AtomicFile(path), AtomicFile(path)
    first.handle.write("first")
    second.handle.write("second")
    first.commit()
    second.commit()
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["captions.txt"]
