"""Keep freed host memory in the process on CPU training runs (glibc only; a no-op elsewhere).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
returns it to the OS on free. A CPU training step allocates and frees tensors far above that
(the 50,304-wide logits of a 16x128 batch are 412 MB, and their gradient again), so each step
the kernel zeroes those pages and faults them in again: about a third of the step's CPU time
at 4L/128d. With mmap off for the heap (M_MMAP_MAX = 0) and trimming off (M_TRIM_THRESHOLD),
freed blocks stay in the heap and the next step reuses them; the process keeps its peak size,
which a training run reaches every step anyway. `docs/benchmarks.md` has the measurement.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int: the largest one means "never trim"

_applied: bool | None = None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl, bionic do not)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; True when it took effect (glibc),
    False elsewhere. Idempotent: the second call changes nothing."""
    global _applied
    if _applied is None:
        libc = _glibc()
        _applied = bool(libc is not None
                        and libc.mallopt(M_MMAP_MAX, 0) == 1
                        and libc.mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER) == 1)
    return _applied
