"""Give memory the process freed back to the system, where the C library can.

glibc keeps freed heap memory for reuse. After the state table shrinks from a burst of streams,
most of the burst's slabs were plain heap (glibc raises its mmap threshold to the size of the
first big arrays freed), so without a trim the daemon's resident memory stays near its peak
(bench/README.md, "Soak").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)  # glibc only


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc's `malloc_trim(0)`); return whether
    this C library can (False elsewhere, where it is a no-op)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
