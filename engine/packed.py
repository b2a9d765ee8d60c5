"""A Model's weights laid out for the kernels: one flat float32 buffer plus an int64 layout.

The batched path uses 2-D views into the same buffer for its numpy sgemm calls (and a transposed
copy of the small head), so both paths read the very same numbers. Layout and equations: see
engine/kernels/cells.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engine.kernels import cells

if TYPE_CHECKING:
    from engine.model import Model

_CELL_CODES = {
    ("rnn", "tanh"): cells.CELL_RNN_TANH,
    ("rnn", "relu"): cells.CELL_RNN_RELU,
    ("gru", "tanh"): cells.CELL_GRU,
    ("lstm", "tanh"): cells.CELL_LSTM,
}


# Gate column blocks that go through a sigmoid: LSTM i, f, o; GRU r, z.
_SIGMOID_GATES = {"lstm": (0, 1, 3), "gru": (0, 1)}


def _packed_layer(model: Model, k: int) -> np.ndarray:
    """Return layer k as (I_k + H + 1, C) float32: rows [input, hidden, bias], gate columns."""
    weights = model.layers[k]
    hidden = model.hidden_size
    w_ih = weights.weight_ih.astype(np.float64)
    w_hh = weights.weight_hh.astype(np.float64)
    b_ih = weights.bias_ih.astype(np.float64)
    b_hh = weights.bias_hh.astype(np.float64)
    n_in = w_ih.shape[1]
    if model.cell != "gru":
        packed = np.vstack([w_ih.T, w_hh.T, (b_ih + b_hh)[None, :]])
    else:
        # GRU: r and z take the summed biases; n keeps its input part and its hidden part apart
        # (columns n_x and n_h) because r multiplies only W_hn h + b_hn.
        two = 2 * hidden
        packed = np.zeros((n_in + hidden + 1, 4 * hidden))
        packed[:n_in, :two] = w_ih[:two].T
        packed[n_in : n_in + hidden, :two] = w_hh[:two].T
        packed[-1, :two] = b_ih[:two] + b_hh[:two]
        packed[:n_in, two : 3 * hidden] = w_ih[two:].T
        packed[-1, two : 3 * hidden] = b_ih[two:]
        packed[n_in : n_in + hidden, 3 * hidden :] = w_hh[two:].T
        packed[-1, 3 * hidden :] = b_hh[two:]
    for gate in _SIGMOID_GATES.get(model.cell, ()):
        packed[:, gate * hidden : (gate + 1) * hidden] *= 0.5  # packed halved: see cells.py
    return packed.astype(np.float32)


def _packed_head(model: Model) -> np.ndarray:
    """Return the head as (O, H + 1) float32, [W | b] with output un-scaling folded in."""
    weight = model.head_weight.astype(np.float64)
    bias = model.head_bias.astype(np.float64)
    if model.output_std is not None:
        std = model.output_std.astype(np.float64)
        weight = weight * std[:, None]
        bias = bias * std + model.output_mean.astype(np.float64)
    return np.hstack([weight, bias[:, None]]).astype(np.float32)


class PackedModel:
    """Kernel-ready weights of one Model. Immutable after construction."""

    def __init__(self, model: Model) -> None:
        key = (model.cell, model.nonlinearity if model.cell == "rnn" else "tanh")
        self.cell_code = _CELL_CODES[key]
        self.layers = model.num_layers
        self.inputs = model.input_size
        self.hidden = model.hidden_size
        self.outputs = model.output_size
        self.columns = self.hidden if model.cell == "rnn" else 4 * self.hidden

        pieces: list[np.ndarray] = []
        offset = 0

        def place(array: np.ndarray | None) -> int:
            nonlocal offset
            if array is None:
                return 0
            start = offset
            flat = np.ascontiguousarray(array, dtype=np.float32).ravel()
            pieces.append(flat)
            offset += flat.size
            return start

        has_input_scaling = model.input_mean is not None
        has_head = model.head_weight is not None
        has_output_scaling = model.output_mean is not None and not has_head
        layer_mats = [_packed_layer(model, k) for k in range(self.layers)]
        head = _packed_head(model) if has_head else None

        layout = np.zeros(cells.LAYOUT_FIXED + self.layers, dtype=np.int64)
        layout[cells.L_CELL] = self.cell_code
        layout[cells.L_LAYERS] = self.layers
        layout[cells.L_INPUTS] = self.inputs
        layout[cells.L_HIDDEN] = self.hidden
        layout[cells.L_OUTPUTS] = self.outputs
        layout[cells.L_HAS_HEAD] = has_head
        layout[cells.L_HAS_INPUT_SCALING] = has_input_scaling
        layout[cells.L_HAS_OUTPUT_SCALING] = has_output_scaling
        if has_input_scaling:
            layout[cells.L_IN_MEAN] = place(model.input_mean)
            layout[cells.L_IN_INV_STD] = place(1.0 / model.input_std.astype(np.float64))
        if has_output_scaling:
            layout[cells.L_OUT_MEAN] = place(model.output_mean)
            layout[cells.L_OUT_STD] = place(model.output_std)
        for k, mat in enumerate(layer_mats):
            layout[cells.L_WT + k] = place(mat)
        if head is not None:
            layout[cells.L_HEAD] = place(head)

        self.params = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        self.params.setflags(write=False)
        self.layout = layout
        self.layout.setflags(write=False)
        self.has_head = has_head

        def view(start: int, shape: tuple[int, ...]) -> np.ndarray:
            size = int(np.prod(shape))
            return self.params[start : start + size].reshape(shape)

        self.layer_wt = [
            view(int(layout[cells.L_WT + k]), mat.shape) for k, mat in enumerate(layer_mats)
        ]
        # (H + 1, O) for [h, 1] @ head. A C-ordered copy of the same numbers, not a transposed
        # view: OpenBLAS takes ~27 us for the view against ~21 us for this (1024 rows, O = 8).
        self.head = None
        if head is not None:
            self.head = np.ascontiguousarray(view(int(layout[cells.L_HEAD]), head.shape).T)
            self.head.setflags(write=False)
        if has_input_scaling:
            self.input_mean = view(int(layout[cells.L_IN_MEAN]), (self.inputs,))
            self.input_inv_std = view(int(layout[cells.L_IN_INV_STD]), (self.inputs,))
        else:  # the gather kernel always scales: (x - 0) * 1 is x exactly
            self.input_mean = np.zeros(self.inputs, np.float32)
            self.input_inv_std = np.ones(self.inputs, np.float32)
        if has_output_scaling:
            self.output_mean = view(int(layout[cells.L_OUT_MEAN]), (self.hidden,))
            self.output_std = view(int(layout[cells.L_OUT_STD]), (self.hidden,))
        else:
            self.output_mean = self.output_std = None
        self.work_size = max(self.inputs, self.hidden) + self.hidden + 1 + self.columns
