"""The one place that sets Numba options for every kernel.

fastmath keeps NaN/Inf semantics ("nnan"/"ninf" are left out) so a NaN reading is detected by
the kernels instead of being optimised away. Set RNNSTREAM_NO_CACHE=1 to skip the on-disk cache.
"""

from __future__ import annotations

import os

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("RNNSTREAM_NO_CACHE", "") not in ("1", "true", "yes")


def kernel(fn=None, **overrides):
    """Compile `fn` with the project's jit options (cache, nogil, NaN-safe fastmath)."""
    options = {"cache": CACHE, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}
    options.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


def inline_kernel(fn):
    """Compile a small scalar helper that is always inlined into its callers."""
    return kernel(fn, inline="always")
