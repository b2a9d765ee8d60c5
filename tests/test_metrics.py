"""The daemon's array-fed histogram: Prometheus bucket rules, one value or many at a time."""

from __future__ import annotations

import numpy as np

from engine.kernels.counting import SUM_LIMIT, add_to_histogram
from engine.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram, Metrics


def test_histogram_kernel_matches_numpy_searchsorted_and_bincount():
    rng = np.random.default_rng(1)
    bounds = np.asarray(LATENCY_BUCKETS)
    values = np.concatenate(
        [rng.exponential(0.01, 2000), bounds, [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e9, 3e15]]
    )
    rng.shuffle(values)
    counts = np.zeros(bounds.size + 1, np.int64)
    total = add_to_histogram(bounds, values, counts)
    finite = values[np.isfinite(values)]
    want = np.bincount(np.searchsorted(bounds, finite, side="left"), minlength=bounds.size + 1)
    assert counts.tolist() == want.tolist()
    assert total == np.float64(sum(np.clip(finite, -SUM_LIMIT, SUM_LIMIT).tolist()))


def test_absurd_timestamps_leave_the_histogram_sum_finite():
    # A producer's ts of +-1.7e308 is finite and accepted; the latency it gives must not make
    # the sum infinite or NaN for the rest of the daemon's life.
    h = Histogram(LATENCY_BUCKETS)
    h.observe_many(np.array([-1.7e308, -1.7e308, 1e-3]))
    h.observe_many(np.array([1.7e308, 1.7e308, 1.7e308]))
    h.observe(1.7e308)
    assert np.isfinite(h.total) and h.total == SUM_LIMIT * 2 + 1e-3
    assert h.count == 7 and h.quantile(0.5) == float("inf")


def test_a_value_on_a_bound_counts_in_that_bucket_as_prometheus_le_says():
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 2.0, 3.0):
        h.observe(v)
    assert h.buckets() == [("1.0", 2), ("2.0", 4), ("+Inf", 5)]
    assert h.cumulative_counts() == [[1.0, 2], [2.0, 4]]  # the stats reply's; count holds all
    assert h.total == 8.0 and h.count == 5


def test_the_stats_snapshot_carries_each_histograms_buckets():
    metrics = Metrics()
    metrics.latency_seconds.observe_many(np.array([2e-4, 3e-3, 7e-3, 7e-3]))
    latency = metrics.snapshot()["latency_seconds"]
    at_or_below = dict(latency["buckets"])
    assert [le for le, _ in latency["buckets"]] == list(LATENCY_BUCKETS)
    assert at_or_below[2.5e-4] == 1 and at_or_below[5e-3] == 2 and at_or_below[1e-2] == 4
    assert latency["count"] == 4 and latency["p99"] == 1e-2


def test_observing_one_at_a_time_equals_observing_an_array():
    values = np.random.default_rng(0).integers(0, 10_000, 500).astype(np.float64)
    values[: len(BATCH_BUCKETS)] = BATCH_BUCKETS  # on the bounds themselves
    one, many = Histogram(BATCH_BUCKETS), Histogram(BATCH_BUCKETS)
    for v in values.tolist():
        one.observe(v)
    many.observe_many(values)
    assert one.counts.tolist() == many.counts.tolist()
    assert one.total == many.total


def test_observe_many_skips_non_finite_values_and_quantile_gives_bucket_bounds():
    h = Histogram((1.0, 2.0, 4.0))
    assert h.quantile(0.5) is None
    h.observe_many(np.array([0.5, np.nan, 1.5, 1.6, 3.0, np.inf]))
    assert h.count == 4
    assert h.quantile(0.5) == 2.0 and h.quantile(0.99) == 4.0


def test_a_quantile_that_falls_on_a_buckets_last_observation_is_that_buckets_bound():
    # Two observations: the median is the first, in the bucket up to 1.0, not the next one.
    h = Histogram((1.0, 2.0))
    h.observe_many(np.array([0.5, 1.5]))
    assert h.quantile(0.5) == 1.0 and h.quantile(0.51) == 2.0
    h.observe(5.0)
    assert h.quantile(1.0) == float("inf")
