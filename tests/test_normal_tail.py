"""minus_log_normal_tail against math.erfc and math.log over dense grids and edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.kernels import normal_tail
from engine.kernels.normal_tail import TAIL_LIMIT, minus_log_normal_tail_array

# measured 6.7e-16, math's own errors included (4.3e-16 against 40-digit values)
TAIL_RTOL = 2e-15
TINY = 5e-324


def _ulp_neighbours(points: np.ndarray) -> np.ndarray:
    """Return each point with its float64 neighbours on both sides."""
    points = np.asarray(points, np.float64)
    return np.concatenate([np.nextafter(points, -np.inf), points, np.nextafter(points, np.inf)])


def _minus_log_tail(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    minus_log_normal_tail_array(np.ascontiguousarray(z, np.float64), out)
    return out


def _ref_minus_log_tail(z: np.ndarray) -> np.ndarray:
    """-ln Q(z) = -ln(erfc(z sqrt(1/2)) / 2) by Python's math, as scoring did; inf at Q = 0."""
    with np.errstate(divide="ignore"):
        q = np.array([0.5 * math.erfc(v * math.sqrt(0.5)) for v in z])
        return -np.log(q)


def _relative_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Return |got - want| / |want|, and 0 where both are 0 (-ln Q(z) for z < -8.3)."""
    return np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)


TAIL_GRIDS = {
    "dense grid [0, TAIL_LIMIT]": np.linspace(0.0, TAIL_LIMIT, 400_001),
    "log-spaced from the smallest subnormal to 1": np.geomspace(TINY, 1.0, 5_000),
    "piece joins k/2 and the limit": _ulp_neighbours(np.arange(1, 17) / 2),
    "libm beyond the limit": np.linspace(TAIL_LIMIT, 38.0, 3_001),
    "negative z (libm)": np.linspace(-40.0, 0.0, 2_001, endpoint=False),
}


@pytest.mark.parametrize("grid", TAIL_GRIDS.values(), ids=TAIL_GRIDS.keys())
def test_minus_log_normal_tail_matches_math(grid: np.ndarray) -> None:
    err = _relative_error(_minus_log_tail(grid), _ref_minus_log_tail(grid))
    assert err.max() <= TAIL_RTOL, (
        f"max relative error {err.max():.3g} at z = {grid[err.argmax()]!r}"
    )


def test_minus_log_normal_tail_edges() -> None:
    z = np.array([0.0, -0.0, TINY, 38.0, 38.2, 40.0, 1e300, np.inf, -np.inf, np.nan])
    got = _minus_log_tail(z)
    assert got[0] == got[1] == got[2] == pytest.approx(math.log(2.0), rel=TAIL_RTOL)
    assert 700.0 < got[3] < got[4] < 745.2  # Q(38) ~ 3e-316: subnormal, still finite
    np.testing.assert_array_equal(got[5:8], np.inf)  # Q underflows to 0
    assert got[8] == 0.0 and np.isnan(got[9])


def test_minus_log_normal_tail_is_monotone_across_pieces() -> None:
    z = np.linspace(0.0, 12.0, 600_001)
    assert np.all(np.diff(_minus_log_tail(z)) > 0.0)


@pytest.mark.parametrize("piece", [0, 15])
@pytest.mark.parametrize("j", range(normal_tail._TAIL_COEFFS.shape[1]))
def test_the_tested_bound_catches_a_coefficient_off_by_1e_13(
    monkeypatch, piece: int, j: int
) -> None:
    # The Python body (py_func) reads the table at call time (the compiled kernels froze the true
    # one). At the piece's right end t = 1, so a coefficient off by d moves the result by d.
    table = normal_tail._TAIL_COEFFS.copy()
    table[piece, j] += 1e-13 * table[piece, 0]
    monkeypatch.setattr(normal_tail, "_TAIL_COEFFS", table)
    z = np.array([(piece + 1) / 2 - 1e-12])
    got = np.array([normal_tail.minus_log_normal_tail.py_func(float(z[0]))])
    assert _relative_error(got, _ref_minus_log_tail(z))[0] > TAIL_RTOL
