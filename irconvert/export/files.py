"""Writing export outputs safely: refuse to clobber, write aside, rename into place."""

from __future__ import annotations

import os
from pathlib import Path

from irconvert.atomic import atomic_dir, atomic_file
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
