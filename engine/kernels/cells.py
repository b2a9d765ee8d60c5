"""Recurrent cell kernels: one stream at a time, and the pointwise half of the batched path.

Weights come packed by `engine.packed.PackedModel` into one flat float32 buffer `params`, described
by the int64 array `layout` (the L_* indices below), so a single-stream step is one jitted call.
Per layer k the packed matrix is `wt (I_k + H + 1, C)` with rows [input, hidden, 1] and gate columns
in PyTorch order, so `gates = [x, h, 1] @ wt`:
  rnn  C = H    h' = act(W_ih x + b_ih + W_hh h + b_hh)
  lstm C = 4H   i, f, g, o;  c' = f c + i g;  h' = o tanh(c')
  gru  C = 4H   r, z, n_x, n_h;  n = tanh(n_x + r n_h);  h' = (1 - z) n + z h
Sigmoid gate columns (lstm i, f, o; gru r, z) are packed halved, weights and bias alike: halving is
exact in floating point, so their pre-activations come out exactly halved and the kernels take
sigmoid(a) as (1 + tanh(a / 2)) / 2 without the multiply.
The head is packed transposed, as `head_t (O, H + 1)`, with the output un-scaling folded in:
  y = head_t @ [h, 1]  ==  (W h + b) * out_std + out_mean.
With only a few outputs a dot product per output beats an axpy per hidden unit (8 columns fill
half a vector register); the batched path multiplies by the `(H + 1, O)` transposed view.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels._jit import inline_kernel, kernel
from engine.kernels.activations import fast_sigmoid_2x, fast_tanh, relu

CELL_RNN_TANH = 0
CELL_RNN_RELU = 1
CELL_GRU = 2
CELL_LSTM = 3

# layout indices
L_CELL = 0
L_LAYERS = 1
L_INPUTS = 2
L_HIDDEN = 3
L_OUTPUTS = 4
L_HAS_HEAD = 5
L_HAS_INPUT_SCALING = 6
L_HAS_OUTPUT_SCALING = 7  # only used without a head; with one it is folded into the head
L_IN_MEAN = 8  # offsets into params
L_IN_INV_STD = 9
L_OUT_MEAN = 10
L_OUT_STD = 11
L_HEAD = 12
L_WT = 13  # per-layer weight offsets start here
LAYOUT_FIXED = L_WT


# Rows ahead whose state the batched kernels ask the CPU to fetch: the slabs of 10k streams do not
# fit in L2, and a row's loads otherwise wait on the cache miss (gather + gates: ~230 -> ~150 us
# for 1024 rows, LSTM H=64).
PREFETCH_AHEAD = 8
_FLOATS_PER_LINE = 16


def _prefetch_python(slab, i, j, k):
    """No-op stand-in for `_prefetch` when Numba's JIT is disabled (coverage runs)."""


@intrinsic
def _prefetch_intrinsic(typingctx, slab, i, j, k):
    """Hint the CPU to load the cache line holding slab[i, j, k] (3-D array) for reading."""
    sig = numba.types.void(slab, i, j, k)

    def codegen(context, builder, signature, args):
        slab_type = signature.args[0]
        array = context.make_array(slab_type)(context, builder, args[0])
        index = [
            context.cast(builder, value, kind, numba.types.intp)
            for value, kind in zip(args[1:], signature.args[1:], strict=True)
        ]
        pointer = cgutils.get_item_pointer(
            context, builder, slab_type, array, index, wraparound=False, boundscheck=False
        )
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_pointer.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality, data cache
        builder.call(fn, [byte_pointer, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


def _prefetch_bytes_python(slab, slot, offset):
    """No-op stand-in for `_prefetch_bytes` when Numba's JIT is disabled (coverage runs)."""


@intrinsic
def _prefetch_bytes_intrinsic(typingctx, slab, slot, offset):
    """Hint the CPU to load the cache line `offset` bytes into row `slot` of a slab (any ndim)."""
    sig = numba.types.void(slab, slot, offset)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(numba.types.intp)
        slot_value = context.cast(builder, args[1], signature.args[1], numba.types.intp)
        offset_value = context.cast(builder, args[2], signature.args[2], numba.types.intp)
        stride = cgutils.unpack_tuple(builder, array.strides)[0]
        start = builder.ptrtoint(array.data, intp)
        address = builder.add(start, builder.add(builder.mul(slot_value, stride), offset_value))
        i8_pointer = ir.IntType(8).as_pointer()
        byte_pointer = builder.inttoptr(address, i8_pointer)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8_pointer, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [byte_pointer, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_prefetch = _prefetch_python if numba.config.DISABLE_JIT else _prefetch_intrinsic
_prefetch_bytes = _prefetch_bytes_python if numba.config.DISABLE_JIT else _prefetch_bytes_intrinsic
_LINE_BYTES = 64
# Rows ahead for the anomaly and alert kernels, whose rows hold little work each: the fetch must be
# asked for earlier than in the gather and gate kernels to arrive in time.
SLOT_PREFETCH_AHEAD = 16


@inline_kernel
def prefetch_slot(slab, slot):
    """Prefetch every cache line of slab[slot] (a C-contiguous slab of any ndim).

    Rows need not start on a line boundary, so the last byte is asked for too.
    """
    row_bytes = slab.strides[0]
    for offset in range(0, row_bytes, _LINE_BYTES):
        _prefetch_bytes(slab, slot, offset)
    _prefetch_bytes(slab, slot, row_bytes - 1)


@inline_kernel
def _prefetch_row(slab, slot, layer):
    """Prefetch every cache line of slab[slot, layer] (H floats)."""
    for k in range(0, slab.shape[2], _FLOATS_PER_LINE):
        _prefetch(slab, slot, layer, k)


@inline_kernel
def _columns(cell, hidden):
    return hidden if cell <= CELL_RNN_RELU else 4 * hidden


@inline_kernel
def _apply_gates(cell, gates, h, c):
    """Turn pre-activations `gates` (C,) into the new state, written in place to h and c (H,)."""
    hidden = h.shape[0]
    if cell == CELL_LSTM:
        for j in range(hidden):
            i = fast_sigmoid_2x(gates[j])
            f = fast_sigmoid_2x(gates[hidden + j])
            g = fast_tanh(gates[2 * hidden + j])
            o = fast_sigmoid_2x(gates[3 * hidden + j])
            cj = f * c[j] + i * g
            c[j] = cj
            h[j] = o * fast_tanh(cj)
    elif cell == CELL_GRU:
        for j in range(hidden):
            r = fast_sigmoid_2x(gates[j])
            z = fast_sigmoid_2x(gates[hidden + j])
            n = fast_tanh(gates[2 * hidden + j] + r * gates[3 * hidden + j])
            h[j] = (np.float32(1.0) - z) * n + z * h[j]
    elif cell == CELL_RNN_TANH:
        for j in range(hidden):
            h[j] = fast_tanh(gates[j])
    else:
        for j in range(hidden):
            h[j] = relu(gates[j])


@inline_kernel
def _matvec_accumulate(z, wt, gates):
    """gates[:] = z @ wt for z (K,), wt (K, C): row-wise axpy so the inner loop vectorises.

    Four rows per pass: each pass loads and stores `gates` once, so the loop is bound by the
    weight loads rather than by stores (about 1.15x faster at K = 73, C = 256; 3x when the
    weights fit in L1).
    """
    rows = z.shape[0]
    columns = gates.shape[0]
    for g in range(columns):
        gates[g] = np.float32(0.0)
    j = 0
    while j + 4 <= rows:
        z0 = z[j]
        z1 = z[j + 1]
        z2 = z[j + 2]
        z3 = z[j + 3]
        for g in range(columns):
            gates[g] += (z0 * wt[j, g] + z1 * wt[j + 1, g]) + (
                z2 * wt[j + 2, g] + z3 * wt[j + 3, g]
            )
        j += 4
    while j < rows:
        zj = z[j]
        for g in range(columns):
            gates[g] += zj * wt[j, g]
        j += 1


@inline_kernel
def _matvec_dot(wt_t, z, out):
    """out[:] = wt_t @ z for wt_t (O, K), z (K,): one vectorised dot product per output."""
    for o in range(out.shape[0]):
        row = wt_t[o]
        total = np.float32(0.0)
        for j in range(z.shape[0]):
            total += row[j] * z[j]
        out[o] = total


@kernel
def step_one(params, layout, x, h, c, slot, out, work):
    """Advance one stream by one time step.

    params float32 (P,), layout int64 (LAYOUT_FIXED + layers,), x float32 (I,) raw reading,
    h float32 (slots, layers, H) and c (same shape; ignored unless LSTM) updated in place at `slot`,
    out float32 (O,) receives the output, work float32 scratch of `PackedModel.work_size`.
    Returns 0, or 1 without touching any state when x holds a NaN or inf.
    """
    for j in range(x.shape[0]):
        if not np.isfinite(x[j]):
            return 1
    cell = layout[L_CELL]
    layers = layout[L_LAYERS]
    inputs = layout[L_INPUTS]
    hidden = layout[L_HIDDEN]
    columns = _columns(cell, hidden)
    width = max(inputs, hidden)
    z = work[: width + hidden + 1]
    gates = work[width + hidden + 1 : width + hidden + 1 + columns]

    if layout[L_HAS_INPUT_SCALING]:
        mean = params[layout[L_IN_MEAN] : layout[L_IN_MEAN] + inputs]
        inv_std = params[layout[L_IN_INV_STD] : layout[L_IN_INV_STD] + inputs]
        for j in range(inputs):
            z[j] = (x[j] - mean[j]) * inv_std[j]
    else:
        for j in range(inputs):
            z[j] = x[j]

    n_in = inputs
    for k in range(layers):
        rows = n_in + hidden + 1
        wt = params[layout[L_WT + k] : layout[L_WT + k] + rows * columns].reshape((rows, columns))
        hk = h[slot, k]
        for j in range(hidden):
            z[n_in + j] = hk[j]
        z[n_in + hidden] = np.float32(1.0)
        _matvec_accumulate(z[:rows], wt, gates)
        _apply_gates(cell, gates, hk, c[slot, k])
        for j in range(hidden):
            z[j] = hk[j]  # this layer's output is the next layer's input
        n_in = hidden

    top = h[slot, layers - 1]
    if layout[L_HAS_HEAD]:
        n_out = layout[L_OUTPUTS]
        head_t = params[layout[L_HEAD] : layout[L_HEAD] + n_out * (hidden + 1)].reshape(
            (n_out, hidden + 1)
        )
        z[hidden] = np.float32(1.0)
        _matvec_dot(head_t, z[: hidden + 1], out)
    elif layout[L_HAS_OUTPUT_SCALING]:
        mean = params[layout[L_OUT_MEAN] : layout[L_OUT_MEAN] + hidden]
        std = params[layout[L_OUT_STD] : layout[L_OUT_STD] + hidden]
        for j in range(hidden):
            out[j] = top[j] * std[j] + mean[j]
    else:
        for j in range(hidden):
            out[j] = top[j]
    return 0


@kernel
def gather_first_layer(x, slots, h, mean, inv_std, z):
    """Fill z (n, I + H + 1) with [(x - mean) * inv_std, h[slots, 0], 1] for n readings.

    Models without input scaling pass mean 0 and inv_std 1, which leave every finite x exactly
    as it is: one loop for both is ~2.5x faster than branching to a plain copy, which LLVM
    compiled into a much slower loop (33 -> 13 us for 1024 rows, H=64).
    """
    inputs = x.shape[1]
    hidden = h.shape[2]
    n = x.shape[0]
    for r in range(n):
        if r + PREFETCH_AHEAD < n:
            _prefetch_row(h, slots[r + PREFETCH_AHEAD], 0)
        zr = z[r]
        xr = x[r]
        for j in range(inputs):
            zr[j] = (xr[j] - mean[j]) * inv_std[j]
        hr = h[slots[r], 0]
        for j in range(hidden):
            zr[inputs + j] = hr[j]
        zr[inputs + hidden] = np.float32(1.0)


@kernel
def apply_gates_batch(cell, gates, slots, h, c, layer, dest):
    """Apply layer `layer`'s gates for n rows, scatter the new state to the slabs, and fill dest.

    gates float32 (n, C) pre-activations from the sgemm; h, c (slots, layers, H) slabs.
    dest (n, H + H' + 1): receives [h_new, h[slots, layer + 1], 1], the next layer's sgemm input,
    or [h_new, 1] (the head's input) after the top layer.
    """
    layers = h.shape[1]
    hidden = h.shape[2]
    upper = layer + 1 < layers
    n = gates.shape[0]
    for r in range(n):
        if r + PREFETCH_AHEAD < n:
            ahead = slots[r + PREFETCH_AHEAD]
            _prefetch_row(h, ahead, layer)
            _prefetch_row(c, ahead, layer)
            if upper:
                _prefetch_row(h, ahead, layer + 1)
        slot = slots[r]
        hk = h[slot, layer]
        _apply_gates(cell, gates[r], hk, c[slot, layer])
        dr = dest[r]
        for j in range(hidden):
            dr[j] = hk[j]
        if upper:
            hu = h[slot, layer + 1]
            for j in range(hidden):
                dr[hidden + j] = hu[j]
            dr[2 * hidden] = np.float32(1.0)
        else:
            dr[hidden] = np.float32(1.0)


@kernel
def all_finite(x):
    """Return whether every element of x float32 (n, I) is finite (no NaN, no inf)."""
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            if not np.isfinite(x[r, j]):
                return False
    return True


@kernel
def occurrence_ranks(slots, seen, ranks):
    """Write ranks[r] = how many earlier rows of this batch have the same slot; return max + 1.

    seen int32 (capacity,) must be all zero on entry and is left all zero.
    """
    waves = 0
    for r in range(slots.shape[0]):
        k = seen[slots[r]]
        ranks[r] = k
        seen[slots[r]] = k + 1
        if k + 1 > waves:
            waves = k + 1
    for r in range(slots.shape[0]):
        seen[slots[r]] = 0
    return waves
