"""Intake and control commands interleaved at random on one real daemon, checked against a model.

A seeded run drives `rnnstream serve` with the built-in scoring model through single readings and
columnar batches over a few streams (sequence numbers with duplicates, gaps and restarts, `reset`
and `end` flags, bad rows and bad messages mixed in, a crowd of streams that grows and shrinks the
state table) and the control commands `reset`, `drop`, `threshold`, `snapshot`, `reload` (keeping
states, and with `reset`), `streams` and `stats`, with a SIGTERM (readings still on their way)
and a restart on the same state directory half-way. Beside it runs a reference: an in-process
`StreamEngine` of the same model fed the same accepted readings and the same commands in the same
order, and the sequence rules of docs/PROTOCOL.md written out afresh. Every `pred.` must carry
the reference's seq, ts, prediction and score (to float32 rounding), every alert its event,
reason, seq, peak and length, every rejection its reason, and `stats` and `streams` must agree
with what was sent and seen. A fence before each command and each check orders it after
everything sent before it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from daemon_harness import DaemonProcess, pack

from engine.alerts import A_SEEN, ALERT_SLAB, AlertPolicy, CloseReason
from engine.default_model import default_model_path
from engine.kernels.sequence import NO_SEQ
from engine.model import Model
from engine.stream import StreamEngine

STREAMS = ["pump-a", "pump-b", "pump-ç", "pump-d", "valve"]
UNKNOWN = "never-seen"
T0 = 1.6e9  # far from the clock: each stamped reading counts in stats' latency_unmeasured
CLOSE_LEVEL = 0.2  # the daemon's --alert-close default, which a global threshold lowers to
OPS = 80  # per daemon life; two lives per seed
# No error gate: any new extreme past a stream's probation opens an alert, so that incidents
# come often enough in a short run to meet every command and flag that closes them.
POLICY = AlertPolicy(error_gate=0.0)
READING_FIELDS = ("seq", "ts", "score", "value", "expected", "feature", "surprise", "severity")


def close(got: list, want: list) -> bool:
    """Equal to float32 rounding: the daemon steps a pass's readings in one batched call, the
    reference one at a time, and the two sum in another order (StreamEngine.step_many)."""
    got, want = np.hstack(got).astype(np.float64), np.hstack(want).astype(np.float64)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-5, atol=1e-5))


def exact(alert: tuple) -> tuple:
    """An alert's fields that must be equal: all but its score (open) or peak (close)."""
    return alert[:2] if alert[0] == "open" else alert[:3] + alert[4:]


def score(alert: tuple) -> float:
    return alert[2] if alert[0] == "open" else alert[3]


@dataclasses.dataclass
class Row:
    """One row the producer sends: a reading, or a bad row the daemon must reject."""

    stream: object
    values: object  # a list of numbers (or something bad)
    seq: object = None
    ts: object = None
    reset: object = None
    end: object = None
    bad: str | None = None  # the rejection reason when the row is bad


class Reference:
    """What the daemon must publish: an in-process engine plus the documented seq rules."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.engine = StreamEngine(model, alerts=POLICY)
        self.last_seq: dict[str, int] = {}
        self.preds: dict[str, list[tuple]] = {}
        self.alerts: dict[str, list[tuple]] = {}
        self.counts: Counter = Counter()
        self.rejects: Counter = Counter()

    # ------------------------------------------------------------------ intake
    def reading(self, row: Row) -> None:
        stream = row.stream
        if row.reset:
            self.engine.reset(stream)
            self.last_seq.pop(stream, None)
            self._closed(None)
        seq = row.seq
        if seq is not None:
            last = self.last_seq.get(stream)
            if last is not None and seq != 1:  # seq 1 always starts afresh
                if seq <= last:
                    self.counts["duplicates"] += 1
                    self.rejects["duplicate"] += 1
                    return  # dropped whole, its `end` with it
                if seq != last + 1:
                    self.counts["gaps"] += 1
            self.last_seq[stream] = seq
        ts = math.nan if row.ts is None else float(row.ts)
        x = np.asarray(row.values, np.float32).reshape(1, -1)
        result = self.engine.process([stream], x, [ts], [NO_SEQ])
        self.counts["readings"] += 1
        self.counts["stamped"] += row.ts is not None
        pred = (seq, None if row.ts is None else float(row.ts))
        pred += (result.outputs[0].tolist(), float(result.scores[0]))
        self.preds.setdefault(stream, []).append(pred)
        event = int(result.events[0])
        if event == 1:
            self._alert(stream, ("open", seq, float(result.scores[0])))
        elif event == 2:
            peak, length = float(result.peaks[0]), int(result.lengths[0])
            self._alert(stream, ("close", "score", seq, peak, length))
        if row.end:
            self.engine.drop(stream, CloseReason.END)
            self.last_seq.pop(stream, None)
            self._closed(seq)

    def reject(self, reason: str) -> None:
        self.rejects[reason] += 1

    # ----------------------------------------------------------------- control
    def reset(self, stream: str) -> bool:
        existed = self.engine.reset(stream)
        self.last_seq.pop(stream, None)
        self._closed(None)
        return existed

    def drop(self, stream: str) -> bool:
        existed = self.engine.drop(stream)
        self.last_seq.pop(stream, None)
        self._closed(None)
        return existed

    def threshold(self, level: float) -> None:
        self.engine.alerts = dataclasses.replace(
            self.engine.alerts, open_level=level, close_level=min(CLOSE_LEVEL, level)
        )

    def reload(self, reset: bool) -> None:
        self.engine.swap_model(self.model, reset=reset)
        if reset:
            self.last_seq.clear()
        self._closed(None)

    def age(self, stream: str) -> int:
        """Readings the stream's state has seen since it started from zeros."""
        if stream not in self.engine:
            return 0
        return int(self.engine.state_of(stream)[ALERT_SLAB][A_SEEN])

    def alerting(self) -> list[str]:
        """The streams whose alert is open now."""
        return [
            s for s in self.engine.streams() if self.alerts.get(s, [("close",)])[-1][0] == "open"
        ]

    def restarted(self) -> None:
        """A restarted daemon keeps streams, seqs and alerts, not a global threshold."""
        self.engine.alerts = POLICY

    def _closed(self, seq: int | None) -> None:
        for closed in self.engine.take_closed_alerts():
            self._alert(
                closed.stream, ("close", str(closed.reason), seq, closed.peak, closed.readings)
            )

    def _alert(self, stream: str, alert: tuple) -> None:
        self.alerts.setdefault(stream, []).append(alert)
        self.counts[alert[0]] += 1


class Seen:
    """What the daemon published, as the reference records it."""

    def __init__(self) -> None:
        self.preds: dict[str, list[tuple]] = {}
        self.alerts: dict[str, list[tuple]] = {}
        self.rejects: Counter = Counter()

    def take(self, items: list[tuple[str, dict]]) -> None:
        for kind, p in items:
            if kind == "pred":
                pred = (p["seq"], p["ts"], p["prediction"], p["score"])
                self.preds.setdefault(p["stream"], []).append(pred)
            elif kind == "alert":
                if p["event"] == "open":
                    alert = ("open", p["seq"], p["score"])
                else:
                    alert = ("close", p["reason"], p["seq"], p["peak"], p["readings"])
                    if p["reason"] not in ("score", "end"):
                        assert all(p[key] is None for key in READING_FIELDS), p
                self.alerts.setdefault(p["stream"], []).append(alert)
            elif kind == "error":
                self.rejects[p["reason"]] += 1
            else:
                raise AssertionError(f"unexpected publication {kind}: {p}")


class Producer:
    """Makes random readings, good and bad; keeps each stream's next seq."""

    def __init__(self, rng: np.random.Generator, age: Callable[[str], int]) -> None:
        self.rng = rng
        self.age = age  # readings a stream's state has seen: past probation, it may alert
        self.next_seq = Counter()
        self.count = Counter()  # readings made of each stream, for smooth values and spikes
        self.spike = Counter()  # readings of a stream's incident still to come
        self.top = Counter()  # the height of a stream's incident
        self.clock = T0

    def value(self, stream: str) -> float:
        k = self.count[stream]
        self.count[stream] += 1
        base = 10.0 * (1 + STREAMS.index(stream))
        if not self.spike[stream] and self.age(stream) > 320 and self.rng.random() < 0.03:
            self.spike[stream] = int(self.rng.integers(1, 30))
            self.top[stream] = max(self.top[stream], base)
        if self.spike[stream]:  # new extremes, one after another: an incident that lasts
            self.spike[stream] -= 1
            self.top[stream] += 5.0 + self.rng.random()
            return self.top[stream]
        return base + math.sin(k / 4) + 0.05 * self.rng.normal()

    def row(self, stream: str | None = None, flags: float = 0.03) -> Row:
        rng = self.rng
        stream = stream or STREAMS[rng.integers(len(STREAMS))]
        self.clock += 1.0
        row = Row(stream, [self.value(stream)], ts=self.clock if rng.random() < 0.8 else None)
        u = rng.random()
        last = self.next_seq[stream] - 1
        if u < 0.08:
            pass  # no seq
        elif u < 0.14 and last >= 1:
            row.seq = int(rng.integers(max(0, last - 3), last + 1))  # resent: a duplicate
        elif u < 0.18:
            row.seq = last + int(rng.integers(2, 5))  # a gap
        elif u < 0.20:
            row.seq = 1  # a producer counting afresh
        else:
            row.seq = last + 1
        if row.seq is not None:
            self.next_seq[stream] = max(self.next_seq[stream], row.seq + 1)
        if rng.random() < flags:
            row.reset = True
        if rng.random() < flags / 2:
            row.end = True
        return row

    def bad_row(self) -> Row:
        row = self.row()
        kind = self.rng.integers(7)
        if kind == 0:
            row.values, row.bad = [1.0, 2.0], "wrong_length"
        elif kind == 1:
            row.values, row.bad = ["x"], "bad_values"
        elif kind == 2:
            row.values, row.bad = [math.inf], "non_finite"
        elif kind == 3:
            row.stream, row.bad = "", "bad_stream"
        elif kind == 4:
            row.seq, row.bad = -1, "bad_seq"
        elif kind == 5:
            row.ts, row.bad = "noon", "bad_ts"
        else:
            row.reset, row.bad = "yes", "bad_flag"
        return row


def single_frame(row: Row) -> bytes:
    msg = {"stream": row.stream, "values": row.values}
    for key in ("seq", "ts", "reset", "end"):
        if getattr(row, key) is not None:
            msg[key] = getattr(row, key)
    return pack(msg)


def batch_frame(rows: list[Row], as_bin: bool) -> bytes:
    msg: dict = {"streams": [r.stream for r in rows]}
    if as_bin:
        msg["values"] = np.array([r.values for r in rows], "<f4").tobytes()
    else:
        msg["values"] = [r.values for r in rows]
    for key in ("seq", "ts", "reset", "end"):
        column = [getattr(r, key) for r in rows]
        if any(v is not None for v in column):
            msg[key] = column
    return pack(msg)


class Run:
    """One seeded run: a daemon, its clients, the reference, and the checks."""

    def __init__(self, seed: int, folder) -> None:
        self.rng = np.random.default_rng(seed)
        self.folder = folder
        self.model = Model.load(default_model_path())
        self.ref = Reference(self.model)
        self.seen = Seen()
        self.make = Producer(self.rng, self.ref.age)
        self.log: list[str] = []  # what was done, to reproduce a failure by hand
        self.crowds = 0

    def start(self) -> None:
        self.proc = DaemonProcess(
            default_model_path(),
            self.folder / "state",
            args=["--checkpoint-every", "0.5", "--alert-error-gate", "0"],
        ).start()
        self.sub = self.proc.subscriber(("pred.", "alert.", "error"))
        self.push = self.proc.push()
        self.base = self.proc.stats()  # the sync probes are in it
        self.fences = 0
        self.base_ref = Counter(self.ref.counts)
        self.base_rejects = Counter(self.ref.rejects)
        self.base_reload = self.ref.engine.stats()["evicted_reload"] - self.base["evicted_reload"]
        self.base_seen_rejects = Counter(self.seen.rejects)

    def sync(self) -> None:
        self.seen.take(self.proc.until_fence(self.sub, self.push))
        self.fences += 1
        self.compare()

    # ------------------------------------------------------------------- ops
    def op(self) -> None:
        rng = self.rng
        u = rng.random()
        if u < 0.30:
            alerting = self.ref.alerting()
            if alerting and rng.random() < 0.3:  # an incident open: end or reset it by a reading
                row = self.make.row(str(rng.choice(alerting)), flags=0.5)
            elif rng.random() < 0.93:
                row = self.make.row()
            else:
                row = self.make.bad_row()
            self.log.append(f"single {row}")
            self.push.send(single_frame(row))
            self.feed([row])
        elif u < 0.70:
            if rng.random() < 0.4:  # a burst of one or two streams, to get past probation
                names = [
                    str(s) for s in rng.choice(STREAMS, int(rng.integers(1, 3)), replace=False)
                ]
                n = int(rng.integers(40, 160))
            else:
                names, n = STREAMS, int(rng.integers(1, 30))
            flags = 0.0 if n >= 40 else 0.01  # few resets and ends: some streams must get old
            rows = [self.make.row(names[rng.integers(len(names))], flags) for _ in range(n)]
            as_bin = rng.random() < 0.5
            if not as_bin and rng.random() < 0.5:
                rows.insert(int(rng.integers(len(rows) + 1)), self.make.bad_row())
            self.log.append(f"batch bin={as_bin} {rows}")
            self.push.send(batch_frame(rows, as_bin))
            self.feed(rows)
        elif u < 0.71 and rng.random() < 0.5:
            self.crowd()
        elif u < 0.72:
            frame, reason = (
                (b"\xc1", "not_msgpack") if rng.random() < 0.5 else (pack([1]), "not_a_map")
            )
            self.log.append(reason)
            self.push.send(frame)
            self.ref.reject(reason)
        else:
            self.control(u)

    def crowd(self) -> None:
        """A crowd of new streams comes and ends: the state table grows, then shrinks, moving
        every live stream to another slot."""
        n = int(self.rng.integers(1100, 1600))
        names = [f"crowd-{self.crowds}-{i}" for i in range(n)]
        self.crowds += 1
        self.log.append(f"crowd of {n}")
        for end in (None, True):
            rows = [Row(s, [float(i % 7)], seq=1 + bool(end), end=end) for i, s in enumerate(names)]
            self.push.send(batch_frame(rows, as_bin=True))
            self.feed(rows)

    def feed(self, rows: list[Row]) -> None:
        for row in rows:
            if row.bad is not None:
                self.ref.reject(row.bad)
            else:
                self.ref.reading(row)

    def control(self, u: float) -> None:
        rng, ref = self.rng, self.ref
        self.sync()  # the command comes after everything sent before it
        live, alerting = ref.engine.streams(), ref.alerting()
        if alerting and rng.random() < 0.6:  # an incident open: close it by a command
            stream = str(rng.choice(alerting))
        else:
            stream = str(rng.choice(live)) if live and rng.random() < 0.8 else UNKNOWN
        if u < 0.75:
            self.command("reset", {"existed": ref.reset(stream)}, stream=stream)
        elif u < 0.77:
            self.command("drop", {"existed": ref.drop(stream)}, stream=stream)
        elif u < 0.82:
            level = round(float(rng.uniform(0.2, 1.0)), 3)
            if rng.random() < 0.5:
                ref.threshold(level)
                close = ref.engine.alerts.close_level
                self.command("threshold", {"level": level, "close_level": close}, level=level)
            else:
                level = None if rng.random() < 0.3 else level
                ok = ref.engine.set_threshold(stream, level)
                want = {"stream": stream, "level": level} if ok else {"ok": False}
                self.command("threshold", want, stream=stream, level=level)
        elif u < 0.84:
            self.command("snapshot", {"streams": len(ref.engine)})
        elif u < 0.88:
            reset = bool(rng.random() < 0.15)
            ref.reload(reset)
            want = {"model": self.model.fingerprint, "streams": len(ref.engine)}
            path = None if rng.random() < 0.5 else str(default_model_path())
            self.command("reload", want, path=path, reset=reset)
        else:
            self.check()

    def command(self, cmd: str, want: dict, **fields) -> None:
        self.log.append(f"control {cmd} {fields}")
        reply = self.proc.control(cmd, **fields)
        got = {key: reply.get(key) for key in want}
        if "ok" not in want:
            assert reply["ok"], reply
        assert got == want, (cmd, fields, reply, self.tail())

    def check(self) -> None:
        """Counters and live streams agree with what was sent and seen."""
        self.log.append("check")
        self.sync()
        ref, seen, stats = self.ref, self.seen, self.proc.stats()
        counts = ref.counts - self.base_ref
        b = self.base
        assert stats["readings_in"] - b["readings_in"] == counts["readings"] + self.fences
        assert stats["predictions_out"] - b["predictions_out"] == counts["readings"] + self.fences
        assert stats["duplicates"] - b["duplicates"] == counts["duplicates"]
        assert stats["gaps"] - b["gaps"] == counts["gaps"]
        rejects = Counter(stats["rejects"])
        rejects.subtract(b["rejects"])
        assert +rejects == ref.rejects - self.base_rejects
        assert +rejects == seen.rejects - self.base_seen_rejects
        for event in ("open", "close"):
            delta = stats["alerts"].get(event, 0) - b["alerts"].get(event, 0)
            assert delta == counts[event], (event, stats["alerts"], counts)
        assert stats["latency_unmeasured"] - b["latency_unmeasured"] == counts["stamped"]
        assert stats["open_alerts"] == ref.engine.open_alerts()
        assert stats["evicted_reload"] == ref.engine.stats()["evicted_reload"] - self.base_reload
        assert stats["evictions"] - b["evictions"] == stats["evicted_reload"] - b["evicted_reload"]
        assert stats["streams"] == len(ref.engine)
        reply = self.proc.control("streams")
        assert sorted(reply["streams"]) == sorted(ref.engine.streams()), self.tail()

    def compare(self) -> None:
        ref, seen = self.ref, self.seen
        for stream in sorted(set(ref.preds) | set(seen.preds)):
            want, got = ref.preds.get(stream, []), seen.preds.get(stream, [])
            assert len(got) == len(want), (stream, len(got), len(want), self.tail())
            for i, (w, g) in enumerate(zip(want, got, strict=True)):
                assert g[:2] == w[:2] and close(g[2:], w[2:]), (stream, i, g, w, self.tail())
        for stream in sorted(set(ref.alerts) | set(seen.alerts)):
            got, want = seen.alerts.get(stream, []), ref.alerts.get(stream, [])
            assert [exact(a) for a in got] == [exact(a) for a in want], (stream, got, want)
            assert close([score(a) for a in got], [score(a) for a in want]), (stream, got, want)

    def restart(self) -> None:
        """SIGTERM with readings still on their way: the daemon serves them before it stops."""
        self.log.append("restart")
        self.sync()
        for _ in range(5):
            rows = [self.make.row(flags=0.02) for _ in range(int(self.rng.integers(1, 200)))]
            self.push.send(batch_frame(rows, as_bin=True))
            self.feed(rows)
        assert self.proc.stop() == 0, self.proc.stderr_text()
        while (item := self.sub.recv(timeout=1.0)) is not None:
            self.seen.take([item])
        self.compare()
        self.proc.close()
        self.ref.restarted()
        self.start()

    def tail(self) -> str:
        return "\n".join(self.log[-8:])[-4000:]


def assert_incidents_pair(alerts: dict[str, list[tuple]], live_open: set[str]) -> None:
    """Per stream, opens and closes alternate, and only streams open now end on an open."""
    for stream, events in alerts.items():
        kinds = [a[0] for a in events]
        assert kinds[::2] == ["open"] * len(kinds[::2]), (stream, kinds)
        assert kinds[1::2] == ["close"] * len(kinds[1::2]), (stream, kinds)
        assert (kinds[-1] == "open") == (stream in live_open), (stream, kinds)


# Seeds whose runs meet closes for a score, a drop and an end between them (the ops
# depend on the seed alone); RNNSTREAM_INTERLEAVE_SEEDS="1-50" hunts with others.
FIRST, _, LAST = os.environ.get("RNNSTREAM_INTERLEAVE_SEEDS", "").partition("-")
CHOSEN = [7, 26]
SEEDS = range(int(FIRST), int(LAST or FIRST) + 1) if FIRST else CHOSEN


@pytest.mark.parametrize("seed", SEEDS)
def test_random_interleavings_of_intake_and_control_publish_what_the_reference_does(tmp_path, seed):
    run = Run(seed, tmp_path)
    run.start()
    try:
        for life in range(2):
            for _ in range(OPS):
                run.op()
            run.check()
            if life == 0:
                run.restart()
        live_open = set(run.ref.alerting())
    finally:
        run.proc.close()
    assert_incidents_pair(run.seen.alerts, live_open)
    counts = run.ref.counts
    if seed not in CHOSEN:
        return  # a seed tried while hunting may meet no incident; the chosen ones are checked
    assert counts["readings"] > 2000 and counts["duplicates"] > 5 and counts["gaps"] > 5
    assert counts["open"] >= 1 and counts["close"] >= 1, counts
    assert len(run.ref.rejects) >= 5, run.ref.rejects
