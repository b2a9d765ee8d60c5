"""Fit the piecewise polynomial for -ln Q(z) used by engine/kernels/normal_tail.py.

Q(z) = erfc(z / sqrt 2) / 2 is the standard normal upper tail. On each piece [k w, (k + 1) w) of
[0, LIMIT) (w = WIDTH), -ln Q(z) ~= P_k(t) with t = (z - centre_k) / (w / 2) in [-1, 1] and
deg P_k = DEGREE: the Chebyshev interpolant of degree DEGREE, computed at 50 digits and written as
monomial coefficients in t (near-minimax for a smooth function; -ln Q is analytic on the real axis,
the nearest singularities being the complex zeros of erfc at distance ~3.4 from 0, which is why
the pieces near 0 need the most terms).

The script then evaluates the coefficients rounded to float64 by Horner's rule in float64 on a
dense grid of every piece against 50-digit values, prints the worst relative error and fails if it
exceeds BOUND (the kernel evaluates by Estrin's scheme, with FMA: tests/test_normal_tail.py checks
that evaluation itself). Needs mpmath (not a project dependency; it comes with
sympy): `pip install mpmath && python scripts/fit_normal_tail.py`. Paste the printed table into
engine/kernels/normal_tail.py.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

LIMIT = 8.0
WIDTH = 0.5
DEGREE = 10
BOUND = 5e-16
mp.mp.dps = 50


def minus_log_tail(z: mp.mpf) -> mp.mpf:
    """Return -ln Q(z) to 50 digits."""
    return -mp.log(mp.erfc(z / mp.sqrt(2)) / 2)


def chebyshev_monomials(left: float) -> list[float]:
    """Return the monomial coefficients in t (constant first) of the piece starting at left."""
    n = DEGREE + 1
    centre, half = mp.mpf(left) + mp.mpf(WIDTH) / 2, mp.mpf(WIDTH) / 2
    angles = [mp.pi * (k + mp.mpf(1) / 2) / n for k in range(n)]
    values = [minus_log_tail(centre + half * mp.cos(a)) for a in angles]
    cheb = [
        2 * mp.fsum(v * mp.cos(j * a) for v, a in zip(values, angles, strict=True)) / n
        for j in range(n)
    ]
    cheb[0] /= 2
    # T_j as monomials, by T_{j+1} = 2 t T_j - T_{j-1}
    basis = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]
    while len(basis) < n:
        nxt = [mp.mpf(0)] + [2 * c for c in basis[-1]]
        for i, c in enumerate(basis[-2]):
            nxt[i] -= c
        basis.append(nxt)
    mono = [mp.mpf(0)] * n
    for c_j, t_j in zip(cheb, basis, strict=True):
        for i, c in enumerate(t_j):
            mono[i] += c_j * c
    return [float(c) for c in mono]


def horner(coeffs: list[float], t: np.ndarray) -> np.ndarray:
    """Evaluate sum_i coeffs[i] t^i in float64, highest power first, as the kernel does."""
    p = np.full_like(t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * t + c
    return p


def worst_relative_error(table: list[list[float]], points_per_piece: int = 2000) -> float:
    """Return the largest |P - (-ln Q)| / (-ln Q) over a dense grid of every piece."""
    worst = 0.0
    for k, coeffs in enumerate(table):
        left = k * WIDTH
        z = np.linspace(left, left + WIDTH, points_per_piece, endpoint=False)
        approx = horner(coeffs, (z - (left + WIDTH / 2)) / (WIDTH / 2))
        exact = [minus_log_tail(mp.mpf(float(v))) for v in z]
        worst = max(
            worst,
            max(float(abs((mp.mpf(float(a)) - e) / e)) for a, e in zip(approx, exact, strict=True)),
        )
    return worst


def main() -> None:
    pieces = int(LIMIT / WIDTH)
    table = [chebyshev_monomials(k * WIDTH) for k in range(pieces)]
    where = f"piece k on [k w, (k + 1) w), w = {WIDTH}, t^0 .. t^{DEGREE}"
    print(f"# scripts/fit_normal_tail.py: {where}")
    print("# fmt: off")
    print("_TAIL_COEFFS = np.array([")
    for coeffs in table:
        rows = [", ".join(repr(c) for c in coeffs[i : i + 3]) for i in range(0, len(coeffs), 3)]
        print("    [" + ",\n     ".join(rows) + "],")
    print("])")
    print("# fmt: on")
    worst = worst_relative_error(table)
    print(f"# max relative error of the float64 evaluation: {worst:.3g} (bound {BOUND:g})")
    if worst > BOUND:
        raise SystemExit("fit error above BOUND")


if __name__ == "__main__":
    main()
