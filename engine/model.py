"""Recurrent model weights, their `.npz` file format, fingerprint and converters from PyTorch.

A `Model` is an immutable description of one stacked RNN / GRU / LSTM with an optional linear
head and optional input / output scaling. Its arrays keep PyTorch's layout (gate order LSTM
i,f,g,o; GRU r,z,n) as float32, C-contiguous and read-only, so the fingerprint computed once stays
true for the life of the object. `engine.packed` re-lays the weights out for the kernels.

The file format is one `.npz` (no pickle) holding every array under a PyTorch-like key plus a
`header` entry: UTF-8 JSON stored as a uint8 array. See `Model.save` and `Model.load`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from engine.files import write_npz_atomically

__all__ = ["CELLS", "FORMAT", "FORMAT_VERSION", "LayerWeights", "Model"]

FORMAT = "rnnstream-model"
FORMAT_VERSION = 1
# cell -> number of gate blocks stacked in weight_ih / weight_hh (PyTorch's G)
CELLS: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}
NONLINEARITIES = ("tanh", "relu")
SCALING_FIELDS = ("input_mean", "input_std", "output_mean", "output_std")

# a PyTorch RNN parameter name, optionally prefixed by the owning module's path ("rnn.")
_RNN_KEY = re.compile(
    r"^(?P<prefix>.*?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"_l(?P<layer>\d+)(?P<reverse>_reverse)?$"
)
_BIDIRECTIONAL_MSG = (
    "bidirectional RNNs are not supported: the backward direction reads a sequence from its "
    "end, and a streaming step cannot look ahead to readings that have not arrived"
)
_PROJ_MSG = "LSTM with proj_size > 0 is not supported: hidden-state projections are unsupported"


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """One layer's PyTorch-layout weights: `gates = W_ih x + b_ih + W_hh h + b_hh`.

    Shapes: weight_ih (G*H, I_k), weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,), with G the
    gate count of the cell and I_k the layer's input width. `Model` validates and freezes them.
    Compared by identity (eq=False) because `==` on arrays has no single truth value.
    """

    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray


@dataclass(frozen=True, eq=False)
class Model:
    """An immutable stacked RNN / GRU / LSTM with optional linear head and scaling.

    The cell sees `(x - input_mean) / input_std`; the output (head output, or the top layer's
    hidden state without a head) is reported as `y * output_std + output_mean`. Every array is
    float32, C-contiguous and read-only after construction. Models compare by identity; compare
    `fingerprint` to test whether two models hold the same weights.
    """

    cell: str
    input_size: int
    hidden_size: int
    layers: tuple[LayerWeights, ...]
    nonlinearity: str = "tanh"
    head_weight: np.ndarray | None = None
    head_bias: np.ndarray | None = None
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    output_mean: np.ndarray | None = None
    output_std: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"cell: expected one of 'rnn', 'gru', 'lstm', got {self.cell!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {self.nonlinearity!r}")
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(
                f"nonlinearity: only cell 'rnn' takes 'relu'; {self.cell} has fixed gate "
                f"activations, so nonlinearity must stay 'tanh', got {self.nonlinearity!r}"
            )
        in_size = _positive_int(self.input_size, "input_size")
        hidden = _positive_int(self.hidden_size, "hidden_size")
        _set(self, "input_size", in_size)
        _set(self, "hidden_size", hidden)
        _set(self, "layers", self._checked_layers(in_size, hidden))

        if (self.head_weight is None) != (self.head_bias is None):
            raise ValueError(
                "head_weight, head_bias: give both or neither "
                "(a Linear without bias has head_bias = zeros)"
            )
        out_size = hidden
        if self.head_weight is not None:
            weight = _float32(self.head_weight, "head_weight")
            if weight.ndim != 2 or weight.shape[1] != hidden or weight.shape[0] == 0:
                raise ValueError(
                    f"head_weight: expected shape (output_size, {hidden}) "
                    f"= (output_size, hidden_size) with output_size > 0, got {weight.shape}"
                )
            out_size = weight.shape[0]
            _set(self, "head_weight", _checked(weight, "head_weight", (out_size, hidden)))
            _set(
                self,
                "head_bias",
                _checked(self.head_bias, "head_bias", (out_size,), ("output_size",)),
            )

        for side, size in (("input", in_size), ("output", out_size)):
            mean, std = getattr(self, f"{side}_mean"), getattr(self, f"{side}_std")
            if (mean is None) != (std is None):
                raise ValueError(f"{side}_mean, {side}_std: give both or neither")
            if mean is None:
                continue
            _set(self, f"{side}_mean", _checked(mean, f"{side}_mean", (size,), (f"{side}_size",)))
            std = _checked(std, f"{side}_std", (size,), (f"{side}_size",))
            if not (std > 0).all():
                bad = int(np.flatnonzero(~(std > 0))[0])
                raise ValueError(
                    f"{side}_std: every value must be > 0, got {float(std[bad])} at index {bad}"
                )
            _set(self, f"{side}_std", std)

        _set(self, "feature_names", _checked_feature_names(self.feature_names, in_size))
        _set(self, "metadata", _checked_metadata(self.metadata))
        if self.metadata.get("anomaly") is not None:
            _check_anomaly_section(self.metadata["anomaly"], in_size, out_size)

    def _checked_layers(self, in_size: int, hidden: int) -> tuple[LayerWeights, ...]:
        layers = self.layers
        if isinstance(layers, LayerWeights) or not isinstance(layers, Sequence):
            raise ValueError(
                f"layers: expected a tuple of LayerWeights, got {type(layers).__name__}"
            )
        if len(layers) == 0:
            raise ValueError("layers: expected at least one layer, got 0")
        gates = CELLS[self.cell]
        rows, rows_txt = gates * hidden, f"{gates}*hidden_size" if gates > 1 else "hidden_size"
        checked = []
        for k, layer in enumerate(layers):
            name = f"layers[{k}]"
            if not isinstance(layer, LayerWeights):
                raise ValueError(f"{name}: expected LayerWeights, got {type(layer).__name__}")
            cols, cols_txt = (in_size, "input_size") if k == 0 else (hidden, "hidden_size")
            checked.append(
                LayerWeights(
                    weight_ih=_checked(
                        layer.weight_ih, f"{name}.weight_ih", (rows, cols), (rows_txt, cols_txt)
                    ),
                    weight_hh=_checked(
                        layer.weight_hh,
                        f"{name}.weight_hh",
                        (rows, hidden),
                        (rows_txt, "hidden_size"),
                    ),
                    bias_ih=_checked(layer.bias_ih, f"{name}.bias_ih", (rows,), (rows_txt,)),
                    bias_hh=_checked(layer.bias_hh, f"{name}.bias_hh", (rows,), (rows_txt,)),
                )
            )
        return tuple(checked)

    # ------------------------------------------------------------------ properties

    @property
    def num_layers(self) -> int:
        """Return the number of stacked layers."""
        return len(self.layers)

    @property
    def gates(self) -> int:
        """Return the gate blocks per layer: 1 (rnn), 3 (gru), 4 (lstm)."""
        return CELLS[self.cell]

    @property
    def has_head(self) -> bool:
        """Return whether a linear head maps the top hidden state to the output."""
        return self.head_weight is not None

    @property
    def output_size(self) -> int:
        """Return the output width: the head's rows, or hidden_size without a head."""
        return self.head_weight.shape[0] if self.head_weight is not None else self.hidden_size

    @property
    def state_size(self) -> int:
        """Return the float32 values of recurrent state one stream needs (h, and c for lstm)."""
        return self.num_layers * self.hidden_size * (2 if self.cell == "lstm" else 1)

    @property
    def num_parameters(self) -> int:
        """Return the number of weights and biases (layers and head, not scaling)."""
        total = sum(
            a.size
            for lw in self.layers
            for a in (lw.weight_ih, lw.weight_hh, lw.bias_ih, lw.bias_hh)
        )
        if self.head_weight is not None:
            total += self.head_weight.size + self.head_bias.size
        return int(total)

    @cached_property
    def fingerprint(self) -> str:
        """Return the sha256 hex digest of the header (minus metadata) and every array.

        Covers each array's key, dtype, shape and bytes, so two models with the same fingerprint
        step the same states to the same outputs; what a scoring model does around the step
        comes from its metadata, which `scoring_fingerprint` covers. Cached: the arrays are
        read-only.
        """
        digest = hashlib.sha256()
        digest.update(_canonical_json(self._identity()).encode("utf-8"))
        for key, array in self._arrays().items():
            digest.update(f"\n{key} {array.dtype.str} {array.shape}\n".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    @cached_property
    def scoring_fingerprint(self) -> str | None:
        """Return the sha256 hex digest of the metadata's "anomaly" section (None without one).

        Normalisation and scoring take their constants from that section, so a snapshot of
        streams scored under one section means something else under another.
        """
        section = self.metadata.get("anomaly")
        if section is None:
            return None
        return hashlib.sha256(_canonical_json(section).encode("utf-8")).hexdigest()

    def _identity(self) -> dict[str, Any]:
        """Return the header fields that define the computation (everything but metadata)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cell": self.cell,
            "nonlinearity": self.nonlinearity,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "has_head": self.has_head,
            "output_size": self.output_size,
            "input_scaling": self.input_mean is not None,
            "output_scaling": self.output_mean is not None,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        """Return every array under its file key, in the canonical (fingerprint) order."""
        arrays: dict[str, np.ndarray] = {}
        for k, lw in enumerate(self.layers):
            arrays[f"weight_ih_l{k}"] = lw.weight_ih
            arrays[f"weight_hh_l{k}"] = lw.weight_hh
            arrays[f"bias_ih_l{k}"] = lw.bias_ih
            arrays[f"bias_hh_l{k}"] = lw.bias_hh
        if self.head_weight is not None:
            arrays["head.weight"] = self.head_weight
            arrays["head.bias"] = self.head_bias
        for name in SCALING_FIELDS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        return arrays

    def describe(self) -> str:
        """Return a one-line human summary: cell, sizes, layers, head, scaling, params.

        Memory per stream is the engine's to say (`engine.stream.bytes_per_stream`): it keeps
        more per stream than the recurrent state.
        """
        cell = f"rnn({self.nonlinearity})" if self.cell == "rnn" else self.cell
        plural = "layer" if self.num_layers == 1 else "layers"
        parts = [f"{cell} {self.input_size} -> {self.hidden_size} x {self.num_layers} {plural}"]
        if self.has_head:
            parts.append(f"linear head -> {self.output_size} outputs")
        else:
            parts.append(f"no head ({self.output_size} outputs = top hidden state)")
        scaled = [s for s in ("input", "output") if getattr(self, f"{s}_mean") is not None]
        if scaled:
            parts.append(" and ".join(scaled) + " scaling")
        parts.append(f"{self.num_parameters:,} params")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"Model({self.describe()}, fingerprint={self.fingerprint[:12]})"

    # ------------------------------------------------------------------ file format

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to `path` as one `.npz` atomically (temp file, fsync, rename)."""
        path = Path(path)
        header = {**self._identity(), "metadata": self.metadata, "fingerprint": self.fingerprint}
        arrays = self._arrays()
        arrays["header"] = np.frombuffer(_canonical_json(header).encode("utf-8"), dtype=np.uint8)
        write_npz_atomically(path, arrays, mode=0o644)  # a model is for others to read too

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Read and fully validate a model file written by `save`.

        Raise FileNotFoundError if `path` does not exist and ValueError naming `path` if it is
        truncated, not a model file, of an unknown format version, has missing / unexpected /
        misshapen arrays, or its weights do not match the header fingerprint.
        """
        path = Path(path)
        arrays = _read_npz(path)
        _refuse_torch_archive(path, arrays)
        header = _read_header(path, arrays.pop("header", None))
        cell = header["cell"]
        gates, in_size, hidden = CELLS[cell], header["input_size"], header["hidden_size"]
        out_size = header["output_size"]
        if not header["has_head"] and out_size != hidden:
            raise ValueError(
                f"{path}: header says no head but output_size {out_size} != hidden_size {hidden}"
            )

        if 4 * header["num_layers"] > len(arrays):  # before listing the arrays of every layer
            raise ValueError(
                f"{path}: header says {header['num_layers']} layers, but the file holds "
                f"{len(arrays)} arrays, not 4 a layer"
            )
        expected: dict[str, tuple[int, ...]] = {}
        for k in range(header["num_layers"]):
            cols = in_size if k == 0 else hidden
            expected[f"weight_ih_l{k}"] = (gates * hidden, cols)
            expected[f"weight_hh_l{k}"] = (gates * hidden, hidden)
            expected[f"bias_ih_l{k}"] = (gates * hidden,)
            expected[f"bias_hh_l{k}"] = (gates * hidden,)
        if header["has_head"]:
            expected["head.weight"] = (out_size, hidden)
            expected["head.bias"] = (out_size,)
        for side, size in (("input", in_size), ("output", out_size)):
            if header[f"{side}_scaling"]:
                expected[f"{side}_mean"] = (size,)
                expected[f"{side}_std"] = (size,)

        missing = [key for key in expected if key not in arrays]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
        unexpected = sorted(set(arrays) - set(expected))
        if unexpected:
            raise ValueError(f"{path}: unexpected array(s) {', '.join(unexpected)}")
        for key, shape in expected.items():
            array = arrays[key]
            if array.dtype != np.float32:
                raise ValueError(f"{path}: array {key!r} has dtype {array.dtype}, expected float32")
            if array.shape != shape:
                raise ValueError(f"{path}: array {key!r} has shape {array.shape}, expected {shape}")
            _freeze_owned(array)

        try:
            model = cls(
                cell=cell,
                input_size=in_size,
                hidden_size=hidden,
                nonlinearity=header["nonlinearity"],
                layers=tuple(
                    LayerWeights(
                        weight_ih=arrays[f"weight_ih_l{k}"],
                        weight_hh=arrays[f"weight_hh_l{k}"],
                        bias_ih=arrays[f"bias_ih_l{k}"],
                        bias_hh=arrays[f"bias_hh_l{k}"],
                    )
                    for k in range(header["num_layers"])
                ),
                head_weight=arrays.get("head.weight"),
                head_bias=arrays.get("head.bias"),
                **{name: arrays.get(name) for name in SCALING_FIELDS},
                feature_names=header["feature_names"],
                metadata=header["metadata"],
            )
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if model.fingerprint != header["fingerprint"]:
            raise ValueError(
                f"{path}: weights do not match the header fingerprint: file corrupted?"
            )
        return model

    # ------------------------------------------------------------------ constructors

    @classmethod
    def random(
        cls,
        cell: str,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        output_size: int | None = None,
        nonlinearity: str = "tanh",
        seed: int = 0,
    ) -> Model:
        """Build a model with PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H)), from `seed`.

        Add a linear head (same init, fan-in H) when `output_size` is given.
        """
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of 'rnn', 'gru', 'lstm', got {cell!r}")
        hidden = _positive_int(hidden_size, "hidden_size")
        in_size = _positive_int(input_size, "input_size")
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(hidden)
        rows = CELLS[cell] * hidden

        def uniform(*shape: int) -> np.ndarray:
            return rng.uniform(-bound, bound, size=shape).astype(np.float32)

        layers = tuple(
            LayerWeights(
                weight_ih=uniform(rows, in_size if k == 0 else hidden),
                weight_hh=uniform(rows, hidden),
                bias_ih=uniform(rows),
                bias_hh=uniform(rows),
            )
            for k in range(_positive_int(num_layers, "num_layers"))
        )
        head_weight = head_bias = None
        if output_size is not None:
            out = _positive_int(output_size, "output_size")
            head_weight, head_bias = uniform(out, hidden), uniform(out)
        return cls(
            cell=cell,
            input_size=in_size,
            hidden_size=hidden,
            layers=layers,
            nonlinearity=nonlinearity,
            head_weight=head_weight,
            head_bias=head_bias,
            metadata={"init": "random", "seed": seed},
        )

    @classmethod
    def from_torch(
        cls,
        rnn: Any,
        head: Any = None,
        *,
        scaling: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        metadata: dict | None = None,
    ) -> Model:
        """Copy the weights of a `torch.nn.RNN` / `GRU` / `LSTM` and an optional `nn.Linear` head.

        Any num_layers, batch_first and dropout are accepted (dropout only acts in training);
        bias=False gives zero biases. Bidirectional RNNs and LSTM proj_size > 0 raise ValueError.
        `scaling` maps any of input_mean, input_std, output_mean, output_std to arrays.
        """
        import torch  # imported here only: torch is an optional dependency

        nn = torch.nn
        if not isinstance(rnn, (nn.RNN, nn.GRU, nn.LSTM)):
            raise TypeError(f"rnn: expected torch.nn.RNN, GRU or LSTM, got {type(rnn).__name__}")
        if rnn.bidirectional:
            raise ValueError(_BIDIRECTIONAL_MSG)
        if getattr(rnn, "proj_size", 0) > 0:
            raise ValueError(_PROJ_MSG)
        modes = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu")}
        modes |= {"GRU": ("gru", "tanh"), "LSTM": ("lstm", "tanh")}
        if rnn.mode not in modes:
            raise ValueError(f"rnn: unsupported mode {rnn.mode!r}")
        cell, nonlinearity = modes[rnn.mode]
        hidden = rnn.hidden_size
        rows = CELLS[cell] * hidden

        def array(tensor: Any) -> np.ndarray:
            return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()

        def bias(name: str) -> np.ndarray:
            if not rnn.bias:
                return np.zeros(rows, np.float32)
            return array(getattr(rnn, name))

        layers = tuple(
            LayerWeights(
                weight_ih=array(getattr(rnn, f"weight_ih_l{k}")),
                weight_hh=array(getattr(rnn, f"weight_hh_l{k}")),
                bias_ih=bias(f"bias_ih_l{k}"),
                bias_hh=bias(f"bias_hh_l{k}"),
            )
            for k in range(rnn.num_layers)
        )
        head_weight = head_bias = None
        if head is not None:
            if not isinstance(head, nn.Linear):
                raise TypeError(f"head: expected torch.nn.Linear, got {type(head).__name__}")
            if head.in_features != hidden:
                raise ValueError(
                    f"head: Linear in_features is {head.in_features} but the RNN's hidden_size "
                    f"is {hidden}; the head must be applied to the RNN's output"
                )
            head_weight = array(head.weight)
            head_bias = (
                np.zeros(head.out_features, np.float32) if head.bias is None else array(head.bias)
            )
        return cls(
            cell=cell,
            input_size=rnn.input_size,
            hidden_size=hidden,
            layers=layers,
            nonlinearity=nonlinearity,
            head_weight=head_weight,
            head_bias=head_bias,
            **_scaling_kwargs(scaling),
            feature_names=None if feature_names is None else tuple(feature_names),
            metadata={} if metadata is None else metadata,
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        cell: str | None = None,
        nonlinearity: str = "tanh",
        head_prefix: str | None = None,
        rnn_prefix: str | None = None,
        scaling: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        metadata: dict | None = None,
    ) -> Model:
        """Build a model from a dict of tensors / arrays with PyTorch RNN key names.

        Keys may carry a module prefix such as `rnn.` (found automatically when only one RNN is
        present, else pass `rnn_prefix`). The cell is inferred from the gate count
        (weight_ih_l0 rows / hidden: 4 lstm, 3 gru, 1 rnn) unless given; the layer count from the
        keys; missing biases mean bias=False. A state dict cannot tell tanh from relu: pass
        `nonlinearity` for a relu rnn. The head is `<head_prefix>weight` / `<head_prefix>bias`,
        or, without `head_prefix`, the single other 2-D `*weight` of shape (O, hidden), unless it
        could as well be an input layer feeding the RNN: listed before the RNN (a module's state
        dict follows the order its layers were created in), or without a bias when input_size ==
        hidden_size (an nn.Embedding's shape); then ValueError asks for `head_prefix`. Entries
        that are neither the RNN nor the head raise ValueError, because ignoring a layer would
        silently compute a different function. `_reverse` (bidirectional) and `weight_hr_`
        (proj_size) keys are refused. Weights cannot show what forward does between them (an
        activation, say): converting a state dict asserts that it is the RNN, then the head.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
        entries = {str(key): value for key, value in state_dict.items()}
        prefix = _find_rnn_prefix(entries, rnn_prefix)

        rnn_keys: dict[str, tuple[str, int]] = {}
        for key in entries:
            match = _RNN_KEY.match(key)
            if match is None or match["prefix"] != prefix:
                continue
            if match["reverse"]:
                raise ValueError(f"{key}: {_BIDIRECTIONAL_MSG}")
            if match["kind"] == "weight_hr":
                raise ValueError(f"{key}: {_PROJ_MSG}")
            rnn_keys[key] = (match["kind"], int(match["layer"]))

        num_layers = 0
        while f"{prefix}weight_ih_l{num_layers}" in entries:
            num_layers += 1
        for key, (_kind, layer) in rnn_keys.items():
            if layer >= num_layers:
                raise ValueError(f"{key}: found, but {prefix}weight_ih_l{num_layers} is missing")

        w_ih0 = _to_numpy(entries[f"{prefix}weight_ih_l0"], f"{prefix}weight_ih_l0")
        w_hh0 = _to_numpy(entries.get(f"{prefix}weight_hh_l0"), f"{prefix}weight_hh_l0")
        if w_ih0.ndim != 2 or w_hh0.ndim != 2:
            raise ValueError(
                f"{prefix}weight_ih_l0, {prefix}weight_hh_l0: expected 2-D arrays, "
                f"got shapes {w_ih0.shape} and {w_hh0.shape}"
            )
        hidden, in_size = w_hh0.shape[1], w_ih0.shape[1]
        rows = w_ih0.shape[0]
        if cell is None:
            by_gates = {gates: name for name, gates in CELLS.items()}
            if hidden == 0 or rows % hidden or rows // hidden not in by_gates:
                raise ValueError(
                    f"{prefix}weight_ih_l0: {rows} rows is not 1, 3 or 4 times hidden_size "
                    f"{hidden}, so the cell cannot be inferred; pass cell"
                )
            cell = by_gates[rows // hidden]
        elif cell not in CELLS:
            raise ValueError(f"cell: expected one of 'rnn', 'gru', 'lstm', got {cell!r}")
        elif rows != CELLS[cell] * hidden:
            raise ValueError(
                f"{prefix}weight_ih_l0: cell {cell!r} with hidden_size {hidden} needs "
                f"{CELLS[cell] * hidden} rows, got {rows}"
            )

        layers = []
        for k in range(num_layers):
            names = {kind: f"{prefix}{kind}_l{k}" for kind in ("bias_ih", "bias_hh")}
            present = [name for name in names.values() if name in entries]
            if len(present) == 1:
                raise ValueError(f"{present[0]}: found without its pair; give both biases or none")
            biases = {
                kind: _to_numpy(entries[name], name) if present else np.zeros(rows, np.float32)
                for kind, name in names.items()
            }
            layers.append(
                LayerWeights(
                    weight_ih=_to_numpy(
                        entries[f"{prefix}weight_ih_l{k}"], f"{prefix}weight_ih_l{k}"
                    ),
                    weight_hh=_to_numpy(
                        entries.get(f"{prefix}weight_hh_l{k}"), f"{prefix}weight_hh_l{k}"
                    ),
                    bias_ih=biases["bias_ih"],
                    bias_hh=biases["bias_hh"],
                )
            )

        others = {key: value for key, value in entries.items() if key not in rnn_keys}
        keys = list(entries)  # a module's state dict lists its layers in creation order
        before_rnn = set(keys[: keys.index(f"{prefix}weight_ih_l0")]) - set(rnn_keys)
        head_weight, head_bias, head_keys = _find_head(
            others, head_prefix, hidden, in_size=in_size, before_rnn=before_rnn
        )
        leftover = sorted(set(others) - head_keys)
        if leftover:
            raise ValueError(
                f"state dict has entries that are neither the RNN nor its head: "
                f"{', '.join(leftover)}; a model is one RNN optionally followed by one Linear"
            )
        return cls(
            cell=cell,
            input_size=in_size,
            hidden_size=hidden,
            layers=tuple(layers),
            nonlinearity=nonlinearity,
            head_weight=head_weight,
            head_bias=head_bias,
            **_scaling_kwargs(scaling),
            feature_names=None if feature_names is None else tuple(feature_names),
            metadata={} if metadata is None else metadata,
        )


# ---------------------------------------------------------------------- helpers


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # the dataclass is frozen; this is construction


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _is_frozen_float32(array: np.ndarray) -> bool:
    """Return whether `array` already is float32, C-contiguous and immutable down to its data."""
    if array.dtype != np.float32 or not array.flags.c_contiguous or array.flags.writeable:
        return False
    base = array.base
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return base is None or isinstance(base, bytes)


def _freeze_owned(array: np.ndarray) -> None:
    """Make an array this module owns read-only, including the buffer it views."""
    while isinstance(array, np.ndarray):
        array.setflags(write=False)
        array = array.base


def _float32(value: Any, name: str) -> np.ndarray:
    """Return `value` as a frozen float32 C-contiguous array, copying unless already frozen."""
    if value is None:
        raise ValueError(f"{name}: missing (None)")
    if hasattr(value, "detach"):  # a torch tensor, read without importing torch here
        value = value.detach().cpu().float().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected an array of numbers ({exc})") from exc
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected an array of real numbers, got dtype {array.dtype}")
    if not _is_frozen_float32(array):
        with np.errstate(over="ignore"):  # float64 beyond float32 range -> inf, reported below
            array = np.array(array, dtype=np.float32, order="C", copy=True)
        array.setflags(write=False)
    return array


def _checked(
    value: Any, name: str, shape: tuple[int, ...], symbols: tuple[str, ...] | None = None
) -> np.ndarray:
    array = _float32(value, name)
    if array.shape != shape:
        meaning = f" = ({', '.join(symbols)}{',' if len(symbols) == 1 else ''})" if symbols else ""
        raise ValueError(f"{name}: expected shape {shape}{meaning}, got {array.shape}")
    if not np.isfinite(array).all():
        flat = int(np.flatnonzero(~np.isfinite(array))[0])
        bad = tuple(int(i) for i in np.unravel_index(flat, array.shape))
        raise ValueError(f"{name}: values must be finite, got {array[bad]} at index {bad}")
    return array


def _checked_feature_names(names: Any, input_size: int) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"feature_names: expected a sequence of strings, got {names!r}")
    names = tuple(names)
    if len(names) != input_size:
        raise ValueError(
            f"feature_names: expected {input_size} names (input_size), got {len(names)}"
        )
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature_names: every name must be a non-empty string, got {name!r}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"feature_names: names must be unique, repeated: {', '.join(dupes)}")
    return names


def _checked_metadata(metadata: Any) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata: expected a dict, got {type(metadata).__name__}")
    try:
        # round trip so the in-memory model equals the one read back from its file
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata: must be JSON-serialisable ({exc})") from exc


def _check_anomaly_section(section: Any, input_size: int, output_size: int) -> None:
    """Raise ValueError unless `section` describes a scorer that can run around this model."""
    from engine.anomaly import AnomalySpec  # Numba's kernels: imported for a scoring model only

    try:
        spec = AnomalySpec.from_metadata(section)
    except ValueError as exc:
        raise ValueError(f"metadata 'anomaly': {exc}") from None
    if not input_size == output_size == spec.features:
        raise ValueError(
            f"metadata 'anomaly': declares an anomaly-scoring forecaster of {spec.features} "
            f"features, but the model maps {input_size} inputs to {output_size} outputs"
        )


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Return every array of the `.npz` at `path`, or raise ValueError if it is not one."""
    not_model = f"{path}: file is truncated or not a model file"
    errors = (ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)
    try:
        npz = np.load(path, allow_pickle=False)
    except errors as exc:
        # numpy's own text for a non-archive suggests unpickling it: never do that
        detail = str(exc) if isinstance(exc, zipfile.BadZipFile) else "not an .npz archive"
        raise ValueError(f"{not_model} ({detail})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{not_model} (a single .npy array, not an .npz archive)")
    with npz:
        try:
            return {name: npz[name] for name in npz.files}
        except (*errors, OSError) as exc:
            raise ValueError(f"{path}: file is truncated or corrupted ({exc})") from exc


def _refuse_torch_archive(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError saying to convert `path` first if torch.save wrote it.

    torch.save writes a zip archive, as numpy does for .npz, so numpy opens it; without this
    the user who passes their .pt file straight to `serve` or `reload` only hears that it has
    no 'header' entry.
    """
    if "header" in arrays or not any(name.endswith("data.pkl") for name in arrays):
        return
    raise ValueError(
        f"{path}: a PyTorch file (torch.save), not an rnnstream model file; convert it first: "
        f"rnnstream convert {path} --out model.npz"
    )


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "cell": str,
    "nonlinearity": str,
    "input_size": int,
    "hidden_size": int,
    "num_layers": int,
    "has_head": bool,
    "output_size": int,
    "input_scaling": bool,
    "output_scaling": bool,
    "feature_names": (list, type(None)),
    "metadata": dict,
    "fingerprint": str,
}


def _read_header(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None:
        raise ValueError(f"{path}: not a model file: it has no 'header' entry")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: not a model file: 'header' is not a uint8 byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a model file: header is not UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: not a model file: format is {found!r}, expected {FORMAT!r}")
    version = header.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: model format version {version!r} is not supported (this rnnstream reads "
            f"version {FORMAT_VERSION}); upgrade rnnstream or convert the model again"
        )
    for key, kind in _HEADER_TYPES.items():
        value = header.get(key)
        # bool is an int subclass: never accept it where a count is expected
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: header field {key!r} is invalid: {value!r}")
    if header["cell"] not in CELLS:
        raise ValueError(f"{path}: header field 'cell' is invalid: {header['cell']!r}")
    for key in ("input_size", "hidden_size", "num_layers", "output_size"):
        if header[key] <= 0:
            raise ValueError(f"{path}: header field {key!r} is invalid: {header[key]!r}")
    return header


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"{name}: missing from the state dict")
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _find_rnn_prefix(entries: Mapping[str, Any], rnn_prefix: str | None) -> str:
    if rnn_prefix is not None:
        for candidate in (rnn_prefix, f"{rnn_prefix}."):
            if f"{candidate}weight_ih_l0" in entries:
                return candidate
        raise ValueError(f"rnn_prefix {rnn_prefix!r}: no key {rnn_prefix}weight_ih_l0 found")
    prefixes = sorted(
        {m["prefix"] for key in entries if (m := _RNN_KEY.match(key)) and m["kind"] == "weight_ih"}
    )
    if not prefixes:
        raise ValueError(
            "no RNN weights found: expected keys like 'weight_ih_l0' "
            "(optionally prefixed, e.g. 'rnn.weight_ih_l0')"
        )
    if len(prefixes) > 1:
        shown = ", ".join(repr(p) for p in prefixes)
        raise ValueError(f"several RNNs found (key prefixes {shown}); pass rnn_prefix to pick one")
    return prefixes[0]


def _find_head(
    others: Mapping[str, Any],
    head_prefix: str | None,
    hidden: int,
    *,
    in_size: int,
    before_rnn: set[str],
) -> tuple[np.ndarray | None, np.ndarray | None, set[str]]:
    """Return (weight, bias, keys used) of the head among the non-RNN entries.

    Without `head_prefix`, refuse a lone candidate that may be an input layer instead: one listed
    before the RNN (`before_rnn`), or one without a bias shaped like an nn.Embedding feeding the
    RNN (possible when in_size == hidden). Its shape alone cannot tell, and taking an input layer
    for the head would compute a different function.
    """
    if head_prefix is not None:
        for candidate in (head_prefix, f"{head_prefix}."):
            if f"{candidate}weight" in others:
                prefix = candidate
                break
        else:
            raise ValueError(f"head_prefix {head_prefix!r}: no key {head_prefix}weight found")
    else:
        candidates = []
        for key, value in others.items():
            if key.endswith("weight"):
                shape = tuple(getattr(value, "shape", np.shape(value)))
                if len(shape) == 2 and shape[1] == hidden:
                    candidates.append(key[: -len("weight")])
        if not candidates:
            return None, None, set()
        if len(candidates) > 1:
            shown = ", ".join(f"{c}weight" for c in candidates)
            raise ValueError(f"several possible heads ({shown}); pass head_prefix to pick one")
        prefix = candidates[0]
        weight_key = f"{prefix}weight"
        if weight_key in before_rnn:
            why = "comes before the RNN's weights, so its layer was created before the RNN"
        elif f"{prefix}bias" not in others and in_size == hidden:
            why = (
                f"has no bias and input_size == hidden_size == {hidden}, so it has the shape of "
                "both a Linear(bias=False) head and an nn.Embedding"
            )
        else:
            why = None
        if why is not None:
            raise ValueError(
                f"{weight_key}: {why}, and may be an input layer feeding the RNN (an nn.Linear "
                f"or nn.Embedding), which a model cannot hold, rather than a head on its output; "
                f"if it is the head, pass head_prefix {prefix!r} (rnnstream convert "
                f"--head-prefix {prefix.rstrip('.')})"
            )
    weight = _to_numpy(others[f"{prefix}weight"], f"{prefix}weight")
    used = {f"{prefix}weight"}
    if f"{prefix}bias" in others:
        bias = _to_numpy(others[f"{prefix}bias"], f"{prefix}bias")
        used.add(f"{prefix}bias")
    else:  # nn.Linear(bias=False)
        bias = np.zeros(weight.shape[0] if weight.ndim else 0, np.float32)
    return weight, bias, used


def _scaling_kwargs(scaling: Mapping[str, Any] | None) -> dict[str, Any]:
    if scaling is None:
        return {}
    unknown = sorted(set(scaling) - set(SCALING_FIELDS))
    if unknown:
        raise ValueError(
            f"scaling: unknown key(s) {', '.join(unknown)}; expected {', '.join(SCALING_FIELDS)}"
        )
    return dict(scaling)
