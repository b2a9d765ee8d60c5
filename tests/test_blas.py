"""The daemon's BLAS thread count follows the batch size."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from engine.blas import BIG_BATCH_ROWS, BlasThreads


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_big_batches_get_the_threads_and_small_ones_one():
    with threadpool_limits(limits=1, user_api="blas"):  # restores the pools afterwards
        blas = BlasThreads(2)
        blas.use_for(BIG_BATCH_ROWS)
        assert blas_threads() == {2}
        a = np.ones((BIG_BATCH_ROWS, 73), np.float32)
        assert (a @ np.ones((73, 256), np.float32) == 73).all()
        blas.use_for(BIG_BATCH_ROWS - 1)
        assert blas_threads() == {1}


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        BlasThreads(0)
