"""Atomic writes leave either the complete output or nothing, with normal permissions."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from irconvert.atomic import atomic_dir, atomic_file, write_text
from irconvert.errors import WriteError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_appears_complete_with_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a" / "x.txt", "hello")
        (tmp_path / "d").mkdir()
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "model.xml").write_text("<xml/>")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert _mode(tmp_path / "a" / "x.txt") == 0o644
    assert _mode(tmp_path / "out") == 0o755 and _mode(tmp_path / "out" / "model.xml") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d", "out"]


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "ov") as tmp:
        (tmp / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old"
    write_text(target, "new")
    assert target.read_text() == "new"


def test_a_failure_removes_the_folders_it_made(tmp_path: Path) -> None:
    # Regression: a failed export left the parent folders it had created.
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "a" / "b" / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("engine failed")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "c" / "ov") as tmp:
        raise RuntimeError("engine failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("error", "reason"), [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    # safetensors' own exception type, with the errno only in its text
    (RuntimeError("Error while serializing: I/O error: No space left on device "
                  "(os error 28)"), "no space left on device"),
])
def test_file_system_failures_name_the_output(tmp_path: Path, error: Exception,
                                              reason: str) -> None:
    target = tmp_path / "out" / "m.irc"
    with pytest.raises(WriteError) as err, atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert str(err.value) == f"{target}: cannot write it ({reason})"
    assert isinstance(err.value, OSError)  # callers catching OSError still do
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_recognised_whatever_the_engine_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.save says "unexpected pos 64 vs 0", OpenVINO "iostream error"
    import irconvert.atomic as atomic

    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)
    with pytest.raises(WriteError, match=r"ov: cannot write it \(no space left on device\)"), \
            atomic_dir(tmp_path / "ov"):
        raise RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(atomic, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError, match="iostream"), atomic_dir(tmp_path / "ov"):
        raise RuntimeError("basic_ios::clear: iostream error")  # not the disk: a bug


def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match="a file stands where its folder should be"):
        write_text(tmp_path / "afile" / "x.txt", "hello")


def test_leftovers_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from irconvert.atomic import _tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = _tag().split("@")[1]
    stale = tmp_path / f".last.pt.{dead}@{host}.abc123.tmp"
    stale.write_bytes(b"half")
    stale_dir = tmp_path / f".ov.{dead}@{host}.def456.tmp"
    stale_dir.mkdir()
    live = tmp_path / f".last.pt.{os.getppid()}@{host}.xyz789.tmp"  # a writer still running
    live.write_bytes(b"in progress")
    other = tmp_path / ".notes.txt.1@otherhost.aaa.tmp"
    other.write_bytes(b"not ours")
    write_text(tmp_path / "last.pt", "new")
    with atomic_dir(tmp_path / "ov") as tmp:
        (tmp / "model.xml").write_text("<xml/>")
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
