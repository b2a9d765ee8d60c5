"""Big matrix products get the BLAS threads, small ones one."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from engine.blas import BIG_PRODUCT, BlasThreads
from engine.model import Model
from engine.stream import StreamEngine


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_big_products_get_the_threads_and_small_ones_one():
    with threadpool_limits(limits=1, user_api="blas"):  # restores the pools afterwards
        blas = BlasThreads(2)
        blas.use_for(BIG_PRODUCT)
        assert blas_threads() == {2}
        blas.use_for(BIG_PRODUCT - 1)
        assert blas_threads() == {1}


def test_an_engine_with_blas_threads_steps_as_one_without():
    model = Model.random("lstm", 3, 64, output_size=2, seed=1)
    streams = [f"s{i}" for i in range(600)]  # 600 x 256 gate outputs: a big product
    X = np.random.default_rng(0).standard_normal((600, 3)).astype(np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        threaded = StreamEngine(model, blas_threads=2)
        got = [threaded.step_many(streams, X) for _ in range(3)]
        assert blas_threads() == {1}  # the thin head product came last
    plain = StreamEngine(model)
    for out in got:
        np.testing.assert_allclose(out, plain.step_many(streams, X), rtol=0, atol=1e-5)


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        BlasThreads(0)
