"""The daemon's counters and histograms, served as Prometheus text and in the `stats` reply.

The hot loop adds a pass's latencies at once (`Histogram.observe_elapsed` with a numpy array),
which prometheus_client's own Histogram cannot do without a Python call per value; so the numbers
live here and a custom collector hands them to prometheus_client for the exposition format and
HTTP.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from engine import __version__
from engine.kernels.counting import add_latencies
from engine.protocol import CONTROL_COMMANDS, RejectReason

# A reading's latency is measured from its `ts` only when that lies within this many seconds of
# the daemon's clock: a replay of recorded data (`rnnstream produce csv` sends the file's times)
# or a clock far off is not latency, and would leave the p99 at +Inf for the daemon's life.
LATENCY_HORIZON = 3600.0
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.05, 0.1, 0.25, 1.0, 5.0)
STEP_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SNAPSHOT_BUCKETS = (1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
# Every label value a labelled counter can take is served from 0: a series that first appears
# at 1 hides that increment from increase() and rate(), so the first one would alert nobody.
REJECT_REASONS = tuple(str(reason) for reason in RejectReason)
ALERT_EVENTS = ("open", "close")
EVICTION_CAUSES = ("idle", "lru", "reload")
# A control request's `cmd` label: a known command's name, or this for an undecodable request or
# an unknown command, so that what clients send cannot add series.
INVALID_COMMAND = "invalid"
CONTROL_SERIES = (
    *((cmd, outcome) for cmd in CONTROL_COMMANDS for outcome in ("ok", "error")),
    (INVALID_COMMAND, "error"),
)


class Histogram:
    """Cumulative-bucket histogram fed one value, or a whole array of elapsed times, at a time."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = np.asarray(buckets, np.float64)
        self._bound_list = [float(b) for b in buckets]
        self.counts = np.zeros(len(buckets) + 1, np.int64)  # last = above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect, not np.searchsorted: a scalar costs numpy ~3 us, twice in every daemon pass
        self.counts[bisect_left(self._bound_list, value)] += 1
        self.total += value

    def observe_elapsed(self, now: float, stamps: np.ndarray, horizon: float) -> int:
        """Count now - stamps for the stamps within `horizon` of now, by one jitted call;
        return how many lay beyond it (NaN stamps are neither)."""
        total, beyond = add_latencies(
            self.bounds, now, np.asarray(stamps, np.float64), horizon, self.counts
        )
        self.total += total
        return beyond

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile q (None before any observation)."""
        n = self.count
        if n == 0:
            return None
        idx = int(np.searchsorted(np.cumsum(self.counts), q * n, side="left"))
        return float(self.bounds[idx]) if idx < self.bounds.size else float("inf")

    def cumulative_counts(self) -> list[list[float]]:
        """[upper bound, observations at or below it] for every finite bound (`count` holds
        them all): for shares beyond a bound, which the quantiles alone cannot give."""
        cumulative = np.cumsum(self.counts[:-1])
        return [[b, int(c)] for b, c in zip(self._bound_list, cumulative.tolist(), strict=True)]

    def buckets(self) -> list[tuple[str, int]]:
        """Prometheus's cumulative buckets: (le label, count), ending with +Inf."""
        return [(repr(b), c) for b, c in self.cumulative_counts()] + [("+Inf", self.count)]


class Metrics:
    """Everything the daemon counts; one instance per daemon."""

    def __init__(self) -> None:
        self.readings_in = 0
        self.predictions_out = 0
        self.frames_in = 0
        self.rejects: Counter[str] = Counter()
        self.duplicates = 0
        self.gaps = 0
        self.alerts: Counter[str] = Counter()
        # (cmd, outcome) -> count; every series is here from the start, so a scrape's thread
        # never iterates a dict the loop is adding to
        self.control_commands: Counter[tuple[str, str]] = Counter(dict.fromkeys(CONTROL_SERIES, 0))
        self.snapshots = 0
        self.snapshot_failures = 0
        self.latency_unmeasured = 0  # readings whose ts was beyond LATENCY_HORIZON
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.step_seconds = Histogram(STEP_BUCKETS)
        self.latency_seconds = Histogram(LATENCY_BUCKETS)
        self.snapshot_seconds = Histogram(SNAPSHOT_BUCKETS)
        # compiles the kernel now, not in the daemon's loop
        self.latency_seconds.observe_elapsed(0.0, np.empty(0), LATENCY_HORIZON)

    def observe_latencies(self, stamps: np.ndarray) -> None:
        """Count the time from each reading's `ts` to now, or count it as unmeasured.

        A `ts` ahead of this clock (skew between hosts) counts as 0 s: a negative latency would
        lower the histogram's sum, which Prometheus takes for a counter reset.
        """
        self.latency_unmeasured += self.latency_seconds.observe_elapsed(
            time.time(), stamps, LATENCY_HORIZON
        )

    def count_control(self, cmd: str | None, ok: bool) -> None:
        """Count one answered control request; `cmd` None (undecodable) or an unknown name
        counts as INVALID_COMMAND, which is always an error."""
        if cmd in CONTROL_COMMANDS:
            self.control_commands[cmd, "ok" if ok else "error"] += 1
        else:
            self.control_commands[INVALID_COMMAND, "error"] += 1

    def snapshot(self) -> dict:
        """Return the counters as plain values (the `stats` reply)."""

        def hist(h: Histogram) -> dict:
            return {
                "count": h.count,
                "sum": h.total,
                "p50": h.quantile(0.5),
                "p99": h.quantile(0.99),
                "buckets": h.cumulative_counts(),
            }

        commands: dict[str, dict[str, int]] = {}
        for (cmd, outcome), count in self.control_commands.items():
            if count:  # as `rejects` and `alerts`: what happened; the page serves the zeros
                commands.setdefault(cmd, {})[outcome] = count
        return {
            "readings_in": self.readings_in,
            "predictions_out": self.predictions_out,
            "frames_in": self.frames_in,
            "rejects": dict(self.rejects),
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "alerts": dict(self.alerts),
            "control_commands": commands,
            "snapshots": self.snapshots,
            "snapshot_failures": self.snapshot_failures,
            "latency_unmeasured": self.latency_unmeasured,
            "batch_size": hist(self.batch_size),
            "step_seconds": hist(self.step_seconds),
            "latency_seconds": hist(self.latency_seconds),
            "snapshot_seconds": hist(self.snapshot_seconds),
        }


class MetricsCollector(Collector):
    """Expose a Metrics object, plus what `live` returns at each scrape, in the Prometheus
    text format. `live()` gives the engine's `stats()` and `ready` (bool)."""

    def __init__(self, metrics: Metrics, live: Callable[[], dict[str, Any]]) -> None:
        self.metrics = metrics
        self.live = live

    def collect(self) -> Iterator:
        m = self.metrics
        for name, value, doc in (
            ("rnnstream_readings_in", m.readings_in, "Readings stepped, one prediction each."),
            ("rnnstream_predictions_out", m.predictions_out, "Predictions published."),
            ("rnnstream_frames_in", m.frames_in, "Intake messages received."),
            ("rnnstream_duplicates", m.duplicates, "Readings dropped as duplicate seq."),
            ("rnnstream_seq_gaps", m.gaps, "Forward jumps in a stream's seq."),
            ("rnnstream_snapshots", m.snapshots, "State snapshots written."),
            (
                "rnnstream_snapshot_failures",
                m.snapshot_failures,
                "Snapshots that could not be written (the log says why; the last one stays).",
            ),
            (
                "rnnstream_latency_unmeasured",
                m.latency_unmeasured,
                "Readings whose ts lay over an hour from the daemon's clock: not in the latency.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        rejects = CounterMetricFamily(
            "rnnstream_rejects", "Rejected messages or rows, by reason.", labels=["reason"]
        )
        for reason in sorted({*REJECT_REASONS, *m.rejects}):
            rejects.add_metric([reason], m.rejects[reason])
        yield rejects
        alerts = CounterMetricFamily(
            "rnnstream_alerts",
            "Alert events, by event: an incident opened, or closed (also when its stream's "
            "state went: ended, dropped, reset, evicted, reloaded).",
            labels=["event"],
        )
        for event in sorted({*ALERT_EVENTS, *m.alerts}):
            alerts.add_metric([event], m.alerts[event])
        yield alerts
        control = CounterMetricFamily(
            "rnnstream_control_commands",
            "Control requests answered, by command and outcome (ok, error); an undecodable "
            'request or an unknown command counts as cmd "invalid".',
            labels=["cmd", "outcome"],
        )
        for cmd, outcome in CONTROL_SERIES:
            control.add_metric([cmd, outcome], m.control_commands[cmd, outcome])
        yield control
        for name, hist, doc in (
            ("rnnstream_batch_size", m.batch_size, "Readings stepped per engine call."),
            ("rnnstream_step_seconds", m.step_seconds, "Engine time per call."),
            ("rnnstream_latency_seconds", m.latency_seconds, "Producer ts to publication."),
            ("rnnstream_snapshot_seconds", m.snapshot_seconds, "Time to write a snapshot."),
        ):
            family = HistogramMetricFamily(name, doc)
            family.add_metric([], hist.buckets(), sum_value=hist.total)
            yield family
        live = self.live()
        yield GaugeMetricFamily(
            "rnnstream_live_streams", "Streams with state now.", value=live["streams"]
        )
        yield GaugeMetricFamily(
            "rnnstream_open_alerts",
            "Streams whose alert is open now (restored ones too).",
            value=live["open_alerts"],
        )
        evictions = CounterMetricFamily(
            "rnnstream_evictions",
            "Streams evicted, by cause: idle past --idle-timeout, least recently used at "
            "--max-streams, or forgotten by a reload with reset.",
            labels=["cause"],
        )
        for cause in EVICTION_CAUSES:
            evictions.add_metric([cause], live[f"evicted_{cause}"])
        yield evictions
        yield GaugeMetricFamily(
            "rnnstream_ready", "1 while serving, 0 while stopping.", value=float(live["ready"])
        )
        yield InfoMetricFamily(
            "rnnstream_model",
            "The model being served (its fingerprint; changes on reload).",
            value={"fingerprint": live["model_fingerprint"]},
        )
        yield InfoMetricFamily("rnnstream_build", "This rnnstream.", value={"version": __version__})


def registry_for(metrics: Metrics, live: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """Return a fresh registry holding this daemon's metrics and, as prometheus_client's default
    registry has them, the process's (start time, memory, CPU, descriptors), Python's version
    and its garbage collector's counts."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics, live))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
