"""fast_tanh / fast_sigmoid / relu against float64 numpy over the whole float32 range."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kernels.activations import relu, sigmoid_array, tanh_array

ATOL = 1e-6
F32 = np.finfo(np.float32)


def _tanh(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    tanh_array(x, out)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    sigmoid_array(x, out)
    return out


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _symmetric(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.ascontiguousarray(np.concatenate([-x[::-1], x]))


def _float32_range() -> dict[str, np.ndarray]:
    """Return named float32 sample sets that together cover the whole finite float32 range."""
    positive_normals = np.arange(
        F32.tiny.view(np.int32), F32.max.view(np.int32), 4099, dtype=np.int32
    ).view(np.float32)
    # every 7th float32 in [1e-3, 12]: covers the polynomial range and the clamp edge densely
    core = np.arange(
        np.float32(1e-3).view(np.int32), np.float32(12).view(np.int32), 7, dtype=np.int32
    ).view(np.float32)
    subnormals = np.arange(1, F32.tiny.view(np.int32), 65_537, dtype=np.int32).view(np.float32)
    clamp_edge = np.float32(7.9053111)
    around_clamp = clamp_edge + np.arange(-2000, 2000, dtype=np.float32) * np.spacing(clamp_edge)
    return {
        "dense grid [-20, 20]": np.linspace(-20, 20, 2_000_001, dtype=np.float32),
        "log-spaced up to float32 max": _symmetric(
            np.minimum(np.logspace(-45, np.log10(float(F32.max)), 20_000), F32.max).astype(
                np.float32
            )
        ),
        "every 4099th positive normal": _symmetric(positive_normals),
        "every 7th float32 in [1e-3, 12]": _symmetric(core),
        "subnormals": _symmetric(np.append(subnormals, F32.smallest_subnormal)),
        "around the clamp": _symmetric(around_clamp),
        "extremes": np.array([0.0, -0.0, F32.max, -F32.max, F32.tiny, -F32.tiny], np.float32),
    }


SAMPLES = _float32_range()


@pytest.mark.parametrize("name", list(SAMPLES))
def test_fast_tanh_is_within_1e6_of_float64_tanh(name: str) -> None:
    x = SAMPLES[name]
    assert np.isfinite(x).all()

    err = np.abs(_tanh(x).astype(np.float64) - np.tanh(x.astype(np.float64)))

    assert err.max() <= ATOL, f"worst at x={x[np.argmax(err)]!r}: {err.max():.3g}"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_fast_sigmoid_is_within_1e6_of_float64_sigmoid(name: str) -> None:
    x = SAMPLES[name]

    err = np.abs(_sigmoid(x).astype(np.float64) - _sigmoid64(x))

    assert err.max() <= ATOL, f"worst at x={x[np.argmax(err)]!r}: {err.max():.3g}"


def test_fast_tanh_keeps_relative_accuracy_for_small_inputs() -> None:
    # An absolute bound alone would accept tanh(x) = 0 for |x| < 1e-6; gradients need x itself.
    x = _symmetric(np.logspace(-30, -1, 5_000).astype(np.float32))

    rel = np.abs(_tanh(x).astype(np.float64) / np.tanh(x.astype(np.float64)) - 1.0)

    assert rel.max() <= 1e-6


def test_fast_tanh_is_odd() -> None:
    x = SAMPLES["dense grid [-20, 20]"]
    x = np.ascontiguousarray(x[x > 0])

    np.testing.assert_array_equal(_tanh(-x), -_tanh(x))


# Not asserted: monotonicity. The rational fit's error equioscillates, so neighbouring outputs may
# step back by a few ULPs (up to ~4e-7 near the clamp), which the 1e-6 bound allows.
@pytest.mark.parametrize("name", list(SAMPLES))
def test_fast_tanh_and_sigmoid_never_leave_their_range(name: str) -> None:
    x = SAMPLES[name]

    t, s = _tanh(x), _sigmoid(x)

    assert np.abs(t).max() <= 1.0
    assert s.min() >= 0.0 and s.max() <= 1.0


def test_nan_in_gives_nan_out() -> None:
    x = np.array([np.nan, 1.0, -np.nan, -3.0], np.float32)

    t, s = _tanh(x), _sigmoid(x)

    np.testing.assert_array_equal(np.isnan(t), [True, False, True, False])
    np.testing.assert_array_equal(np.isnan(s), [True, False, True, False])


def test_infinities_saturate() -> None:
    x = np.array([np.inf, -np.inf], np.float32)

    t, s = _tanh(x).astype(np.float64), _sigmoid(x).astype(np.float64)

    np.testing.assert_allclose(t, [1.0, -1.0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(s, [1.0, 0.0], rtol=0, atol=ATOL)
    assert np.abs(t).max() <= 1.0 and 0.0 <= s.min() and s.max() <= 1.0


def test_zero_maps_to_zero_and_one_half() -> None:
    x = np.array([0.0, -0.0], np.float32)

    np.testing.assert_array_equal(_tanh(x), [0.0, 0.0])
    np.testing.assert_array_equal(_sigmoid(x), [0.5, 0.5])


def test_relu_keeps_nan_and_clips_negatives() -> None:
    assert np.isnan(relu(np.float32(np.nan)))
    assert relu(np.float32(-2.5)) == 0.0
    assert relu(np.float32(-np.inf)) == 0.0
    assert relu(np.float32(3.25)) == np.float32(3.25)
    assert relu(np.float32(np.inf)) == np.inf
