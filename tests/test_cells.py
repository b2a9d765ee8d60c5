"""Every cell, depth, head and scaling: the engine's two paths against float64 numpy and PyTorch.

`StreamEngine.step` runs the single-stream kernel; `step_many` runs the gather / sgemm / gates
path. Both must follow `reference_run` (float64, straight from PyTorch's equations) and the stored
PyTorch golden vectors within 1e-5 after 100 steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GoldenCase, golden_arrays, random_model
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import reference_run

from engine.stream import StreamEngine

ATOL = 1e-5
STEPS = 100
CELL_SPECS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
CELL_IDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def _readings(seed: int, steps: int, inputs: int) -> np.ndarray:
    """Return (steps, inputs) float32 readings: noise plus large spikes that saturate gates."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 2.0, (steps, inputs))
    spikes = rng.random((steps, inputs)) < 0.05
    X[spikes] = rng.choice([-1.0, 1.0], spikes.sum()) * rng.uniform(6.0, 15.0, spikes.sum())
    return X.astype(np.float32)


def _run_step(engine: StreamEngine, stream: str, X: np.ndarray) -> np.ndarray:
    return np.stack([engine.step(stream, x) for x in X])


def _run_batched(engine: StreamEngine, streams: list[str], Xs: list[np.ndarray]) -> np.ndarray:
    """Step every stream once per call: returns (streams, T, O)."""
    outputs = [engine.step_many(streams, np.stack([X[t] for X in Xs])) for t in range(len(Xs[0]))]
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("scaling", [False, True], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("head", [False, True], ids=["nohead", "head"])
@pytest.mark.parametrize("layers", [1, 2], ids=["l1", "l2"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELL_SPECS, ids=CELL_IDS)
def test_step_follows_float64_reference_for_100_steps(
    cell: str, nonlinearity: str, layers: int, head: bool, scaling: bool
) -> None:
    model = random_model(cell, layers, head, seed=11, nonlinearity=nonlinearity, scaling=scaling)
    X = _readings(seed=3, steps=STEPS, inputs=model.input_size)
    engine = StreamEngine(model)

    Y = _run_step(engine, "s", X)

    expected = reference_run(model, X)
    assert Y.shape == expected.shape == (STEPS, model.output_size)
    assert Y.dtype == np.float32
    assert np.abs(Y - expected).max() <= ATOL


@pytest.mark.parametrize("scaling", [False, True], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("head", [False, True], ids=["nohead", "head"])
@pytest.mark.parametrize("layers", [1, 2], ids=["l1", "l2"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELL_SPECS, ids=CELL_IDS)
def test_step_many_follows_float64_reference_for_100_steps_of_several_streams(
    cell: str, nonlinearity: str, layers: int, head: bool, scaling: bool
) -> None:
    model = random_model(cell, layers, head, seed=12, nonlinearity=nonlinearity, scaling=scaling)
    streams = ["a", "b", "c"]
    Xs = [_readings(seed=20 + i, steps=STEPS, inputs=model.input_size) for i in range(3)]
    engine = StreamEngine(model)

    Y = _run_batched(engine, streams, Xs)

    for i, X in enumerate(Xs):
        assert np.abs(Y[i] - reference_run(model, X)).max() <= ATOL


@pytest.mark.parametrize(("input_size", "hidden_size"), [(1, 5), (1, 33), (4, 33), (2, 17), (1, 1)])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELL_SPECS, ids=CELL_IDS)
def test_odd_sizes_follow_reference_in_both_paths(
    cell: str, nonlinearity: str, input_size: int, hidden_size: int
) -> None:
    # Hidden sizes that are not multiples of the SIMD width exercise the loop remainders.
    model = random_model(
        cell,
        2,
        True,
        seed=hidden_size,
        nonlinearity=nonlinearity,
        input_size=input_size,
        hidden_size=hidden_size,
        output_size=3,
        scaling=True,
    )
    X = _readings(seed=5, steps=STEPS, inputs=input_size)
    expected = reference_run(model, X)

    single = _run_step(StreamEngine(model), "s", X)
    batched = _run_batched(StreamEngine(model), ["s", "t"], [X, X[::-1].copy()])

    assert np.abs(single - expected).max() <= ATOL
    assert np.abs(batched[0] - expected).max() <= ATOL
    assert np.abs(batched[1] - reference_run(model, X[::-1])).max() <= ATOL


def test_step_matches_pytorch_golden_vectors(golden_case: GoldenCase) -> None:
    engine = StreamEngine(golden_case.model)

    Y = _run_step(engine, "g", golden_case.X)

    assert Y.shape == golden_case.Y_torch.shape
    assert np.abs(Y - golden_case.Y_torch).max() <= ATOL


def test_step_many_matches_pytorch_golden_vectors(golden_case: GoldenCase) -> None:
    engine = StreamEngine(golden_case.model)
    X = golden_case.X

    # two streams, the second fed the same sequence one step behind, so rows hold other states
    Y = _run_batched(engine, ["g", "lag"], [X, np.vstack([np.zeros_like(X[:1]), X[:-1]])])

    assert np.abs(Y[0] - golden_case.Y_torch).max() <= ATOL


def test_final_state_matches_pytorch_h_n_and_c_n(golden_case: GoldenCase) -> None:
    arrays = golden_arrays()
    engine = StreamEngine(golden_case.model)
    _run_step(engine, "g", golden_case.X)

    state = engine.state_of("g")

    np.testing.assert_allclose(state["h"], arrays[f"{golden_case.name}.h_n"], rtol=0, atol=ATOL)
    if golden_case.model.cell == "lstm":
        np.testing.assert_allclose(state["c"], arrays[f"{golden_case.name}.c_n"], rtol=0, atol=ATOL)
    else:
        assert set(state) == {"h", "seq"}


@pytest.mark.parametrize(("cell", "nonlinearity"), CELL_SPECS, ids=CELL_IDS)
def test_first_output_from_zero_state_matches_reference(cell: str, nonlinearity: str) -> None:
    model = random_model(cell, 2, False, seed=4, nonlinearity=nonlinearity, scaling=True)
    x = np.array([0.5, -1.0, 2.0], np.float32)

    y = StreamEngine(model).step("s", x)

    np.testing.assert_allclose(y, reference_run(model, x[None])[0], rtol=0, atol=ATOL)


_TANH_MODELS = {
    spec: StreamEngine(random_model(spec[0], 2, False, seed=9, nonlinearity=spec[1]))
    for spec in [("rnn", "tanh"), ("gru", "tanh"), ("lstm", "tanh")]
}


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(sorted(_TANH_MODELS)),
    X=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.just(3)),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
)
def test_tanh_cells_keep_hidden_state_within_unit_interval(
    spec: tuple[str, str], X: np.ndarray
) -> None:
    engine = _TANH_MODELS[spec]
    engine.drop("p")
    for x in X:
        y = engine.step("p", x)
        assert np.isfinite(y).all()
        assert np.abs(engine.state_of("p")["h"]).max() <= 1.0
    engine.drop("p")
    batched = engine.step_many(["p"] * len(X), X)
    assert np.isfinite(batched).all()
    assert np.abs(engine.state_of("p")["h"]).max() <= 1.0


@pytest.mark.parametrize(("cell", "halved"), [("lstm", [0, 1, 3]), ("gru", [0, 1]), ("rnn", [])])
def test_packed_weights_hold_sigmoid_gate_columns_exactly_halved(cell: str, halved: list) -> None:
    from engine.packed import PackedModel

    model = random_model(cell, 2, True, 5, input_size=3, hidden_size=6)
    hidden = model.hidden_size
    for k, packed in enumerate(PackedModel(model).layer_wt):
        weights = model.layers[k]
        n_in = weights.weight_ih.shape[1]
        w_ih = packed[:n_in].T
        for gate in range(weights.weight_ih.shape[0] // hidden):
            rows = slice(gate * hidden, (gate + 1) * hidden)
            factor = np.float32(0.5) if gate in halved else np.float32(1.0)
            np.testing.assert_array_equal(w_ih[rows], weights.weight_ih[rows] * factor)
