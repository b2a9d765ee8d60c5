"""Measure alert precision and recall on synthetic fleets, offline (no daemon).

For each seed, a `SyntheticFleet` is fed tick by tick through `StreamEngine.process` (with
timestamps) on the built-in model, exactly as the daemon would step it. The engine's own alert
openings are scored with `engine.demo.match_alerts`, the scoring `rnnstream demo` prints. Alerts
never feed back into the anomaly score, so every other policy is measured by replaying the
recorded scores through the same `alert_batch` kernel; the replay of the engine's policy must
reproduce the engine's events (checked, and reported if not).

Rows with an error gate open only when the reading's surprise (`StepResult.surprise`: its
forecast error in units of the stream's typical error) is at least the gate.

    python bench/alert_quality.py                      # 8 seeds x 1500 ticks, 4 seeds x 6000
    python bench/alert_quality.py --seeds 7 --long-seeds ''   # one fleet, quick

Prints a markdown table: variant, seeds, ticks, recall, precision, alerts per 1000 readings.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.alerts import ALERT_SLAB, EVENT_OPEN, AlertPolicy, alert_batch
from engine.default_model import load_default_model
from engine.demo import match_alerts
from engine.stream import StreamEngine
from producers.synthetic import SyntheticFleet

RATE = 50.0  # readings per second per stream, as in `rnnstream demo`
OLD = AlertPolicy(
    open_level=0.99, close_level=0.9, min_duration=1, cooldown=30, warmup=0, error_gate=0.0
)
NEW = AlertPolicy()


@dataclass
class FleetRun:
    """One fleet fed through the engine: per tick and stream, score, reading and forecast."""

    streams: list[str]
    labels: list
    scores: np.ndarray  # (ticks, n) float64
    surprise: np.ndarray  # (ticks, n) float64
    engine_opens: list[tuple[str, int]]  # (stream, tick) of the engine's own alert openings
    probation: int


def run_fleet(seed: int, n_streams: int, ticks: int, policy: AlertPolicy) -> FleetRun:
    """Feed `ticks` ticks of a seeded fleet through a fresh engine; record what it produced."""
    engine = StreamEngine(load_default_model(), alerts=policy, capacity=n_streams)
    fleet = SyntheticFleet(n_streams, seed=seed)
    scores = np.empty((ticks, n_streams))
    surprise = np.empty((ticks, n_streams))
    opens: list[tuple[str, int]] = []
    for t in range(ticks):
        streams, row = fleet.next_readings()
        result = engine.process(streams, row, np.full(n_streams, t / RATE))
        scores[t] = result.scores
        surprise[t] = result.surprise
        opens.extend((streams[i], t) for i in np.flatnonzero(result.events == EVENT_OPEN))
    probation = engine.anomaly.probation if engine.anomaly is not None else 0
    return FleetRun(fleet.streams, fleet.labels, scores, surprise, opens, probation)


def replay(scores: np.ndarray, surprise: np.ndarray, policy: AlertPolicy) -> list[tuple[int, int]]:
    """Run `alert_batch` over recorded scores and surprise (ticks, n); return (column, tick)."""
    ticks, n = scores.shape
    state = np.zeros((n, AlertPolicy.slab_specs()[ALERT_SLAB][0][0]))
    slots = np.arange(n, dtype=np.int64)
    ts = np.zeros(n)
    events = np.zeros(n, np.int8)
    peaks, lengths, opened = np.zeros(n), np.zeros(n), np.zeros(n)
    opens: list[tuple[int, int]] = []
    for t in range(ticks):
        ts[:] = t / RATE
        alert_batch(
            slots,
            scores[t],
            surprise[t],
            ts,
            state,
            policy.open_level,
            policy.close_level,
            float(policy.min_duration),
            float(policy.cooldown),
            float(policy.warmup),
            policy.error_gate,
            events,
            peaks,
            lengths,
            opened,
        )
        opens.extend((int(j), t) for j in np.flatnonzero(events == EVENT_OPEN))
    return opens


@dataclass
class Tally:
    """Counts summed over seeds for one variant."""

    caught: int = 0
    eligible: int = 0
    true_alerts: int = 0
    alerts: int = 0
    readings: int = 0

    def add(self, run: FleetRun, opens: list[tuple[str, int]]) -> None:
        ticks = run.scores.shape[0]
        m = match_alerts(run.labels, opens, run.probation, ticks)
        self.caught += m.caught
        self.eligible += m.eligible
        self.true_alerts += m.true_alerts
        self.alerts += m.alerts
        self.readings += run.scores.size

    def row(self, name: str, seeds: Sequence[int], ticks: int) -> str:
        recall = self.caught / self.eligible if self.eligible else float("nan")
        precision = self.true_alerts / self.alerts if self.alerts else float("nan")
        per_1000 = 1000.0 * self.alerts / self.readings
        return (
            f"| {name} | {','.join(map(str, seeds))} | {ticks} | {recall:.1%} "
            f"({self.caught}/{self.eligible}) | {precision:.1%} ({self.true_alerts}/"
            f"{self.alerts}) | {per_1000:.2f} |"
        )


def _p(**changes: float) -> AlertPolicy:
    return dataclasses.replace(OLD, **changes)


# (name, policy); every row is a replay of the recorded scores and surprise
VARIANTS: list[tuple[str, AlertPolicy]] = [
    ("first defaults: open 0.99, close 0.9, min 1, cooldown 30, no gate", OLD),
    ("open 1.0", _p(open_level=1.0)),
    ("cooldown 300", _p(cooldown=300)),
    ("min_duration 2", _p(min_duration=2)),
    ("warm-up 450", _p(warmup=450)),
    ("warm-up 900", _p(warmup=900)),
    ("open 0.5, close 0.45", _p(open_level=0.5, close_level=0.45)),
    ("open 0.3, close 0.2", _p(open_level=0.3, close_level=0.2)),
    ("open 0.2, close 0.15", _p(open_level=0.2, close_level=0.15)),
    ("open 0.3, close 0.2, warm-up 450", _p(open_level=0.3, close_level=0.2, warmup=450)),
    ("first defaults + error gate 4", _p(error_gate=4.0)),
    ("open 0.3, close 0.2 + error gate 2", _p(open_level=0.3, close_level=0.2, error_gate=2.0)),
    ("open 0.3, close 0.2 + error gate 3", _p(open_level=0.3, close_level=0.2, error_gate=3.0)),
    ("open 0.3, close 0.2 + error gate 4", _p(open_level=0.3, close_level=0.2, error_gate=4.0)),
    ("open 0.2, close 0.15 + error gate 3", _p(open_level=0.2, close_level=0.15, error_gate=3.0)),
    ("open 0.3, close 0.2, warm-up 450 + error gate 3",
     _p(open_level=0.3, close_level=0.2, warmup=450, error_gate=3.0)),
    (f"**defaults**: open {NEW.open_level}, close {NEW.close_level}, min {NEW.min_duration}, "
     f"cooldown {NEW.cooldown}, warm-up {NEW.warmup}, error gate {NEW.error_gate}", NEW),
]  # fmt: skip


def measure(
    seeds: Sequence[int],
    n_streams: int,
    ticks: int,
    say: Callable[[str], None],
) -> list[str]:
    """Return one table row per variant (plus the engine's own row) over `seeds`."""
    tallies = [Tally() for _ in VARIANTS]
    engine_tally = Tally()
    for seed in seeds:
        began = time.perf_counter()
        run = run_fleet(seed, n_streams, ticks, NEW)
        engine_tally.add(run, run.engine_opens)
        names = run.streams
        for tally, (_, policy) in zip(tallies, VARIANTS, strict=True):
            opens = replay(run.scores, run.surprise, policy)
            tally.add(run, [(names[j], t) for j, t in opens])
        mine = sorted((names[j], t) for j, t in replay(run.scores, run.surprise, NEW))
        if mine != sorted(run.engine_opens):
            say(
                f"note: seed {seed}: the engine's {len(run.engine_opens)} alert openings differ "
                f"from the {len(mine)} of the kernel replay of its policy"
            )
        took = time.perf_counter() - began
        say(f"seed {seed}: {ticks} ticks x {n_streams} streams in {took:.1f} s")
    rows = [engine_tally.row("engine as run (StreamEngine with the defaults)", seeds, ticks)]
    rows += [t.row(name, seeds, ticks) for t, (name, _) in zip(tallies, VARIANTS, strict=True)]
    return rows


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8", help="fleet seeds, demo length")
    parser.add_argument("--ticks", type=int, default=1500, help="ticks per demo-length run")
    parser.add_argument("--long-seeds", default="1,2,3,7", help="seeds of the long runs ('': none)")
    parser.add_argument("--long-ticks", type=int, default=6000, help="ticks per long run")
    parser.add_argument("--streams", type=int, default=300, help="sensors per fleet")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    header = [
        "| variant | seeds | ticks | recall | precision | alerts / 1000 readings |",
        "|---|---|---|---|---|---|",
    ]
    tables = []
    for seeds, ticks in (
        (_seeds(args.seeds), args.ticks),
        (_seeds(args.long_seeds), args.long_ticks),
    ):
        if seeds:
            tables.append(header + measure(seeds, args.streams, ticks, say))
    print("\n\n".join("\n".join(t) for t in tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
