"""engine.kernels._jit: the options every kernel is compiled with."""

from __future__ import annotations

import re

import numpy as np

from engine.kernels._jit import kernel


def _copy(src, dst):  # pragma: no cover - jitted
    for k in range(src.shape[0]):
        dst[k] = src[k]


def test_kernel_with_noalias_tells_llvm_that_its_arrays_do_not_overlap() -> None:
    # The promise is an attribute of the compiled function's data pointers; normalise_batch's
    # vector loop depends on it, and Numba sets it from a flag that no jit option exposes.
    attributes = {}
    for noalias in (False, True):
        copy = kernel(_copy, noalias=noalias, cache=False)  # inspect_llvm needs fresh code
        src, dst = np.arange(4.0), np.zeros(4)
        copy(src, dst)
        assert dst.tolist() == src.tolist()
        ir = copy.inspect_llvm(copy.signatures[0])
        attributes[noalias] = re.findall(r"ptr ([a-z() ]*)%arg\.(?:src|dst)\.4\b", ir)
    assert attributes[False] and not any("noalias" in a for a in attributes[False])
    assert attributes[True] and any("noalias" in a for a in attributes[True])
