"""Writing export outputs safely: refuse to clobber, write aside, rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from irconvert.errors import ExportError

__all__ = ["atomic_dir", "atomic_file", "check_output"]


def check_output(path: str | os.PathLike[str], force: bool, *, directory: bool = False) -> Path:
    """``path`` as a Path, checked before any work is done.

    Raises:
        ExportError: it exists and ``force`` is off, or it is a directory
            where a file is wanted (or the reverse).
    """
    out = Path(path)
    if not out.exists():
        return out
    if not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir() != directory:
        want, got = ("a directory", "a file") if directory else ("a file", "a directory")
        raise ExportError(f"{out} is {got} but the output must be {want}; choose another path")
    return out


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; move it to ``path`` on success.

    An existing ``path`` (allowed by :func:`check_output` with force) is removed
    only after the new content is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
