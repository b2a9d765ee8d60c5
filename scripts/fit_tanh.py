"""Fit the rational tanh approximation used by engine/kernels/activations.py.

tanh(x) ~= x * P(x^2) / Q(x^2) on [0, C] with deg P = 5, deg Q = 3 (in x^2), Q(0) = 1, found by
differential correction (a sequence of linear programmes minimising the max error of
x P - tanh(x) Q weighted by the previous Q). Beyond C the kernel clamps (1 - tanh(C) ~ 2.7e-7).
Needs scipy (not a project dependency): `pip install scipy && python scripts/fit_tanh.py`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

CLAMP = 7.90531110763549805
P_TERMS, Q_TERMS = 6, 4


def fit(iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.linspace(0, CLAMP, 4000), CLAMP - np.geomspace(1e-6, 1, 200)])
    x = np.unique(np.clip(x, 0, CLAMP))
    t, s = np.tanh(x), x * x
    q_prev = np.ones_like(x)
    for _ in range(iterations):
        a = (
            np.hstack(
                [np.stack([x * s**k for k in range(P_TERMS)], 1)]
                + [np.stack([-t * s**k for k in range(1, Q_TERMS)], 1)]
            )
            / q_prev[:, None]
        )
        b = t / q_prev
        n = a.shape[1]
        ones = np.ones((len(x), 1))
        cost = np.zeros(n + 1)
        cost[-1] = 1.0
        result = linprog(
            cost,
            A_ub=np.vstack([np.hstack([a, -ones]), np.hstack([-a, -ones])]),
            b_ub=np.concatenate([b, -b]),
            bounds=[(None, None)] * n + [(0, None)],
            method="highs",
        )
        p = result.x[:P_TERMS]
        q = np.concatenate([[1.0], result.x[P_TERMS:n]])
        q_prev = sum(q[k] * s**k for k in range(Q_TERMS))
    return p, q


if __name__ == "__main__":
    p, q = fit()
    print("P =", [float(v) for v in p])
    print("Q =", [float(v) for v in q])
