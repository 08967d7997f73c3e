"""Keep freed memory in the process while training on the CPU (glibc malloc).

A training step frees and re-allocates the same activation buffers every
step. glibc's malloc hands blocks above its mmap threshold back to the
kernel, and trims the top of the heap once more than its trim threshold is
free; the next step's allocation then page-faults, and the kernel zeroes
every page again. Its dynamic thresholds do not settle for a training step
with a distillation teacher and the data path, and the 1W/1A form, which
saves more tensors for its backward (the inputs of every sign, for EDE),
faults more than the float one. What that costs and what keeping the memory
gains is measured in docs/benchmarks.md ("Page faults").

:func:`retain_freed_memory` fixes both thresholds at 1 GiB: freed blocks
stay in the process and are reused, and the resident size stays at the
run's peak. :func:`release_freed_memory` hands the free memory back when a
run ends. Both are no-ops off glibc (macOS, Windows, musl), whose
allocators behave differently.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

__all__ = ["release_freed_memory", "retain_freed_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
RETAIN_BYTES = 1 << 30
# Some glibc versions refuse mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB
# on 64-bit); then the largest they take.
FALLBACK_MMAP_BYTES = 32 << 20


@functools.cache
def _glibc() -> Any | None:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim`` exist), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def retain_freed_memory() -> bool:
    """Keep freed blocks in this process (process-wide, once); True if applied.

    The mmap threshold is set first and the trim threshold only if that
    succeeded: setting either turns off glibc's dynamic adjustment of both,
    and a fixed trim threshold beside the default 128 KiB mmap threshold
    page-faults more than glibc's default does.
    """
    libc = _glibc()
    if libc is None:
        return False
    if not any(libc.mallopt(M_MMAP_THRESHOLD, size) for size in (RETAIN_BYTES,
                                                                   FALLBACK_MMAP_BYTES)):
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES))


def release_freed_memory() -> None:
    """Return the free memory at the top of the heap and in free pages to the kernel."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
