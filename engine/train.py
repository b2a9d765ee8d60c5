"""Train a next-step forecaster: `rnnstream train --csv FILE --out model.npz`.

The network reads x_t and predicts x_{t+1} (every value column is both an input and an output), in
standardised units. Training is truncated backpropagation through time over windows of `seq_len`
steps, each window starting from a zero state as a fresh stream does in the engine, with Adam and
global gradient-norm clipping. Everything is numpy in float64: the per-step products are batched
over a minibatch of windows, and the input projections of a whole window are one matmul per layer,
so the Python loop runs over time steps only. The result is an `engine.model.Model` in PyTorch
layout (LSTM gates i,f,g,o; GRU r,z,n), saved as float32.

Parameters travel as a dict of float64 arrays named like PyTorch's recurrent modules:
`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` for each layer k, then
`head_weight` (O, H) and `head_bias` (O,).

An epoch is one pass over windows that start every `stride` rows. The stride is seq_len
(back-to-back windows) when the data gives `min_steps` optimiser steps over all epochs that way;
with less data windows overlap, down to one starting at every row, so a short series is still
trained for enough steps. After training, the one-step mean absolute error on the validation
windows, in the stream's units, is set beside that of the last-value forecast x_{t+1} = x_t on the
same windows: a forecaster that does not beat it is worth little, and `rnnstream train` says so.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.protocol import FLOAT32_MAX
from producers.csv_replay import find_time_column, is_number, parse_timestamp

if TYPE_CHECKING:
    from engine.anomaly import AnomalySpec
    from engine.model import Model

CELLS = ("rnn", "gru", "lstm")
NONLINEARITIES = ("tanh", "relu")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

Params = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Configuration and report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; defaults suit a univariate sensor series."""

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    seq_len: int = 64
    batch_size: int = 32
    epochs: int = 20
    lr: float = 3e-3
    clip_norm: float = 1.0
    seed: int = 0
    validation_fraction: float = 0.1
    nonlinearity: str = "tanh"
    burn_in: int = 0  # leading steps of each window left out of the loss
    lr_schedule: str = "cosine"  # "cosine" (decay to min_lr_fraction * lr) or "constant"
    min_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # Fewest optimiser steps over all epochs. When back-to-back windows give fewer, training
    # windows overlap: their starts step by the largest stride (< seq_len, >= 1) that gives
    # enough. 0 keeps windows back to back.
    min_steps: int = 1500
    patience: int = 0  # stop after this many epochs without a better validation loss; 0: never

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be tanh or relu, not {self.nonlinearity!r}")
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(
                f"nonlinearity {self.nonlinearity} is for the rnn cell only; {self.cell} has "
                "fixed gate activations"
            )
        for name in ("hidden_size", "num_layers", "seq_len", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")
        if not 0 <= self.burn_in < self.seq_len:
            raise ValueError("burn_in must be >= 0 and smaller than seq_len")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be positive and finite, not {self.lr}")
        if not 0 < self.clip_norm < math.inf:
            raise ValueError(f"clip_norm must be positive and finite, not {self.clip_norm}")
        if self.min_steps < 0 or self.patience < 0:
            raise ValueError("min_steps and patience must be >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError("lr_schedule must be 'cosine' or 'constant'")

    def min_series_length(self) -> int:
        """Return the fewest rows a series needs: one training window plus validation rows."""
        window = self.seq_len + 1
        if self.validation_fraction <= 0:
            return window
        # The validation tail needs one window too, of which burn_in + 1 rows may overlap training.
        return window + (window - self.burn_in - 1)


@dataclass(frozen=True)
class EpochStats:
    """What happened in one epoch; `validation_loss` is None without a validation split."""

    epoch: int
    epochs: int
    train_loss: float
    validation_loss: float | None
    lr: float
    elapsed: float
    eta: float
    improved: bool


@dataclass(frozen=True)
class TrainReport:
    """Outcome of `train_forecaster`; losses are mean squared errors in standardised units."""

    history: tuple[EpochStats, ...]
    initial_validation_loss: float | None
    best_validation_loss: float | None
    best_epoch: int
    final_train_loss: float | None
    elapsed: float
    train_windows: int
    validation_windows: int
    window_stride: int = 0
    steps: int = 0
    # Per-feature one-step mean absolute errors on the validation windows, in the stream's
    # units: the model's, and the last-value forecast's (x_{t+1} = x_t). None without validation.
    validation_mae: tuple[float, ...] | None = None
    last_value_mae: tuple[float, ...] | None = None

    @property
    def beats_last_value(self) -> bool | None:
        """Return whether the model forecasts every feature better than the last value does."""
        if self.validation_mae is None or self.last_value_mae is None:
            return None
        return all(m < n for m, n in zip(self.validation_mae, self.last_value_mae, strict=True))


def format_epoch(stats: EpochStats) -> str:
    """Render one progress line: epoch, losses, learning rate, elapsed and estimated time left."""
    val = "-" if stats.validation_loss is None else f"{stats.validation_loss:.5g}"
    mark = " *" if stats.improved else ""
    return (
        f"epoch {stats.epoch}/{stats.epochs}  train {stats.train_loss:.5g}  val {val}{mark}  "
        f"lr {stats.lr:.3g}  elapsed {_duration(stats.elapsed)}  eta {_duration(stats.eta)}"
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def init_params(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    output_size: int,
    rng: np.random.Generator,
) -> Params:
    """Draw float64 parameters the way PyTorch does: uniform in +-1/sqrt(hidden_size)."""
    gh = GATES[cell] * hidden_size
    bound = 1.0 / math.sqrt(hidden_size)
    params: Params = {}
    for k in range(num_layers):
        fan_in = input_size if k == 0 else hidden_size
        params[f"weight_ih_l{k}"] = rng.uniform(-bound, bound, (gh, fan_in))
        params[f"weight_hh_l{k}"] = rng.uniform(-bound, bound, (gh, hidden_size))
        params[f"bias_ih_l{k}"] = rng.uniform(-bound, bound, gh)
        params[f"bias_hh_l{k}"] = rng.uniform(-bound, bound, gh)
    params["head_weight"] = rng.uniform(-bound, bound, (output_size, hidden_size))
    params["head_bias"] = rng.uniform(-bound, bound, output_size)
    return params


def _num_layers(params: Params) -> int:
    return sum(1 for name in params if name.startswith("weight_ih_l"))


def params_from_model(model: Model) -> Params:
    """Return a model's recurrent and head weights as a float64 parameter dict."""
    if model.head_weight is None:
        raise ValueError("the model has no head; a forecaster needs one")
    params: Params = {}
    for k, layer in enumerate(model.layers):
        params[f"weight_ih_l{k}"] = np.asarray(layer.weight_ih, dtype=np.float64).copy()
        params[f"weight_hh_l{k}"] = np.asarray(layer.weight_hh, dtype=np.float64).copy()
        params[f"bias_ih_l{k}"] = np.asarray(layer.bias_ih, dtype=np.float64).copy()
        params[f"bias_hh_l{k}"] = np.asarray(layer.bias_hh, dtype=np.float64).copy()
    params["head_weight"] = np.asarray(model.head_weight, dtype=np.float64).copy()
    params["head_bias"] = np.asarray(model.head_bias, dtype=np.float64).copy()
    return params


def build_model(
    params: Params,
    cell: str,
    nonlinearity: str,
    mean: np.ndarray,
    std: np.ndarray,
    feature_names: Sequence[str] | None,
    metadata: dict,
) -> Model:
    """Wrap float64 parameters and the data scaling into a float32 `engine.model.Model`."""
    from engine.model import LayerWeights, Model  # lazy: keeps `rnnstream --help` fast

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    layers = tuple(
        LayerWeights(
            weight_ih=f32(params[f"weight_ih_l{k}"]),
            weight_hh=f32(params[f"weight_hh_l{k}"]),
            bias_ih=f32(params[f"bias_ih_l{k}"]),
            bias_hh=f32(params[f"bias_hh_l{k}"]),
        )
        for k in range(_num_layers(params))
    )
    return Model(
        cell=cell,
        input_size=int(params["weight_ih_l0"].shape[1]),
        hidden_size=int(params["weight_hh_l0"].shape[1]),
        layers=layers,
        nonlinearity=nonlinearity,
        head_weight=f32(params["head_weight"]),
        head_bias=f32(params["head_bias"]),
        input_mean=f32(mean),
        input_std=f32(std),
        output_mean=f32(mean),
        output_std=f32(std),
        feature_names=None if feature_names is None else tuple(str(n) for n in feature_names),
        metadata=metadata,
    )


# --------------------------------------------------------------------------------------------
# Forward and backward passes
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _forward(
    params: Params, X: np.ndarray, cell: str, nonlinearity: str
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Run the network over windows X (B, T, I) from a zero state; keep what backward needs."""
    B, T, _ = X.shape
    inp = X
    caches = []
    for k in range(_num_layers(params)):
        w_hh_t = params[f"weight_hh_l{k}"].T
        b_hh = params[f"bias_hh_l{k}"]
        H = w_hh_t.shape[0]
        gi = inp @ params[f"weight_ih_l{k}"].T + params[f"bias_ih_l{k}"]  # (B, T, G*H)
        hs = np.empty((B, T, H))
        h = np.zeros((B, H))
        cache: dict[str, np.ndarray] = {"input": inp, "h": hs}
        if cell == "rnn":
            for t in range(T):
                a = gi[:, t] + h @ w_hh_t + b_hh
                h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
                hs[:, t] = h
        elif cell == "lstm":
            gates = np.empty((B, T, 4 * H))  # activated i, f, g, o
            cs = np.empty((B, T, H))
            tcs = np.empty((B, T, H))
            c = np.zeros((B, H))
            for t in range(T):
                a = gi[:, t] + h @ w_hh_t + b_hh
                g = gates[:, t]
                g[:, : 2 * H] = _sigmoid(a[:, : 2 * H])
                g[:, 2 * H : 3 * H] = np.tanh(a[:, 2 * H : 3 * H])
                g[:, 3 * H :] = _sigmoid(a[:, 3 * H :])
                c = g[:, H : 2 * H] * c + g[:, :H] * g[:, 2 * H : 3 * H]
                tc = np.tanh(c)
                h = g[:, 3 * H :] * tc
                cs[:, t], tcs[:, t], hs[:, t] = c, tc, h
            cache.update(gates=gates, c=cs, tanh_c=tcs)
        else:  # gru
            gates = np.empty((B, T, 3 * H))  # activated r, z, n
            ghn = np.empty((B, T, H))  # W_hn h + b_hn, which r multiplies
            for t in range(T):
                gh = h @ w_hh_t + b_hh
                g = gates[:, t]
                g[:, : 2 * H] = _sigmoid(gi[:, t, : 2 * H] + gh[:, : 2 * H])
                ghn[:, t] = gh[:, 2 * H :]
                g[:, 2 * H :] = np.tanh(gi[:, t, 2 * H :] + g[:, :H] * gh[:, 2 * H :])
                z = g[:, H : 2 * H]
                h = (1.0 - z) * g[:, 2 * H :] + z * h
                hs[:, t] = h
            cache.update(gates=gates, ghn=ghn)
        caches.append(cache)
        inp = hs
    out = inp @ params["head_weight"].T + params["head_bias"]
    return out, caches


def forward(params: Params, X: np.ndarray, cell: str, nonlinearity: str = "tanh") -> np.ndarray:
    """Return the head outputs (B, T, O) for standardised windows X (B, T, I), zero start state."""
    X = np.asarray(X, dtype=np.float64)
    return _forward(params, X, cell, nonlinearity)[0]


def loss_and_gradients(
    params: Params,
    X_windows: np.ndarray,
    Y_windows: np.ndarray,
    cell: str,
    nonlinearity: str = "tanh",
    burn_in: int = 0,
    need_gradients: bool = True,
) -> tuple[float, Params | None]:
    """Return the mean squared error over steps >= burn_in and its gradient for every parameter.

    X_windows (B, T, I) are standardised inputs, Y_windows (B, T, O) standardised targets; every
    window starts from a zero state. The loss averages over windows, kept steps and outputs, like
    `torch.nn.functional.mse_loss(pred[:, burn_in:], Y[:, burn_in:])`.
    """
    X = np.asarray(X_windows, dtype=np.float64)
    Y = np.asarray(Y_windows, dtype=np.float64)
    pred, caches = _forward(params, X, cell, nonlinearity)
    err = pred[:, burn_in:] - Y[:, burn_in:]
    loss = float(np.mean(err * err))
    if not need_gradients:
        return loss, None

    grads: Params = {}
    d_out = np.zeros_like(pred)
    d_out[:, burn_in:] = (2.0 / err.size) * err
    h_top = caches[-1]["h"]
    H = h_top.shape[2]
    grads["head_weight"] = d_out.reshape(-1, d_out.shape[2]).T @ h_top.reshape(-1, H)
    grads["head_bias"] = d_out.sum(axis=(0, 1))
    d_hs = d_out @ params["head_weight"]  # (B, T, H): loss gradient w.r.t. the top layer outputs

    for k in reversed(range(len(caches))):
        cache = caches[k]
        w_hh = params[f"weight_hh_l{k}"]
        hs = cache["h"]
        d_gi, d_gh = _backward_layer(cell, nonlinearity, cache, d_hs, w_hh)
        inp = cache["input"]
        gh_cols = d_gi.shape[2]
        grads[f"weight_ih_l{k}"] = d_gi.reshape(-1, gh_cols).T @ inp.reshape(-1, inp.shape[2])
        grads[f"bias_ih_l{k}"] = d_gi.sum(axis=(0, 1))
        # h_{t-1} is zero at t = 0, so step 0 adds nothing to the recurrent weight gradient.
        grads[f"weight_hh_l{k}"] = d_gh[:, 1:].reshape(-1, gh_cols).T @ hs[:, :-1].reshape(-1, H)
        grads[f"bias_hh_l{k}"] = d_gh.sum(axis=(0, 1))
        if k > 0:
            d_hs = d_gi @ params[f"weight_ih_l{k}"]
    return loss, {name: grads[name] for name in params}


def _backward_layer(
    cell: str,
    nonlinearity: str,
    cache: dict[str, np.ndarray],
    d_hs: np.ndarray,
    w_hh: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Backpropagate through time in one layer.

    Return the gradients w.r.t. the input-side pre-activations `W_ih x + b_ih` and the
    hidden-side ones `W_hh h + b_hh` at every step (equal except for GRU's n gate).
    """
    hs = cache["h"]
    B, T, H = hs.shape
    d_h = np.zeros((B, H))
    if cell == "rnn":
        d_a = np.empty((B, T, H))
        for t in reversed(range(T)):
            dh = d_hs[:, t] + d_h
            h = hs[:, t]
            d_a[:, t] = dh * (1.0 - h * h) if nonlinearity == "tanh" else dh * (h > 0.0)
            d_h = d_a[:, t] @ w_hh
        return d_a, d_a
    if cell == "lstm":
        gates, cs, tcs = cache["gates"], cache["c"], cache["tanh_c"]
        d_a = np.empty((B, T, 4 * H))
        d_c = np.zeros((B, H))
        zeros = np.zeros((B, H))
        for t in reversed(range(T)):
            dh = d_hs[:, t] + d_h
            g = gates[:, t]
            i, f, gg, o = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
            tc = tcs[:, t]
            c_prev = cs[:, t - 1] if t > 0 else zeros
            d_c = d_c + dh * o * (1.0 - tc * tc)
            da = d_a[:, t]
            da[:, :H] = d_c * gg * i * (1.0 - i)
            da[:, H : 2 * H] = d_c * c_prev * f * (1.0 - f)
            da[:, 2 * H : 3 * H] = d_c * i * (1.0 - gg * gg)
            da[:, 3 * H :] = dh * tc * o * (1.0 - o)
            d_c = d_c * f
            d_h = da @ w_hh
        return d_a, d_a
    # gru: h' = (1 - z) * n + z * h, n = tanh(gi_n + r * ghn)
    gates, ghn = cache["gates"], cache["ghn"]
    d_gi = np.empty((B, T, 3 * H))
    d_gh = np.empty((B, T, 3 * H))
    zeros = np.zeros((B, H))
    for t in reversed(range(T)):
        dh = d_hs[:, t] + d_h
        g = gates[:, t]
        r, z, n = g[:, :H], g[:, H : 2 * H], g[:, 2 * H :]
        h_prev = hs[:, t - 1] if t > 0 else zeros
        d_an = dh * (1.0 - z) * (1.0 - n * n)
        di = d_gi[:, t]
        di[:, :H] = d_an * ghn[:, t] * r * (1.0 - r)
        di[:, H : 2 * H] = dh * (h_prev - n) * z * (1.0 - z)
        di[:, 2 * H :] = d_an
        dg = d_gh[:, t]
        dg[:, : 2 * H] = di[:, : 2 * H]
        dg[:, 2 * H :] = d_an * r
        d_h = dg @ w_hh + dh * z
    return d_gi, d_gh


# --------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm (as PyTorch does).

    Return the norm before clipping. A max_norm <= 0 or inf disables clipping.
    """
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if 0 < max_norm < math.inf and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads.values():
            g *= scale
    return total


class Adam:
    """Adam (Kingma and Ba) with bias correction, updating a parameter dict in place."""

    def __init__(
        self, params: Params, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        """Apply one update: p -= lr * m_hat / (sqrt(v_hat) + eps)."""
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for name, p in params.items():
            g = grads[name]
            m, v = self.m[name], self.v[name]
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.lr_schedule == "constant" or total_steps <= 1:
        return config.lr
    floor = config.lr * config.min_lr_fraction
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * step / (total_steps - 1)))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _as_series(series: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(series) == 0:
        raise ValueError("no series to train on")
    out = []
    for i, s in enumerate(series):
        a = np.asarray(s, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"series {i} must be 1-D or 2-D (T, F), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"series {i} contains NaN or infinite values")
        out.append(a)
    features = {a.shape[1] for a in out}
    if len(features) != 1:
        raise ValueError(f"all series must have the same number of features, got {features}")
    return out


def _split(
    series: list[np.ndarray], config: TrainConfig
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each series into a training head and a validation tail (with burn-in context)."""
    train, val = [], []
    window = config.seq_len + 1
    need = config.min_series_length()
    for i, s in enumerate(series):
        if len(s) < need:
            raise ValueError(
                f"series {i} has {len(s)} rows; seq_len {config.seq_len} needs at least {need}"
            )
        if config.validation_fraction <= 0:
            train.append(s)
            continue
        n_val = max(int(round(config.validation_fraction * len(s))), window - config.burn_in - 1)
        split = len(s) - n_val
        if split < window:  # keep one whole training window
            split = window
            n_val = len(s) - split
        train.append(s[:split])
        # The rows before the split feed the first validation targets; they are not scored.
        val.append(s[split - config.burn_in - 1 :])
    return train, val


def _window_starts(length: int, seq_len: int, offset: int, stride: int | None = None) -> np.ndarray:
    """Return starts of windows of seq_len + 1 rows from `offset` on, `stride` (seq_len) apart."""
    return np.arange(offset, length - seq_len, stride or seq_len)


def _window_stride(train: list[np.ndarray], config: TrainConfig) -> int:
    """Return the largest stride <= seq_len whose windows give config.min_steps steps (>= 1)."""
    seq_len = config.seq_len
    if config.min_steps <= 0 or config.epochs <= 0:
        return seq_len
    for stride in range(seq_len, 1, -1):
        # Count at the epochs' largest random offset, which gives the fewest windows.
        windows = sum(
            len(_window_starts(len(s), seq_len, min(stride, len(s) - seq_len) - 1, stride))
            for s in train
        )
        if math.ceil(windows / config.batch_size) * config.epochs >= config.min_steps:
            return stride
    return 1


def _cut(segment: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    return segment[starts[:, None] + np.arange(seq_len + 1)]


def _validation_windows(val: list[np.ndarray], config: TrainConfig) -> tuple[np.ndarray, int]:
    """Tile each validation tail with windows whose scored steps cover every tail target once."""
    windows = []
    stride = config.seq_len - config.burn_in
    for seg in val:
        starts = np.arange(0, len(seg) - config.seq_len, stride)
        last = len(seg) - config.seq_len - 1
        if len(starts) == 0 or starts[-1] != last:
            # The final window overlaps the previous one; its repeated targets count twice, a
            # small bias that keeps every window full length.
            starts = np.append(starts, last)
        windows.append(_cut(seg, starts, config.seq_len))
    if not windows:
        return np.empty((0, config.seq_len + 1, 0)), 0
    w = np.concatenate(windows)
    return w, len(w)


def _evaluate(params: Params, windows: np.ndarray, config: TrainConfig, chunk: int = 256) -> float:
    total, count = 0.0, 0
    for lo in range(0, len(windows), chunk):
        w = windows[lo : lo + chunk]
        loss, _ = loss_and_gradients(
            params,
            w[:, :-1],
            w[:, 1:],
            config.cell,
            config.nonlinearity,
            config.burn_in,
            need_gradients=False,
        )
        total += loss * len(w)
        count += len(w)
    return total / count


def _stream_errors(
    params: Params,
    windows: np.ndarray,
    units: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    config: TrainConfig,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-feature mean absolute one-step errors of the model and of the last value.

    `windows` are the standardised validation windows (n, T+1, F); `units` (n, T+1, 3F) holds,
    for the same rows, the readings in the stream's units, then the offset and scale that map
    the trainer's input units to them at each step. Both errors cover the scored steps
    (>= burn_in) of every window, so they compare like with like.
    """
    f = windows.shape[2]
    model_sum = np.zeros(f)
    last_sum = np.zeros(f)
    count = 0
    b = config.burn_in
    for lo in range(0, len(windows), chunk):
        w = windows[lo : lo + chunk]
        u = units[lo : lo + chunk]
        raw, shift, scale = u[..., :f], u[..., f : 2 * f], u[..., 2 * f :]
        pred = forward(params, w[:, :-1], config.cell, config.nonlinearity) * std + mean
        forecast = pred * scale[:, :-1] + shift[:, :-1]
        model_sum += np.abs(forecast - raw[:, 1:])[:, b:].sum(axis=(0, 1))
        last_sum += np.abs(raw[:, :-1] - raw[:, 1:])[:, b:].sum(axis=(0, 1))
        count += len(w) * (w.shape[1] - 1 - b)
    return model_sum / count, last_sum / count


def scaling(train: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return per-feature mean and std over the training rows; constant features get std 1."""
    rows = np.concatenate(train)
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    tiny = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    std = np.where(tiny, 1.0, std)
    return mean, std


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


def train_forecaster(
    series: Sequence[np.ndarray],
    config: TrainConfig | None = None,
    progress: Callable[[EpochStats], None] | None = None,
    feature_names: Sequence[str] | None = None,
    metadata: dict | None = None,
) -> tuple[Model, TrainReport]:
    """Train a next-step forecaster on one or more series, each (T_i, F) or (T_i,).

    Return `(model, report)`: the `engine.model.Model` holds the weights of the epoch with the
    lowest validation loss (the last epoch without a validation split), with input and output
    scaling from the training rows. `progress` is called after every epoch. `metadata` entries
    are added to the model's metadata beside the training settings and losses.
    """
    config = config or TrainConfig()
    config.validate()
    data = _as_series(series)
    units = [np.concatenate([s, np.zeros_like(s), np.ones_like(s)], axis=1) for s in data]
    return _fit(data, units, config, progress, feature_names, metadata)


def _fit(
    data: list[np.ndarray],
    units: list[np.ndarray],
    config: TrainConfig,
    progress: Callable[[EpochStats], None] | None,
    feature_names: Sequence[str] | None,
    metadata: dict | None,
) -> tuple[Model, TrainReport]:
    """Train on `data` (validated series); `units` maps each series to the stream's units.

    units[i] (T_i, 3F) holds per row the reading in the stream's units, then the offset and
    scale with which a value in data[i]'s units maps to them (`_stream_errors`).
    """
    n_features = data[0].shape[1]
    if feature_names is not None and len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature names for {n_features} features")
    train, val = _split(data, config)
    _, val_units = _split(units, config)
    mean, std = scaling(train)
    train = [(s - mean) / std for s in train]
    val = [(s - mean) / std for s in val]
    val_windows, n_val = _validation_windows(val, config)
    unit_windows, _ = _validation_windows(val_units, config)

    rng = np.random.default_rng(config.seed)
    params = init_params(
        config.cell, n_features, config.hidden_size, config.num_layers, n_features, rng
    )
    adam = Adam(params, config.betas, config.eps)
    stride = _window_stride(train, config)
    windows_per_epoch = sum(len(_window_starts(len(s), config.seq_len, 0, stride)) for s in train)
    batches_per_epoch = math.ceil(windows_per_epoch / config.batch_size)
    total_steps = batches_per_epoch * config.epochs

    initial_val = _evaluate(params, val_windows, config) if n_val else None
    best_val = initial_val
    best_params = {name: p.copy() for name, p in params.items()}
    best_epoch = 0
    history: list[EpochStats] = []
    started = time.perf_counter()
    step = 0
    train_loss: float | None = None
    for epoch in range(1, config.epochs + 1):
        # Random offsets per series and epoch, so window edges fall at different phases.
        parts = []
        for s in train:
            offset = int(rng.integers(0, min(stride, len(s) - config.seq_len)))
            starts = _window_starts(len(s), config.seq_len, offset, stride)
            parts.append(_cut(s, starts, config.seq_len))
        windows = np.concatenate(parts)
        windows = windows[rng.permutation(len(windows))]
        total, count = 0.0, 0
        lr = config.lr
        for lo in range(0, len(windows), config.batch_size):
            w = windows[lo : lo + config.batch_size]
            loss, grads = loss_and_gradients(
                params, w[:, :-1], w[:, 1:], config.cell, config.nonlinearity, config.burn_in
            )
            clip_grad_norm(grads, config.clip_norm)
            lr = _learning_rate(config, step, total_steps)
            adam.step(params, grads, lr)
            step += 1
            total += loss * len(w)
            count += len(w)
        train_loss = total / count
        val_loss = _evaluate(params, val_windows, config) if n_val else None
        improved = val_loss is None or (
            math.isfinite(val_loss) and (best_val is None or val_loss < best_val)
        )
        if improved:
            best_val, best_epoch = val_loss, epoch
            best_params = {name: p.copy() for name, p in params.items()}
        elapsed = time.perf_counter() - started
        stop = n_val > 0 and 0 < config.patience <= epoch - best_epoch
        stats = EpochStats(
            epoch=epoch,
            epochs=config.epochs,
            train_loss=train_loss,
            validation_loss=val_loss,
            lr=lr,
            elapsed=elapsed,
            eta=0.0 if stop else elapsed / epoch * (config.epochs - epoch),
            improved=improved and n_val > 0,
        )
        history.append(stats)
        if progress is not None:
            progress(stats)
        if stop:
            break

    model_mae = last_mae = None
    if n_val:
        model_mae, last_mae = _stream_errors(
            best_params, val_windows, unit_windows, mean, std, config
        )
    report = TrainReport(
        history=tuple(history),
        initial_validation_loss=initial_val,
        best_validation_loss=best_val,
        best_epoch=best_epoch,
        final_train_loss=train_loss,
        elapsed=time.perf_counter() - started,
        train_windows=windows_per_epoch,
        validation_windows=n_val,
        window_stride=stride,
        steps=step,
        validation_mae=None if model_mae is None else tuple(float(v) for v in model_mae),
        last_value_mae=None if last_mae is None else tuple(float(v) for v in last_mae),
    )
    meta = dict(metadata or {})
    meta.update(
        trained_by="rnnstream train",
        task="next-step forecast",
        training=_jsonable(asdict(config)),
        series=len(data),
        rows=int(sum(len(s) for s in data)),
        train_windows_per_epoch=windows_per_epoch,
        window_stride=stride,
        optimizer_steps=step,
        epochs_run=len(history),
        validation_windows=n_val,
        best_epoch=best_epoch,
        initial_validation_loss=_jsonable(initial_val),
        validation_loss=_jsonable(best_val),
        final_train_loss=_jsonable(train_loss),
        train_seconds=round(report.elapsed, 3),
    )
    if model_mae is not None:
        # One-step mean absolute errors on the validation windows, in the stream's units.
        meta.update(
            validation_mae=_jsonable(report.validation_mae),
            last_value_mae=_jsonable(report.last_value_mae),
            beats_last_value=report.beats_last_value,
        )
    model = build_model(
        best_params, config.cell, config.nonlinearity, mean, std, feature_names, meta
    )
    return model, report


def _jsonable(value):
    """Turn tuples into lists and non-finite floats into None so json.dumps is strict-safe."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------------------------
# CSV input
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvSeries:
    """What `read_csv` found: one series (T_i, F) per stream, each in time order."""

    series: tuple[np.ndarray, ...]
    names: tuple[str, ...]  # the value columns, one per feature
    streams: tuple[str, ...]  # stream ids, "" for a file without a stream column
    time_column: str | None  # the column that ordered the rows, if any
    notes: tuple[str, ...]  # things the user should know: columns left out, rows reordered


def read_csv(
    path: str | Path,
    value_columns: Sequence[str] | None = None,
    time_column: str | None = None,
    stream_column: str | None = None,
) -> CsvSeries:
    """Read a CSV with a header row into one series per stream, each in time order.

    Without `time_column`, a first column named like a timestamp or index (or any column named
    timestamp, time, datetime or date) orders the rows, if its cells all parse as epoch seconds,
    `YYYY-MM-DD HH:MM:SS` or ISO 8601; ties keep file order. Without `stream_column` all rows
    are one stream. Without `value_columns`, every other column whose cells are all numbers is
    a value column, and a column without a number is left out (said in `notes`). Raise
    ValueError naming the file, line and column of a cell that is not a number (also in a
    column that is mostly numbers), not finite or beyond float32 range, or of a timestamp that
    does not parse in a column named by `time_column`.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text CSV file") from None
    if len(rows) < 2:
        raise ValueError(f"{path} has no data rows under a header")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    width = len(header)
    for line, r in body:
        if len(r) != width:
            raise ValueError(f"{path} line {line} has {len(r)} fields; the header has {width}")
    for role, name in (("time", time_column), ("stream", stream_column)):
        if name is not None and name not in header:
            raise ValueError(f"{path} has no {role} column {name!r}; the header is {header}")
    if value_columns is not None:
        unknown = [c for c in value_columns if c not in header]
        if unknown:
            raise ValueError(
                f"unknown column(s) {', '.join(unknown)}; the header has {', '.join(header)}"
            )
    auto_time = time_column is None
    if auto_time:
        time_column = find_time_column(header, value_columns or ())
    notes: list[str] = []
    if value_columns is None:
        chosen, mixed = [], []
        for j, name in enumerate(header):
            if name in (time_column, stream_column):
                continue
            bad = next(((line, r[j]) for line, r in body if not is_number(r[j])), None)
            if bad is None:
                chosen.append(name)
            elif any(is_number(r[j]) for _, r in body):
                mixed.append(f"line {bad[0]} column {name!r} is not a number: {bad[1]!r}")
            else:
                hint = "" if stream_column else f" (if it holds stream ids: --stream-column {name})"
                notes.append(f"column {name!r} has no numbers and is not used{hint}")
        if mixed:
            # A column of numbers with a stray cell is one the user wants; do not drop it.
            raise ValueError(
                f"{path}{' has no numeric value columns:' if not chosen else ''} {mixed[0]} "
                "(the column holds numbers elsewhere; fix the cell, or name the columns to "
                "model with --value-columns)"
            )
        if not chosen:
            raise ValueError(f"{path} has no numeric value columns")
    else:
        chosen = list(value_columns)
    repeated = sorted({c for c in chosen if header.count(c) > 1 or not c})
    if repeated or len(set(chosen)) != len(chosen):
        raise ValueError(f"{path}: value columns need unique, non-empty header names")
    index = [header.index(c) for c in chosen]
    values = np.empty((len(body), len(index)))
    for n, (line, r) in enumerate(body):
        for m, j in enumerate(index):
            try:
                v = float(r[j])
            except ValueError:
                raise ValueError(
                    f"{path} line {line} column {chosen[m]!r} is not a number: {r[j]!r}"
                ) from None
            if not abs(v) <= FLOAT32_MAX:
                what = "is not finite" if not math.isfinite(v) else "is beyond float32 range"
                raise ValueError(
                    f"{path} line {line} column {chosen[m]!r} {what}: {r[j].strip()!r} (the "
                    f"engine computes in float32: |value| <= {FLOAT32_MAX:.8g})"
                )
            values[n, m] = v

    times = None
    if time_column is not None:
        t = header.index(time_column)
        times = np.empty(len(body))
        for n, (line, r) in enumerate(body):
            try:
                times[n] = parse_timestamp(r[t])
            except ValueError:
                if not auto_time:
                    raise ValueError(
                        f"{path} line {line} column {time_column!r} is not a timestamp: "
                        f"{r[t]!r} (use epoch seconds, YYYY-MM-DD HH:MM:SS or ISO 8601)"
                    ) from None
                notes.append(
                    f"column {time_column!r} line {line} is not a timestamp ({r[t]!r}); "
                    "the rows are used in file order"
                )
                times, time_column = None, None
                break
    if stream_column is None:
        groups = {"": np.arange(len(body))}
    else:
        s = header.index(stream_column)
        ids: dict[str, list[int]] = {}
        for n, (_, r) in enumerate(body):
            ids.setdefault(r[s].strip(), []).append(n)
        groups = {k: np.asarray(v) for k, v in ids.items()}
    series = []
    reordered = 0
    for rows_of in groups.values():
        if times is not None:
            order = np.argsort(times[rows_of], kind="stable")
            reordered += int(np.any(order != np.arange(len(order))))
            rows_of = rows_of[order]
        series.append(values[rows_of])
    if reordered:
        which = "the rows" if stream_column is None else f"the rows of {reordered} stream(s)"
        notes.append(f"{which} were not in time order; sorted by {time_column!r}")
    return CsvSeries(
        series=tuple(series),
        names=tuple(chosen),
        streams=tuple(groups),
        time_column=time_column,
        notes=tuple(notes),
    )


def load_csv(path: str | Path, value_columns: Sequence[str] | None = None):
    """Read a CSV with a header row; return `(values (T, F) float64, column names)`.

    The rows of one stream, in time order, as `read_csv` reads them (`timestamp,value` from NAB
    gives just `value`). Raise ValueError for unknown columns, bad cells in chosen columns, or
    no data.
    """
    found = read_csv(path, value_columns)
    return found.series[0], found.names


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def train_scoring_forecaster(
    series: Sequence[np.ndarray],
    config: TrainConfig | None = None,
    spec: AnomalySpec | None = None,
    progress: Callable[[EpochStats], None] | None = None,
    feature_names: Sequence[str] | None = None,
    metadata: dict | None = None,
) -> tuple[Model, TrainReport]:
    """Train a forecaster the engine serves with anomaly scores and alerts.

    Each series is normalised online, per stream, exactly as the engine will normalise a stream
    (`engine.anomaly.normalise_series`), its first `spec.probation // 3` readings (normalised by
    a handful of samples, and never scored) are left out, and the model's metadata gets the
    "anomaly" section that makes `StreamEngine` normalise, score and alert with `spec`.
    """
    from engine.anomaly import AnomalySpec, normalise_series

    config = config or TrainConfig()
    config.validate()
    data = _as_series(series)
    spec = spec or AnomalySpec(features=data[0].shape[1])
    if spec.features != data[0].shape[1]:
        raise ValueError(f"spec has {spec.features} features, the series {data[0].shape[1]}")
    skip = spec.probation // 3
    normalised, units = [], []
    for s in data:
        z, shift, scale = normalise_series(s, spec)
        normalised.append(z[skip:])
        units.append(np.concatenate([s, shift, scale], axis=1)[skip:])
    extra = {
        "input": "per-stream online-normalised readings (engine.anomaly.normalise_batch)",
        "dropped_leading_readings": skip,
        # StreamEngine rebuilds its scorer from this: AnomalySpec(**metadata["anomaly"]).
        "anomaly": spec.to_dict(),
    }
    return _fit(normalised, units, config, progress, feature_names, {**(metadata or {}), **extra})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rnnstream train` options."""
    d = TrainConfig()
    parser.add_argument("--csv", required=True, help="CSV file with a header row")
    parser.add_argument(
        "--value-columns",
        default=None,
        help="comma-separated columns to model (default: every column whose cells are all "
        "numbers, except the time and stream columns; a column mixing numbers and other cells "
        "is an error)",
    )
    parser.add_argument(
        "--time-column",
        default=None,
        help="column of timestamps (epoch seconds, YYYY-MM-DD HH:MM:SS or ISO 8601) that puts "
        "each stream's rows in time order (default: a first column named like timestamp, time, "
        "date or index, or a column named timestamp, time, datetime or date; without one, or "
        "if its cells do not all parse, file order)",
    )
    parser.add_argument(
        "--stream-column",
        default=None,
        help="column of stream ids: each stream's rows are a series of their own, normalised "
        "and windowed apart, as the engine keeps streams apart (default: one stream)",
    )
    parser.add_argument("--cell", choices=CELLS, default=d.cell, help="recurrent cell")
    parser.add_argument(
        "--nonlinearity", choices=NONLINEARITIES, default=d.nonlinearity, help="rnn cell only"
    )
    parser.add_argument("--hidden", type=int, default=d.hidden_size, help="hidden units")
    parser.add_argument("--layers", type=int, default=d.num_layers, help="stacked layers")
    parser.add_argument(
        "--epochs", type=int, default=d.epochs, help="passes over the training windows"
    )
    parser.add_argument(
        "--min-steps",
        type=int,
        default=d.min_steps,
        help="fewest optimiser steps in all: when back-to-back windows give fewer minibatches "
        "over all epochs, windows overlap (start every N < seq-len rows, down to every row), so "
        "a short series is still trained enough; 0 keeps them back to back",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many epochs without a lower validation loss (0: run all epochs)",
    )
    parser.add_argument("--seq-len", type=int, default=d.seq_len, help="steps per window (BPTT)")
    parser.add_argument("--batch", type=int, default=d.batch_size, help="windows per minibatch")
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    parser.add_argument(
        "--clip",
        type=float,
        default=d.clip_norm,
        help="gradient norm cap (positive and finite; clipping is always on)",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=d.validation_fraction,
        help="share of each series' tail held out to pick the best epoch and to compare the "
        "model with the last-value forecast",
    )
    parser.add_argument(
        "--burn-in", type=int, default=d.burn_in, help="leading window steps left out of the loss"
    )
    parser.add_argument(
        "--no-scoring",
        action="store_true",
        help="train on the raw readings (global scaling); the model then gets no anomaly "
        "scores or alerts. By default each series is normalised per stream online, as the "
        "engine does, and the model scores anomalies like the built-in one",
    )
    parser.add_argument("--out", required=True, help="model file to write (.npz)")
    parser.add_argument("--quiet", action="store_true", help="do not print per-epoch progress")


def run(args: argparse.Namespace) -> int:
    """Train on the CSV and write the model file."""
    import sys

    from engine.anomaly import AnomalySpec
    from engine.cli import UserError

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    path = Path(args.csv)
    if not path.is_file():
        raise UserError(f"no such CSV file: {path}")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'model.npz'}")
    if not out.parent.is_dir():
        raise UserError(f"output directory does not exist: {out.parent}")
    columns = None
    if args.value_columns:
        columns = [c.strip() for c in args.value_columns.split(",") if c.strip()]
    try:
        config = TrainConfig(
            cell=args.cell,
            hidden_size=args.hidden,
            num_layers=args.layers,
            seq_len=args.seq_len,
            batch_size=args.batch,
            epochs=args.epochs,
            lr=args.lr,
            clip_norm=args.clip,
            seed=args.seed,
            validation_fraction=args.validation_fraction,
            nonlinearity=args.nonlinearity,
            burn_in=args.burn_in,
            min_steps=args.min_steps,
            patience=args.patience,
        )
        config.validate()
        found = read_csv(path, columns, args.time_column, args.stream_column)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for note in found.notes:
        say(f"note: {note}")

    # Scoring drops each stream's first readings (normalised by a handful of samples).
    skip = 0 if args.no_scoring else AnomalySpec().probation // 3
    need = config.min_series_length() + skip
    why = f"--seq-len {config.seq_len} needs at least {need}" + (
        ""
        if args.no_scoring
        else f" ({need - skip}, plus the first {skip} readings, which only warm up the "
        "online normalisation)"
    )
    series, streams = [], []
    for stream, values in zip(found.streams, found.series, strict=True):
        if len(values) >= need:
            series.append(values)
            streams.append(stream)
        elif args.stream_column:
            say(f"note: stream {stream!r} has {len(values)} rows, fewer than {need}; not used")
    if not series:
        have = (
            f"no stream in {path} has enough rows"
            if args.stream_column
            else f"{path} has {len(found.series[0])} rows"
        )
        raise UserError(f"{have} but {why}; lower --seq-len or --validation-fraction")

    rows = sum(len(s) for s in series)
    ordered = f" in order of {found.time_column!r}" if found.time_column else " in file order"
    streams_text = f" in {len(series)} streams" if args.stream_column else ""
    say(
        f"training {config.cell} {config.num_layers}x{config.hidden_size} on {rows} rows"
        f"{streams_text} of {', '.join(found.names)}{ordered}"
    )
    trainer = train_forecaster if args.no_scoring else train_scoring_forecaster
    model, report = trainer(
        series,
        config,
        progress=None if args.quiet else lambda stats: say(format_epoch(stats)),
        feature_names=found.names,
        metadata={"source_csv": path.name}
        | ({"streams": streams, "stream_column": args.stream_column} if args.stream_column else {})
        | ({"time_column": found.time_column} if found.time_column else {}),
    )
    model.save(out)
    val = report.best_validation_loss
    say(
        f"wrote {out} (best epoch {report.best_epoch} of {len(report.history)}, "
        f"{report.steps} steps, windows every {report.window_stride} rows, validation loss "
        f"{'-' if val is None else f'{val:.5g}'}, {_duration(report.elapsed)})"
    )
    for line in compare_with_last_value(report, found.names):
        say(line)
    return 0


def compare_with_last_value(report: TrainReport, names: Sequence[str]) -> list[str]:
    """Return lines comparing the model's validation error with the last-value forecast's."""
    if report.validation_mae is None or report.last_value_mae is None:
        return ["no validation rows, so no comparison with the last-value forecast"]
    pairs = list(zip(names, report.validation_mae, report.last_value_mae, strict=True))
    lines = [
        "validation one-step mean absolute error, in the stream's units: "
        + ", ".join(f"{n} model {m:.5g} vs last value {v:.5g}" for n, m, v in pairs)
    ]
    worse = [n for n, m, v in pairs if not m < v]
    if worse:
        lines.append(
            f"warning: the model does NOT beat the last-value forecast (x[t+1] = x[t]) on "
            f"{', '.join(worse)}; try more --epochs or --min-steps, another --cell or "
            "--hidden, or more data"
        )
    else:
        lines.append("the model beats the last-value forecast on every column")
    return lines


__all__ = [
    "Adam",
    "CsvSeries",
    "EpochStats",
    "TrainConfig",
    "TrainReport",
    "add_arguments",
    "build_model",
    "clip_grad_norm",
    "compare_with_last_value",
    "forward",
    "init_params",
    "load_csv",
    "loss_and_gradients",
    "params_from_model",
    "read_csv",
    "run",
    "train_forecaster",
    "train_scoring_forecaster",
]
