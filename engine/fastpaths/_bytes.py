"""Byte-range comparison shared by the jitted wire format and the stream-id index."""

from __future__ import annotations

from engine.kernels._jit import inline_kernel


@inline_kernel
def matches(buf, p, stop, pattern, first, n):
    """Whether buf[p:p + n] (within `stop`) equals pattern[first:first + n]."""
    if p + n > stop:
        return False
    for k in range(n):
        if buf[p + k] != pattern[first + k]:
            return False
    return True
