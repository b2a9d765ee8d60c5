"""The daemon's metrics: Prometheus bucket rules, a pass's latencies at a time, the served page."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.kernels.counting import add_latencies
from engine.metrics import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS,
    LATENCY_HORIZON,
    Histogram,
    Metrics,
    registry_for,
)
from engine.protocol import CONTROL_COMMANDS, RejectReason


def test_latency_kernel_matches_numpy_searchsorted_and_bincount_on_the_bounds_too():
    # now = 0 and stamps = -values: each latency is the value exactly, bounds included
    rng = np.random.default_rng(1)
    bounds = np.asarray(LATENCY_BUCKETS)
    values = np.concatenate(
        [rng.exponential(0.01, 2000), bounds, [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e9]]
    )
    rng.shuffle(values)
    counts = np.zeros(bounds.size + 1, np.int64)
    total, beyond = add_latencies(bounds, 0.0, -values, 1e12, counts)
    finite = np.maximum(values[np.isfinite(values)], 0.0)  # a stamp ahead of now counts as 0
    want = np.bincount(np.searchsorted(bounds, finite, side="left"), minlength=bounds.size + 1)
    assert counts.tolist() == want.tolist()
    assert total == np.float64(sum(finite.tolist())) and beyond == 2  # +-inf


def test_latencies_count_only_stamps_within_the_horizon_of_now():
    rng = np.random.default_rng(2)
    bounds = np.asarray(LATENCY_BUCKETS)
    now = 1_800_000_000.0
    ages = np.concatenate([rng.exponential(0.01, 500), [0.0, -0.5, 3599.0, 3601.0, -4000.0]])
    stamps = np.concatenate([now - ages, [np.nan, 1.7e308, -1.7e308, 1.4e9]])  # 1.4e9: 2014
    counts = np.zeros(bounds.size + 1, np.int64)
    total, beyond = add_latencies(bounds, now, stamps, 3600.0, counts)
    kept = now - stamps[np.abs(now - stamps) <= 3600.0]  # NaN compares false: left out too
    kept = np.maximum(kept, 0.0)  # ahead of now: 0
    want = np.bincount(np.searchsorted(bounds, kept, side="left"), minlength=bounds.size + 1)
    assert counts.tolist() == want.tolist() and total == np.float64(sum(kept.tolist()))
    assert beyond == 5  # 3601 and -4000 seconds old, +-1.7e308, 2014; NaN is no stamp at all


def test_a_replay_of_old_timestamps_is_counted_apart_from_the_latency():
    metrics = Metrics()
    now = time.time()
    metrics.observe_latencies(np.array([now - 0.002, np.nan, 1.4e9, 1.7e308, -1.7e308]))
    snap = metrics.snapshot()
    assert snap["latency_seconds"]["count"] == 1 and snap["latency_unmeasured"] == 3
    assert np.isfinite(snap["latency_seconds"]["sum"]) and snap["latency_seconds"]["p99"] <= 5e-3
    assert LATENCY_HORIZON == 3600.0


def test_a_value_on_a_bound_counts_in_that_bucket_as_prometheus_le_says():
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 2.0, 3.0):
        h.observe(v)
    assert h.buckets() == [("1.0", 2), ("2.0", 4), ("+Inf", 5)]
    assert h.cumulative_counts() == [[1.0, 2], [2.0, 4]]  # the stats reply's; count holds all
    assert h.total == 8.0 and h.count == 5


def test_the_stats_snapshot_carries_each_histograms_buckets():
    metrics = Metrics()
    metrics.latency_seconds.observe_elapsed(1.0, 1.0 - np.array([2e-4, 3e-3, 7e-3, 7e-3]), 60.0)
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
    many.observe_elapsed(0.0, -values, np.inf)
    assert one.counts.tolist() == many.counts.tolist()
    assert one.total == many.total


def test_elapsed_times_skip_missing_stamps_and_quantile_gives_bucket_bounds():
    h = Histogram((1.0, 2.0, 4.0))
    assert h.quantile(0.5) is None
    assert h.observe_elapsed(0.0, -np.array([0.5, np.nan, 1.5, 1.6, 3.0, np.inf]), 1e6) == 1
    assert h.count == 4
    assert h.quantile(0.5) == 2.0 and h.quantile(0.99) == 4.0


def test_a_quantile_that_falls_on_a_buckets_last_observation_is_that_buckets_bound():
    # Two observations: the median is the first, in the bucket up to 1.0, not the next one.
    h = Histogram((1.0, 2.0))
    h.observe(0.5)
    h.observe(1.5)
    assert h.quantile(0.5) == 1.0 and h.quantile(0.51) == 2.0
    h.observe(5.0)
    assert h.quantile(1.0) == float("inf")


def test_a_ts_ahead_of_the_daemons_clock_counts_as_no_latency_so_the_sum_never_falls():
    # A producer whose clock runs ahead: a negative latency would lower the histogram's _sum,
    # which Prometheus's rate() reads as a counter reset (a huge spurious mean latency).
    metrics = Metrics()
    now = time.time()
    metrics.observe_latencies(np.array([now - 0.002]))
    before = metrics.latency_seconds.total
    metrics.observe_latencies(np.array([now + 2.0, now + 30.0, np.nan, now + 2 * LATENCY_HORIZON]))
    latency = metrics.snapshot()["latency_seconds"]
    assert latency["sum"] == before and latency["count"] == 3
    assert latency["buckets"][0] == [LATENCY_BUCKETS[0], 2]  # the two ahead, as 0 s
    assert metrics.latency_unmeasured == 1  # two hours ahead: a clock far off, not measured


# What the daemon hands the collector besides its Metrics: the engine's stats and its status.
LIVE = {
    "streams": 3,
    "evictions": 10,
    "evicted_idle": 2,
    "evicted_lru": 5,
    "evicted_reload": 3,
    "open_alerts": 4,
    "model_fingerprint": "ab" * 32,
    "ready": True,
}


def served_samples(metrics: Metrics, live: dict = LIVE) -> dict[tuple[str, tuple], float]:
    """Scrape a registry over `metrics` as Prometheus would: {(name, labels): value}."""
    text = generate_latest(registry_for(metrics, lambda: live)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_reject_reason_and_alert_event_is_served_from_zero_before_the_first():
    # A labelled series that first appears at 1 hides that increment from increase() and rate():
    # the first malformed message after a start would never fire an alert.
    samples = served_samples(Metrics())
    for reason in RejectReason:
        assert samples[("rnnstream_rejects_total", (("reason", str(reason)),))] == 0
    for event in ("open", "close"):
        assert samples[("rnnstream_alerts_total", (("event", event),))] == 0


def control_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """The served rnnstream_control_commands_total: {(cmd, outcome): value}."""
    return {
        (dict(labels)["cmd"], dict(labels)["outcome"]): value
        for (name, labels), value in served_samples(metrics).items()
        if name == "rnnstream_control_commands_total"
    }


def test_every_control_command_and_outcome_is_served_from_zero_before_the_first():
    served = control_samples(Metrics())
    known = {(cmd, outcome) for cmd in CONTROL_COMMANDS for outcome in ("ok", "error")}
    assert served == dict.fromkeys(known | {("invalid", "error")}, 0)


def test_control_requests_count_by_command_and_unknown_names_only_as_invalid():
    # Whatever names clients send, the page keeps the same series: one per known command and
    # outcome, and "invalid" for the rest (a series per name would grow without bound).
    metrics = Metrics()
    metrics.count_control("stats", ok=True)
    metrics.count_control("reload", ok=False)
    for name in ("launch-rockets", "x" * 300, None):  # None: a request that did not decode
        metrics.count_control(name, ok=False)
    served = control_samples(metrics)
    assert {k: v for k, v in served.items() if v} == {
        ("stats", "ok"): 1,
        ("reload", "error"): 1,
        ("invalid", "error"): 3,
    }
    assert served.keys() == control_samples(Metrics()).keys()
    assert metrics.snapshot()["control_commands"] == {
        "stats": {"ok": 1},
        "reload": {"error": 1},
        "invalid": {"error": 3},
    }


def test_evictions_are_served_by_cause_as_the_stats_reply_counts_them():
    samples = served_samples(Metrics())
    assert samples[("rnnstream_evictions_total", (("cause", "idle"),))] == 2
    assert samples[("rnnstream_evictions_total", (("cause", "lru"),))] == 5
    assert samples[("rnnstream_evictions_total", (("cause", "reload"),))] == 3
    assert samples[("rnnstream_live_streams", ())] == 3 and samples[("rnnstream_ready", ())] == 1
    assert samples[("rnnstream_open_alerts", ())] == 4
    assert served_samples(Metrics(), {**LIVE, "ready": False})[("rnnstream_ready", ())] == 0


def test_every_family_says_what_it_counts_in_its_help():
    text = generate_latest(registry_for(Metrics(), lambda: LIVE)).decode()
    families = list(text_string_to_metric_families(text))
    for family in families:
        # more than the name with its underscores as spaces ("live streams")
        assert family.documentation.rstrip(".").lower() != family.name.removeprefix(
            "rnnstream_"
        ).replace("_", " "), family.name
