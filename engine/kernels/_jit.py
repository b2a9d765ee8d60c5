"""The one place that sets Numba options for every kernel.

fastmath keeps NaN/Inf semantics ("nnan"/"ninf" are left out) so a NaN reading is detected by
the kernels instead of being optimised away. Set RNNSTREAM_NO_CACHE=1 to skip the on-disk cache.

Kernels work on preallocated arrays and allocate nothing, so they compile without Numba's
reference counting (`_nrt=False`, a Numba option that is not public API): otherwise every array
view taken or passed in a loop costs an atomic increment and decrement per row, more than the
row's arithmetic (alert state: 30 -> 5 us for 1024 rows). A kernel that tried to allocate would
fail to compile, which keeps the rule honest.
"""

from __future__ import annotations

import os

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("RNNSTREAM_NO_CACHE", "") not in ("1", "true", "yes")


def kernel(fn=None, **overrides):
    """Compile `fn` with the project's jit options (cache, nogil, NaN-safe fastmath, no NRT)."""
    options = {
        "cache": CACHE,
        "nogil": True,
        "fastmath": FASTMATH,
        "error_model": "numpy",
        "_nrt": False,
    }
    options.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


def inline_kernel(fn):
    """Compile a small scalar helper that is always inlined into its callers."""
    return kernel(fn, inline="always")
