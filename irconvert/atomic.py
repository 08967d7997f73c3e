"""Atomic writes: a file or folder appears complete or not at all.

Everything irconvert writes (checkpoints, recipes, logs, exports, caches) goes
to a temporary sibling first and is renamed into place, so an interrupted or
failed write never leaves a half-written output. ``mkstemp``/``mkdtemp``
create private (0600/0700) entries; the result gets the permissions a plain
``open()`` would have given under the user's umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from irconvert.errors import WriteError

__all__ = ["atomic_dir", "atomic_file", "write_bytes", "write_text"]


_MIN_FREE = 1 << 20  # less than this free after a failed write: the disk was full


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, path: Path, mode: int) -> None:
    os.chmod(tmp, mode & ~_umask())
    os.replace(tmp, path)


def _tag() -> str:
    """``PID@HOST`` in temporary names, so leftovers of dead writers can be told apart."""
    host = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname().split(".")[0])[:32]
    return f"{os.getpid()}@{host}"


def _remove_leftovers(target: Path) -> None:
    """Delete the temporary siblings of ``target`` whose writer is gone (kill -9, power loss).

    Only entries of this host whose process no longer exists are removed: a
    concurrent writer's temporary file is left alone.
    """
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there, not probe it
        return
    host = _tag().split("@", 1)[1]
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)@([A-Za-z0-9-]*)\..*\.tmp$")
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        found = pattern.match(entry.name)
        if not found or found.group(2) != host or int(found.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(found.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except OSError:
            continue  # someone else's live process
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _missing_parents(target: Path) -> list[Path]:
    """The folders ``target`` needs that do not exist yet, deepest first."""
    missing, folder = [], target.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_folders(created: list[Path]) -> None:
    for folder in created:  # deepest first; stop at one that is not empty
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


def _os_reason(exc: BaseException) -> str | None:
    """What an exception from writing says about the file system, if anything.

    OSError carries an errno; safetensors and others write "(os error 28)"
    into a message of their own type.
    """
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code == errno.EEXIST or code == errno.ENOTDIR:
        return "a file stands where its folder should be"
    return os.strerror(code).lower() if code else None


def _disk_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail * stats.f_frsize < _MIN_FREE


def _write_error(target: Path, exc: BaseException, tmp: Path | None) -> WriteError | None:
    """A WriteError naming ``target`` when ``exc`` is the file system's doing, else None.

    Engines report a full disk in their own words (torch: "unexpected pos",
    OpenVINO: "iostream error"), so a failure with the disk full is read as
    that whatever its type; this runs before the temporary file is removed.
    """
    if isinstance(exc, WriteError) or not isinstance(exc, Exception):
        return None
    reason = _os_reason(exc)
    if reason is None or not isinstance(exc, OSError):
        probe = tmp.parent if tmp is not None else next(
            (p for p in target.parents if p.exists()), None)
        if probe is not None and _disk_full(probe):
            reason = os.strerror(errno.ENOSPC).lower()
    if reason is None:
        return None
    return WriteError(f"{target}: cannot write it ({reason})")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On failure nothing is left: not the temporary file, not the folders
    made for ``path``. A file-system failure (no space, no permission, a
    read-only disk) becomes a :class:`~irconvert.errors.WriteError` that
    names ``path``, not the temporary file. Temporary files that a killed
    writer left beside ``path`` are removed first.
    """
    target = Path(path)
    created = _missing_parents(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.{_tag()}.", suffix=".tmp",
                                    dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        _publish(tmp, target, 0o666)
    except BaseException as exc:
        error = _write_error(target, exc, tmp)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _remove_folders(created)
        if error is not None:
            raise error from exc
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` on success.

    An existing ``path`` is removed only once the new content is complete.
    Failures clean up and are reported as :func:`atomic_file` does.
    """
    target = Path(path)
    created = _missing_parents(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_tag()}.", suffix=".tmp",
                                    dir=target.parent))
        yield tmp
        for child in tmp.rglob("*"):
            os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~_umask())
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        _publish(tmp, target, 0o777)
    except BaseException as exc:
        error = _write_error(target, exc, tmp)
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_folders(created)
        if error is not None:
            raise error from exc
        raise
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
