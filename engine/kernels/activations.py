"""Vectorisable tanh and sigmoid for jitted loops.

PyPI's llvmlite has no SVML, so np.tanh/np.exp inside a loop call scalar libm and stop LLVM from
vectorising. These use only multiply, add, divide and compare, so they vectorise.

tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= CLAMP (coefficients fitted by scripts/fit_tanh.py), clamped
beyond. Max absolute error against float64 tanh, evaluated in float32 over the whole float range:
< 4e-7 (tested bound 1e-6); sigmoid(x) = (1 + tanh(x / 2)) / 2 has half that error. NaN stays NaN
(the clamp compares, which NaN fails) and +-inf saturate to +-tanh(CLAMP).
"""

from __future__ import annotations

import numpy as np

from engine.kernels._jit import inline_kernel, kernel

CLAMP = np.float32(7.90531110763549805)
_P0 = np.float32(0.9999999997857375)
_P1 = np.float32(0.13003808081543922)
_P2 = np.float32(0.0030125081914671907)
_P3 = np.float32(1.0128354000102495e-05)
_P4 = np.float32(-1.5488265300047503e-08)
_P5 = np.float32(2.5646380252546136e-11)
_Q1 = np.float32(0.4633714059084668)
_Q2 = np.float32(0.02413636918275666)
_Q3 = np.float32(0.00024092583342246766)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


@inline_kernel
def fast_tanh(x):
    """Return tanh(x) for a float32 scalar, abs error < 1e-6, NaN-preserving."""
    if x > CLAMP:
        x = CLAMP
    elif x < -CLAMP:
        x = -CLAMP
    s = x * x
    p = ((((_P5 * s + _P4) * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = ((_Q3 * s + _Q2) * s + _Q1) * s + np.float32(1.0)
    return x * p / q


@inline_kernel
def fast_sigmoid(x):
    """Return 1 / (1 + exp(-x)) for a float32 scalar, abs error < 5e-7, NaN-preserving."""
    return fast_sigmoid_2x(_HALF * x)


@inline_kernel
def fast_sigmoid_2x(x):
    """Return sigmoid(2 x) = (1 + tanh(x)) / 2: sigmoid of an input already halved.

    The packed weights hold sigmoid gate columns halved (exact in floating point), so the cell
    kernels skip a multiply per gate: about 5% of an LSTM step's pointwise work.
    """
    return _HALF + _HALF * fast_tanh(x)


@inline_kernel
def relu(x):
    """Return max(x, 0), keeping NaN as NaN (max() would turn it into 0)."""
    return _ZERO if x < _ZERO else x


@kernel
def tanh_array(x, out):
    """Apply fast_tanh elementwise: x, out float32 (n,)."""
    for i in range(x.shape[0]):
        out[i] = fast_tanh(x[i])


@kernel
def sigmoid_array(x, out):
    """Apply fast_sigmoid elementwise: x, out float32 (n,)."""
    for i in range(x.shape[0]):
        out[i] = fast_sigmoid(x[i])
