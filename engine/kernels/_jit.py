"""The one place that sets Numba options for every kernel.

fastmath keeps NaN/Inf semantics ("nnan"/"ninf" are left out) so a NaN reading is detected by
the kernels instead of being optimised away. Set RNNSTREAM_NO_CACHE=1 to skip the on-disk cache.

Kernels work on preallocated arrays and allocate nothing, so they compile without Numba's
reference counting (`_nrt=False`, a Numba option that is not public API): otherwise every array
view taken or passed in a loop costs an atomic increment and decrement per row, more than the
row's arithmetic (alert state: 30 -> 5 us for 1024 rows). A kernel that tried to allocate would
fail to compile, which keeps the rule honest.

`kernel(noalias=True)` promises LLVM that no two array arguments share memory (Numba's
`Flags.noalias`, a compiler flag that is not public API and that no jit option sets, so a
pipeline class does; tests/test_jit.py checks that it reaches the compiled code). Without it
LLVM vectorises a loop over several arrays only behind a check that they do not overlap, made
at every entry to the loop: for `anomaly.normalise_batch`'s loop over a row's features that
check cost more than the vector arithmetic saved (1024 rows of 8 features: 44 us either way;
with the promise, 23 us). A caller that passed overlapping arrays to such a kernel would get
wrong results.
"""

from __future__ import annotations

import os

import numba
from numba.core.compiler import Compiler

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
CACHE = os.environ.get("RNNSTREAM_NO_CACHE", "") not in ("1", "true", "yes")


class _NoAliasCompiler(Compiler):
    """Numba's compiler, telling LLVM that the function's array arguments never overlap."""

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags = flags.copy()
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


def kernel(fn=None, *, noalias=False, **overrides):
    """Compile `fn` with the project's jit options (cache, nogil, NaN-safe fastmath, no NRT).

    With noalias, its array arguments must never share memory (see the module docstring).
    """
    options = {
        "cache": CACHE,
        "nogil": True,
        "fastmath": FASTMATH,
        "error_model": "numpy",
        "_nrt": False,
    }
    if noalias:
        options["pipeline_class"] = _NoAliasCompiler
    options.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


def inline_kernel(fn):
    """Compile a small scalar helper that is always inlined into its callers."""
    return kernel(fn, inline="always")
