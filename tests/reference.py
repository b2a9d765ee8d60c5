"""Plain-numpy float64 reference for the recurrent cells, written straight from PyTorch's equations.

This module is the slow, obviously-correct model every kernel and the engine are tested against.
It follows the equations in the PyTorch documentation of `nn.RNN`, `nn.GRU`, `nn.LSTM` and
`nn.Linear`, and the scaling contract of `engine.model.Model` (docs/ARCHITECTURE.md):

    rnn:  h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh | relu
    gru:  r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
          z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
          n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
          h' = (1 - z) * n + z * h
    lstm: i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
          f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
          g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
          o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
          c' = f * c + i * g
          h' = o * tanh(c')

Layer k > 0 takes the new hidden state of layer k - 1 as its input. The optional head is
`y = W h_top + b`; without a head the output is `h_top`. Inputs are scaled as
`(x - input_mean) / input_std` before the first layer and outputs unscaled as
`y * output_std + output_mean`.

Every array is converted to float64 and nothing is fused or approximated: clarity over speed.
`model` may be an `engine.model.Model` or any object with the same attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

State = list[tuple[np.ndarray, ...]]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """Return the logistic function 1 / (1 + exp(-a)) in float64."""
    # exp(-a) overflows to inf for a < -709; 1 / inf = 0 is the right limit, so hush the warning.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-a))


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def rnn_cell(
    x: np.ndarray,
    h: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray,
    bias_hh: np.ndarray,
    nonlinearity: str = "tanh",
) -> np.ndarray:
    """Return h' = act(W_ih x + b_ih + W_hh h + b_hh) for an Elman cell (act = tanh or relu)."""
    pre = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh
    if nonlinearity == "tanh":
        return np.tanh(pre)
    if nonlinearity == "relu":
        return np.maximum(pre, 0.0)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")


def gru_cell(
    x: np.ndarray,
    h: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray,
    bias_hh: np.ndarray,
) -> np.ndarray:
    """Return h' for a GRU cell with PyTorch's gate order r, z, n (rows of the weights)."""
    hidden = h.shape[0]
    gi = weight_ih @ x + bias_ih
    gh = weight_hh @ h + bias_hh
    i_r, i_z, i_n = gi[:hidden], gi[hidden : 2 * hidden], gi[2 * hidden :]
    h_r, h_z, h_n = gh[:hidden], gh[hidden : 2 * hidden], gh[2 * hidden :]
    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    # The reset gate multiplies the whole hidden term, bias included (PyTorch, unlike Cho et al.).
    n = np.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def lstm_cell(
    x: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    weight_ih: np.ndarray,
    weight_hh: np.ndarray,
    bias_ih: np.ndarray,
    bias_hh: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (h', c') for an LSTM cell with PyTorch's gate order i, f, g, o."""
    hidden = h.shape[0]
    gates = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh
    i = sigmoid(gates[:hidden])
    f = sigmoid(gates[hidden : 2 * hidden])
    g = np.tanh(gates[2 * hidden : 3 * hidden])
    o = sigmoid(gates[3 * hidden :])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return h_new, c_new


def zero_state(model: Any) -> State:
    """Return the all-zero float64 state: per layer (h,) or, for LSTM, (h, c)."""
    hidden = int(model.hidden_size)
    n_tensors = 2 if model.cell == "lstm" else 1
    return [
        tuple(np.zeros(hidden, dtype=np.float64) for _ in range(n_tensors)) for _ in model.layers
    ]


def scale_input(model: Any, x: np.ndarray) -> np.ndarray:
    """Return the input the first layer sees: (x - input_mean) / input_std where set."""
    x = _f64(x)
    if model.input_mean is not None:
        x = x - _f64(model.input_mean)
    if model.input_std is not None:
        x = x / _f64(model.input_std)
    return x


def unscale_output(model: Any, y: np.ndarray) -> np.ndarray:
    """Return the model output in data units: y * output_std + output_mean where set."""
    y = _f64(y)
    if model.output_std is not None:
        y = y * _f64(model.output_std)
    if model.output_mean is not None:
        y = y + _f64(model.output_mean)
    return y


def reference_step(model: Any, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
    """Advance `model` by one reading.

    x: (input_size,) reading in data units. state: list over layers of (h,) or (h, c) arrays of
    shape (hidden_size,). Return (y, new_state): y (output_size,) float64 and a new state list;
    the given state is left untouched.
    """
    x = np.asarray(x)
    if x.shape != (int(model.input_size),):
        raise ValueError(f"x has shape {x.shape}; expected ({model.input_size},)")
    if len(state) != len(model.layers):
        raise ValueError(f"state has {len(state)} layers; the model has {len(model.layers)}")

    inp = scale_input(model, x)
    new_state: State = []
    for layer, layer_state in zip(model.layers, state, strict=True):
        w_ih = _f64(layer.weight_ih)
        w_hh = _f64(layer.weight_hh)
        b_ih = _f64(layer.bias_ih)
        b_hh = _f64(layer.bias_hh)
        h = _f64(layer_state[0])
        if model.cell == "rnn":
            h = rnn_cell(inp, h, w_ih, w_hh, b_ih, b_hh, model.nonlinearity)
            new_state.append((h,))
        elif model.cell == "gru":
            h = gru_cell(inp, h, w_ih, w_hh, b_ih, b_hh)
            new_state.append((h,))
        elif model.cell == "lstm":
            h, c = lstm_cell(inp, h, _f64(layer_state[1]), w_ih, w_hh, b_ih, b_hh)
            new_state.append((h, c))
        else:
            raise ValueError(f"unknown cell {model.cell!r}; expected 'rnn', 'gru' or 'lstm'")
        inp = h

    y = inp
    if model.head_weight is not None:
        y = _f64(model.head_weight) @ y
        if model.head_bias is not None:
            y = y + _f64(model.head_bias)
    return unscale_output(model, y), new_state


def reference_run(model: Any, X: np.ndarray) -> np.ndarray:
    """Run `model` over a whole sequence from the zero state.

    X: (T, input_size). Return Y: (T, output_size) float64, Y[t] the output after reading X[t].
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X has shape {X.shape}; expected (T, {model.input_size})")
    state = zero_state(model)
    outputs = []
    for x in X:
        y, state = reference_step(model, x, state)
        outputs.append(y)
    if not outputs:
        width = model.head_weight.shape[0] if model.head_weight is not None else model.hidden_size
        return np.zeros((0, int(width)), dtype=np.float64)
    return np.stack(outputs)
