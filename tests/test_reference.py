"""Pin the float64 reference to PyTorch (via the stored golden vectors) and to its own contract."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import GOLDEN_PATH, GoldenCase, golden_arrays, random_model
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_run, reference_step, zero_state

from engine.model import LayerWeights, Model

# float64 reference against float32 torch after 100 steps; observed errors are at most 5e-7.
GOLDEN_ATOL = 1e-5

CELL_SPECS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def test_reference_reproduces_torch_output_for_golden_case(golden_case: GoldenCase) -> None:
    Y = reference_run(golden_case.model, golden_case.X)

    assert Y.shape == golden_case.Y_torch.shape
    assert np.abs(Y - golden_case.Y_torch).max() <= GOLDEN_ATOL


def test_reference_final_state_matches_torch_h_n_and_c_n(golden_case: GoldenCase) -> None:
    arrays = golden_arrays()
    state = zero_state(golden_case.model)
    for x in golden_case.X:
        _, state = reference_step(golden_case.model, x, state)

    h_final = np.stack([layer_state[0] for layer_state in state])
    np.testing.assert_allclose(h_final, arrays[f"{golden_case.name}.h_n"], rtol=0, atol=GOLDEN_ATOL)
    if golden_case.model.cell == "lstm":
        c_final = np.stack([layer_state[1] for layer_state in state])
        np.testing.assert_allclose(
            c_final, arrays[f"{golden_case.name}.c_n"], rtol=0, atol=GOLDEN_ATOL
        )


def test_golden_file_covers_every_cell_depth_head_and_batch_layout() -> None:
    arrays = golden_arrays()
    names = [str(name) for name in arrays["cases"]]
    expected = {
        f"{cell}_l{layers}_{head}"
        for cell in ("rnn_tanh", "rnn_relu", "gru", "lstm")
        for layers in (1, 2)
        for head in ("head", "nohead")
    }

    assert set(names) == expected and len(names) == 16
    assert {bool(arrays[f"{name}.batch_first"]) for name in names} == {True, False}
    for name in names:
        assert arrays[f"{name}.input"].shape == (100, 3)
        assert arrays[f"{name}.input"].dtype == np.float32
        width = 2 if name.endswith("_head") else 8
        assert arrays[f"{name}.output"].shape == (100, width)
        assert arrays[f"{name}.output"].dtype == np.float32
        # Spikes well beyond the unit range push gates and tanh into saturation.
        assert np.abs(arrays[f"{name}.input"]).max() >= 6.0
    assert str(arrays["torch_version"]).startswith("2.")
    assert GOLDEN_PATH.stat().st_size < 300_000


def _swap_first_two_gates(w: np.ndarray, hidden: int) -> np.ndarray:
    order = np.r_[hidden : 2 * hidden, 0:hidden]
    w = w.copy()
    w[: 2 * hidden] = w[order]
    return w


def test_golden_vectors_detect_swapped_gate_rows(golden_cases: list[GoldenCase]) -> None:
    # The golden check is only worth having if a plausible layout mistake breaks it:
    # LSTM i <-> f, GRU r <-> z in the first layer.
    for case in (c for c in golden_cases if c.model.cell in ("gru", "lstm")):
        hidden = case.model.hidden_size
        layer = case.model.layers[0]
        swapped = dataclasses.replace(
            layer,
            weight_ih=_swap_first_two_gates(layer.weight_ih, hidden),
            weight_hh=_swap_first_two_gates(layer.weight_hh, hidden),
            bias_ih=_swap_first_two_gates(layer.bias_ih, hidden),
            bias_hh=_swap_first_two_gates(layer.bias_hh, hidden),
        )
        model = dataclasses.replace(case.model, layers=(swapped, *case.model.layers[1:]))

        assert np.abs(reference_run(model, case.X) - case.Y_torch).max() > 1e-3, case.name


@pytest.mark.parametrize("cell,nonlinearity", CELL_SPECS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("head,scaling", [(True, True), (False, False), (False, True)])
def test_reference_run_equals_loop_of_reference_step(
    cell: str, nonlinearity: str, layers: int, head: bool, scaling: bool
) -> None:
    model = random_model(
        cell, layers, head, seed=layers, nonlinearity=nonlinearity, scaling=scaling
    )
    X = np.random.default_rng(7).normal(0.0, 3.0, (40, model.input_size)).astype(np.float32)

    state = zero_state(model)
    looped = []
    for x in X:
        y, state = reference_step(model, x, state)
        looped.append(y)

    np.testing.assert_array_equal(reference_run(model, X), np.stack(looped))


def test_reference_step_returns_new_state_and_leaves_given_state_untouched() -> None:
    model = random_model("lstm", 2, True, seed=3)
    state = [(np.full(8, 0.5), np.full(8, -0.5)) for _ in range(2)]
    before = [tuple(a.copy() for a in layer_state) for layer_state in state]

    y, new_state = reference_step(model, np.array([1.0, -2.0, 0.5]), state)

    assert y.shape == (2,) and y.dtype == np.float64
    assert len(new_state) == 2 and all(len(s) == 2 for s in new_state)
    for old, kept in zip(before, state, strict=True):
        for a, b in zip(old, kept, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(new_state[0][0], state[0][0])


def test_scaling_path_matches_hand_computation() -> None:
    # One input, one hidden unit, one output: every number below is written out by hand.
    def arr(*values: float) -> np.ndarray:
        return np.array(values, dtype=np.float32)

    layer = LayerWeights(
        weight_ih=arr(0.5).reshape(1, 1),
        weight_hh=arr(-0.25).reshape(1, 1),
        bias_ih=arr(0.125),
        bias_hh=arr(0.0625),
    )
    model = Model(
        cell="rnn",
        nonlinearity="tanh",
        input_size=1,
        hidden_size=1,
        layers=(layer,),
        head_weight=arr(2.0).reshape(1, 1),
        head_bias=arr(-1.0),
        input_mean=arr(10.0),
        input_std=arr(4.0),
        output_mean=arr(100.0),
        output_std=arr(10.0),
    )
    X = np.array([[14.0], [6.0]])  # scaled inputs: +1, -1

    h1 = math.tanh(0.5 * 1.0 + 0.125 - 0.25 * 0.0 + 0.0625)
    h2 = math.tanh(0.5 * -1.0 + 0.125 - 0.25 * h1 + 0.0625)
    expected = [[(2.0 * h1 - 1.0) * 10.0 + 100.0], [(2.0 * h2 - 1.0) * 10.0 + 100.0]]

    np.testing.assert_allclose(reference_run(model, X), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell,nonlinearity", CELL_SPECS)
@pytest.mark.parametrize("head", [True, False])
def test_scaled_model_equals_unscaled_model_on_standardised_data(
    cell: str, nonlinearity: str, head: bool
) -> None:
    scaled = random_model(cell, 2, head, seed=11, nonlinearity=nonlinearity, scaling=True)
    plain = dataclasses.replace(
        scaled, input_mean=None, input_std=None, output_mean=None, output_std=None
    )
    X = np.random.default_rng(5).normal(3.0, 5.0, (30, scaled.input_size))

    f64 = np.float64
    X_std = (X - scaled.input_mean.astype(f64)) / scaled.input_std.astype(f64)
    expected = reference_run(plain, X_std) * scaled.output_std.astype(f64) + scaled.output_mean

    np.testing.assert_allclose(reference_run(scaled, X), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    spec=st.sampled_from([("rnn", "tanh"), ("gru", "tanh"), ("lstm", "tanh")]),
    seed=st.integers(0, 2**16),
    magnitude=st.floats(0.0, 1e3),
)
def test_tanh_cells_keep_hidden_state_within_unit_interval(
    spec: tuple[str, str], seed: int, magnitude: float
) -> None:
    model = random_model(spec[0], 2, False, seed=seed, nonlinearity=spec[1])
    X = np.random.default_rng(seed).normal(0.0, 1.0, (20, model.input_size)) * magnitude

    Y = reference_run(model, X)

    assert np.all(np.isfinite(Y)) and np.abs(Y).max() <= 1.0


def test_relu_rnn_without_head_outputs_nonnegative_values() -> None:
    model = random_model("rnn", 2, False, seed=4, nonlinearity="relu")
    X = np.random.default_rng(4).normal(0.0, 3.0, (50, model.input_size))

    Y = reference_run(model, X)

    assert Y.min() >= 0.0 and Y.max() > 0.0


def test_reference_run_on_empty_sequence_returns_no_rows() -> None:
    assert reference_run(random_model("gru", 1, True), np.zeros((0, 3))).shape == (0, 2)
    assert reference_run(random_model("gru", 1, False), np.zeros((0, 3))).shape == (0, 8)


def test_reference_step_rejects_wrong_input_width() -> None:
    model = random_model("rnn", 1, True)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        reference_step(model, np.zeros(4), zero_state(model))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_random_model_is_seeded_float32_and_within_pytorch_init_bound(
    cell: str, layers: int
) -> None:
    model = random_model(cell, layers, True, seed=9, hidden_size=16, input_size=5, output_size=4)
    again = random_model(cell, layers, True, seed=9, hidden_size=16, input_size=5, output_size=4)
    other = random_model(cell, layers, True, seed=10, hidden_size=16, input_size=5, output_size=4)
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]

    assert len(model.layers) == layers
    for k, layer in enumerate(model.layers):
        assert layer.weight_ih.shape == (gates * 16, 5 if k == 0 else 16)
        assert layer.weight_hh.shape == (gates * 16, 16)
        assert layer.bias_ih.shape == layer.bias_hh.shape == (gates * 16,)
        for w in (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh):
            assert w.dtype == np.float32 and np.abs(w).max() <= 0.25
    assert model.head_weight.shape == (4, 16) and model.head_bias.shape == (4,)
    np.testing.assert_array_equal(model.layers[-1].weight_hh, again.layers[-1].weight_hh)
    assert not np.array_equal(model.layers[-1].weight_hh, other.layers[-1].weight_hh)
