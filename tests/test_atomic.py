"""Atomic writes leave either the complete output or nothing, with normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from irconvert.atomic import atomic_dir, atomic_file, write_text


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
