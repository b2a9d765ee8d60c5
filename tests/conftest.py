"""Shared test helpers: PyTorch golden cases and seeded random models.

Use them as fixtures, or import the plain functions (`from conftest import random_model`):

- fixture `golden_case`: a test that takes this argument runs once per golden case
  (parametrised by `pytest_generate_tests` below), getting a `GoldenCase(name, model, X, Y_torch)`.
- fixture `golden_cases` / function `golden_cases()`: all 16 cases as a list of `GoldenCase`.
- fixture `random_model` / function `random_model(cell, layers, head, seed, nonlinearity, ...)`:
  a `Model` with PyTorch-like seeded random weights and optional input/output scaling.
- function `golden_arrays()`: the raw arrays of golden.npz (torch's final states, metadata).

`engine.model` is imported lazily so a broken model module fails only the tests that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.model import Model

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "golden.npz"
SHARED_DIR = Path(__file__).resolve().parents[1] / ".." / "shared"

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_LAYER_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class GoldenCase(NamedTuple):
    """One PyTorch golden case: the model, its (T, I) input and torch's (T, O) output."""

    name: str
    model: Model
    X: np.ndarray
    Y_torch: np.ndarray


class FakeClock:
    """A settable monotonic clock for the engine's `clock=` argument."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def random_rows(seed: int, n: int, inputs: int = 3) -> np.ndarray:
    """Return n seeded readings (n, inputs) float32 of scale 2."""
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, inputs)).astype(np.float32)


def all_states(engine: Any) -> dict[str, dict[str, np.ndarray]]:
    """Return copies of every live stream's state arrays, keyed by stream, in engine order."""
    return {s: engine.state_of(s) for s in engine.streams()}


@pytest.fixture
def context() -> Any:
    """A ZeroMQ context whose sockets are closed with linger 0 at the end of the test."""
    import zmq

    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def golden_arrays() -> dict[str, np.ndarray]:
    """Return every array stored in golden.npz, keyed as documented in make_golden.py."""
    with np.load(GOLDEN_PATH) as npz:
        return {key: npz[key] for key in npz.files}


def _parse_case_name(name: str) -> tuple[str, str, int, bool]:
    """Split 'rnn_relu_l2_nohead' into (cell, nonlinearity, layers, head)."""
    cell_spec, layers_spec, head_spec = name.rsplit("_", 2)
    cell, _, nonlinearity = cell_spec.partition("_")
    return cell, nonlinearity or "tanh", int(layers_spec.removeprefix("l")), head_spec == "head"


def _make_model(**fields: Any) -> Model:
    """Build a `Model` through its constructor (the one place that knows its signature)."""
    from engine.model import Model

    return Model(**fields)


def _layer_weights(
    weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray, bias_hh: np.ndarray
) -> Any:
    from engine.model import LayerWeights

    return LayerWeights(
        weight_ih=np.ascontiguousarray(weight_ih, dtype=np.float32),
        weight_hh=np.ascontiguousarray(weight_hh, dtype=np.float32),
        bias_ih=np.ascontiguousarray(bias_ih, dtype=np.float32),
        bias_hh=np.ascontiguousarray(bias_hh, dtype=np.float32),
    )


def golden_model(name: str, arrays: dict[str, np.ndarray] | None = None) -> Model:
    """Build the `Model` of golden case `name` from its stored PyTorch state dict."""
    arrays = golden_arrays() if arrays is None else arrays
    cell, nonlinearity, num_layers, head = _parse_case_name(name)
    prefix = f"{name}.rnn."
    layers = tuple(
        _layer_weights(*(arrays[f"{prefix}{kind}_l{k}"] for kind in _LAYER_KEYS))
        for k in range(num_layers)
    )
    weight_ih_l0 = arrays[f"{prefix}weight_ih_l0"]
    return _make_model(
        cell=cell,
        nonlinearity=nonlinearity,
        input_size=int(weight_ih_l0.shape[1]),
        hidden_size=int(weight_ih_l0.shape[0]) // _GATES[cell],
        layers=layers,
        head_weight=arrays[f"{name}.head.weight"] if head else None,
        head_bias=arrays[f"{name}.head.bias"] if head else None,
    )


def golden_cases() -> list[GoldenCase]:
    """Return all golden cases as `GoldenCase(name, Model, X (T, I), Y_torch (T, O))`."""
    arrays = golden_arrays()
    return [
        GoldenCase(
            name=str(name),
            model=golden_model(str(name), arrays),
            X=arrays[f"{name}.input"],
            Y_torch=arrays[f"{name}.output"],
        )
        for name in arrays["cases"]
    ]


def random_model(
    cell: str = "lstm",
    layers: int = 1,
    head: bool = True,
    seed: int = 0,
    nonlinearity: str = "tanh",
    *,
    input_size: int = 3,
    hidden_size: int = 8,
    output_size: int = 2,
    scaling: bool = False,
) -> Model:
    """Return a `Model` with seeded random float32 weights, initialised like PyTorch.

    Every recurrent weight and bias is uniform(-1/sqrt(H), 1/sqrt(H)) as in `nn.RNN/GRU/LSTM`;
    the head is `nn.Linear(H, output_size)`-like, uniform(-1/sqrt(H), 1/sqrt(H)). With `scaling`,
    input_mean/input_std and output_mean/output_std are set to seeded non-trivial values
    (std in [0.5, 3]). The same arguments always give the same model.
    """
    if cell not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(_GATES)}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    rows = _GATES[cell] * hidden_size

    def uniform(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    layer_weights = []
    for k in range(layers):
        in_k = input_size if k == 0 else hidden_size
        layer_weights.append(
            _layer_weights(
                uniform(rows, in_k), uniform(rows, hidden_size), uniform(rows), uniform(rows)
            )
        )
    head_weight = uniform(output_size, hidden_size) if head else None
    head_bias = uniform(output_size) if head else None

    scale_fields: dict[str, np.ndarray] = {}
    if scaling:
        out = output_size if head else hidden_size
        scale_fields = {
            "input_mean": rng.normal(0.0, 2.0, input_size).astype(np.float32),
            "input_std": rng.uniform(0.5, 3.0, input_size).astype(np.float32),
            "output_mean": rng.normal(0.0, 2.0, out).astype(np.float32),
            "output_std": rng.uniform(0.5, 3.0, out).astype(np.float32),
        }
    return _make_model(
        cell=cell,
        nonlinearity=nonlinearity,
        input_size=input_size,
        hidden_size=hidden_size,
        layers=tuple(layer_weights),
        head_weight=head_weight,
        head_bias=head_bias,
        **scale_fields,
    )


@pytest.fixture(name="golden_cases")
def golden_cases_fixture() -> list[GoldenCase]:
    """Provide all golden cases (freshly loaded, so a test may not spoil another's arrays)."""
    return golden_cases()


@pytest.fixture(name="random_model")
def random_model_fixture() -> Callable[..., Model]:
    """Provide the `random_model` factory."""
    return random_model


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes a `golden_case` argument once per golden case."""
    if "golden_case" in metafunc.fixturenames:
        cases = golden_cases()
        metafunc.parametrize("golden_case", cases, ids=[case.name for case in cases])
