"""Soak run: a daemon under steady load with stream churn for minutes; memory must stay flat.

    python bench/soak.py                                   # 10 minutes, report on stdout
    python bench/soak.py --minutes 5 --out bench/results/soak.md

A real `rnnstream serve` (the built-in model: scoring and alerts on, `--max-streams`,
`--idle-timeout` and periodic snapshots set) gets a paced mix of columnar batches and single
readings from a producer process whose stream ids drift, so streams keep arriving, going idle
and being evicted; every second a few malformed messages as well; and `--steady` streams that
send throughout (`--steady-hz` readings each a second, one columnar message a round). A
subscriber process counts every prediction and follows the steady streams' seqs. Every
`--sample-every` seconds the run records the daemon's `ctl stats`, and ten times a second its
resident memory. Memory is judged by the level the daemon holds, the lowest reading in a window
of two `--checkpoint-every` (engine/bench/soak_memory.py): a periodic snapshot's copy and writer
buffers (~100 MB for a fraction of a second at 150,000 streams) are in some readings only. At
the end the daemon gets SIGTERM, must exit 0 after its snapshot, and a new daemon on the same
state directory must restore exactly that snapshot's streams.

Each periodic snapshot (`--checkpoint-every`; what a daemon killed with SIGKILL restarts from)
is checked while the load runs (engine/bench/snapshot_check.py): as its file appears it is
linked aside and, in a process of its own, restored with `StreamEngine.restore` (the daemon's
loader at start). It must carry the daemon's model fingerprint; hold a number of streams
within what the daemon's `ctl stats` counts and evictions around its copy allow; hold each
steady stream at a seq no lower than the last one the subscriber had a prediction for before
the copy, no higher than the producer had sent, and with its alert state counting as many
readings; and the restored engine must step the steady streams with their next seqs.
`--corrupt-snapshots` damages each copy before its check, to see the check fail.

Passes when every accepted reading's prediction arrived, every malformed message was rejected
and counted, the daemon counted no seq gap or duplicate, each stream's alert publications
alternate open/close and opens - closes equals `open_alerts` (before SIGTERM, in the final
snapshot and after restart), the memory the daemon holds at the end is within `--rss-growth` of
what it held a third of the way in (when the state table has filled; with bursts, once the last
burst's streams were evicted, if later, and not applicable when two windows do not fit after
that), its slots stayed within
--max-streams, shutdown and restore worked, the steady streams' predictions arrived with every
seq once and in order and the final snapshot holds each one's state with all its readings
counted (none restarted), and every periodic snapshot checked passed, at least one per two
`--checkpoint-every`. Exit status 1 otherwise. Not part of the test suite.

With `--bursts N` the run also has N bursts, evenly spread: in `--burst-seconds` seconds,
`--burst-streams` new stream ids with one reading each (the state table grows several doublings)
and `--burst-alerting` streams of a clean periodic signal ending in a spike, so each opens an
alert and goes quiet with it open. All of them then go idle and `--idle-timeout` evicts them,
closing those alerts, and the table shrinks (`StateTable.shrink` renumbers every live slot)
while the steady streams keep sending and snapshots are taken (use a short
`--checkpoint-every`). Bursts add these checks: the bursts' alerting streams' alerts were closed
by eviction; after each burst's eviction the table's slots shrank back and the memory the daemon
holds gave back at least 1 - `--burst-rss-keep` of what it grew by while the burst's streams were
live, and its level after each burst does not climb.

    python bench/soak.py --minutes 15 --bursts 3 --checkpoint-every 2 --idle-timeout 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import multiprocessing as mp
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench.e2e import machine_description  # noqa: E402
from engine.bench.snapshot_check import (  # noqa: E402
    CORRUPTIONS,
    WATCH_TICK_S,
    CheckerSetup,
    PeriodicSnapshotWatcher,
    Verdict,
    WatchSummary,
)
from engine.bench.soak_memory import (  # noqa: E402
    BurstMemory,
    FlatMemory,
    held_at,
    held_window,
    judge_burst,
    judge_flat,
)
from engine.ctl import control  # noqa: E402
from engine.daemon import SNAPSHOT_NAME  # noqa: E402
from engine.default_model import default_model_path  # noqa: E402
from engine.process import ServeProcess  # noqa: E402

PROBE_STREAM = "__soak_probe__"
TICK_S = 0.01  # the producer sends what is due every 10 ms
BAD_FRAMES = (
    b"\xc1 not msgpack",  # NOT_MSGPACK
    b"\x81\xa6stream\xa0",  # {"stream": ""}: BAD_STREAM
)


STEADY_PREFIX = "k"  # steady streams: k0, k1, ...; churning ones s<k>
ALERT_RAMP = 329  # readings of a clean sine before an alerting stream's spike (past probation)
ALERT_SPIKE = 40.0


def _burst_plan(args: argparse.Namespace) -> list[dict]:
    """When each burst starts (seconds into the run) and what it sends."""
    total = args.minutes * 60
    return [
        {
            "index": b,
            "at": total * (b + 1) / (args.bursts + 1),
            "seconds": args.burst_seconds,
            "streams": args.burst_streams,
            "alerting": args.burst_alerting,
        }
        for b in range(args.bursts)
    ]


class _Burst:
    """One burst's sending: new ids with one reading each, and alerting streams that each get
    ALERT_RAMP readings of a clean sine and then a spike, all spread over its seconds."""

    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.new_sent = 0
        self.rounds = 0
        self.alerting = [f"a{plan['index']}.{i}" for i in range(plan["alerting"])]
        self.done = False

    def send_due(self, producer: Any, rng: np.random.Generator, elapsed: float) -> int:
        plan = self.plan
        fraction = min(1.0, (elapsed - plan["at"]) / plan["seconds"])
        if fraction < 0:
            return 0
        sent = 0
        due = int(fraction * plan["streams"]) - self.new_sent
        while due > 0:
            n = min(64, due)
            ids = [f"b{plan['index']}.{self.new_sent + i}" for i in range(n)]
            producer.send_many(ids, rng.normal(0.0, 1.0, (n, 1)).astype(np.float32))
            self.new_sent += n
            sent += n
            due -= n
        rounds_due = int(fraction * (ALERT_RAMP + 1)) - self.rounds
        for _ in range(rounds_due if self.alerting else 0):
            k = self.rounds
            if k < ALERT_RAMP:
                phase = 2 * np.pi * (k + np.arange(len(self.alerting))) / 20
                values = np.sin(phase).astype(np.float32).reshape(-1, 1)
            else:
                values = np.full((len(self.alerting), 1), ALERT_SPIKE, np.float32)
            producer.send_many(self.alerting, values)
            self.rounds += 1
            sent += len(self.alerting)
        self.done = fraction >= 1.0
        return sent


def _producer_main(
    conn: Any, endpoint: str, rate: float, window: int, churn: float, extra: dict, announced: Any
) -> None:
    """Send `rate` readings/s until told to stop: 70% in batches of 64, the rest single.

    Stream ids are `s<k>` with k drawn from [churn * t, churn * t + window): ids drift by
    `churn` per second, so old streams go idle and new ones arrive all the time. Also
    `extra["steady"]` steady streams `k<i>`, each `extra["steady_hz"]` readings a second in one
    columnar message per round (round r is seq r of each; `announced` holds the last round before
    it is sent), and the bursts of `extra["bursts"]`.
    """
    import zmq

    from producers.client import Producer

    rng = np.random.default_rng(1)
    producer = Producer(endpoint, hwm=1_000_000, linger=30.0)
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.connect(endpoint)
    steady = [f"{STEADY_PREFIX}{i}" for i in range(extra.get("steady", 0))]
    steady_hz = extra.get("steady_hz", 0.0)
    bursts = [_Burst(plan) for plan in extra.get("bursts", [])]
    probes = 0
    while not conn.poll(0.05):  # probe until the subscriber has seen a prediction
        producer.send(PROBE_STREAM, [0.0])
        probes += 1
    conn.recv()
    start = time.monotonic()
    sent = bad = rounds = burst_sent = 0
    next_bad = start + 1.0
    while not conn.poll(0):
        now = time.monotonic()
        due = int((now - start) * rate) - sent
        base = int((now - start) * churn)
        while due > 0:
            n = 64 if due >= 64 and rng.random() < 0.7 else 1
            ids = [f"s{k}" for k in rng.integers(base, base + window, n)]
            values = rng.normal(0.0, 1.0, (n, 1)).astype(np.float32)
            if n == 1:
                producer.send(ids[0], values[0])
            else:
                producer.send_many(ids, values)
            sent += n
            due -= n
        if steady:
            for _ in range(int((now - start) * steady_hz) - rounds):
                # before sending: no snapshot can hold a seq the soak has not been told of
                announced.value = rounds + 1
                producer.send_many(
                    steady, rng.normal(0.0, 1.0, (len(steady), 1)).astype(np.float32)
                )
                rounds += 1
        for burst in bursts:
            if not burst.done:
                burst_sent += burst.send_due(producer, rng, now - start)
        if now >= next_bad:
            for frame in BAD_FRAMES:
                raw.send(frame)
            bad += len(BAD_FRAMES)
            next_bad += 1.0
        time.sleep(TICK_S)
    raw.close(linger=5000)
    producer.close()
    conn.send(
        {
            "sent": sent + rounds * len(steady) + burst_sent,
            "bad": bad,
            "probes": probes,
            "steady_sent": {s: producer.last_seq(s) for s in steady},
            "burst_sent": burst_sent,
            "bursts_done": sum(burst.done for burst in bursts),
        }
    )


def _subscriber_main(conn: Any, endpoint: str, received: Any) -> None:
    """Count predictions (not the probe's), errors and alerts until told to stop; follow the
    steady streams' seqs (the last received of `k<i>` also in `received[i]`, for the snapshot
    checks) and every stream's alert opens and closes."""
    import msgpack
    import zmq

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.rcvhwm = 0
    for topic in (b"pred.", b"error", b"alert."):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    probe_topic = b"pred." + PROBE_STREAM.encode()
    steady_topic = b"pred." + STEADY_PREFIX.encode()
    received_seq = np.frombuffer(received, np.int64)
    counts: dict[str, Any] = {"predictions": 0, "errors": 0, "alerts": 0}
    steady_seq: dict[str, int] = {}
    steady_breaks: list[str] = []
    alert_open: dict[str, bool] = {}
    opens = closes = 0
    close_reasons: dict[str, int] = {}
    alternation: list[str] = []
    probed = False

    def receive_one() -> None:
        nonlocal probed, opens, closes
        topic = sock.recv()
        payload = sock.recv()
        if topic == probe_topic:
            if not probed:
                probed = True
                conn.send("probed")
        elif topic.startswith(b"pred."):
            counts["predictions"] += 1
            if topic.startswith(steady_topic):
                message = msgpack.unpackb(payload)
                stream, seq = message["stream"], message["seq"]
                last = steady_seq.get(stream, 0)
                if seq != last + 1 and len(steady_breaks) < 20:
                    steady_breaks.append(f"{stream}: seq {seq} after {last}")
                counts["steady_breaks"] = counts.get("steady_breaks", 0) + (seq != last + 1)
                steady_seq[stream] = seq
                received_seq[int(stream[len(STEADY_PREFIX) :])] = seq  # after receiving it
        elif topic == b"error":
            counts["errors"] += 1
        else:
            counts["alerts"] += 1
            alert = msgpack.unpackb(payload)
            stream, opening = alert["stream"], alert["event"] == "open"
            if alert_open.get(stream, False) == opening and len(alternation) < 20:
                alternation.append(
                    f"{stream}: {alert['event']} while {'' if opening else 'not '}open"
                )
            counts["alternation_errors"] = counts.get("alternation_errors", 0) + (
                alert_open.get(stream, False) == opening
            )
            alert_open[stream] = opening
            if opening:
                opens += 1
            else:
                closes += 1
                reason = str(alert.get("reason"))
                close_reasons[reason] = close_reasons.get(reason, 0) + 1

    while not conn.poll(0):
        if sock.poll(100):
            receive_one()
    conn.recv()
    while sock.poll(500):  # what is still in flight
        receive_one()
    counts.update(
        steady_seq=steady_seq,
        steady_breaks=counts.get("steady_breaks", 0),
        steady_break_examples=steady_breaks,
        alternation_errors=counts.get("alternation_errors", 0),
        alternation_examples=alternation,
        opens=opens,
        closes=closes,
        close_reasons=close_reasons,
        open_streams=sorted(s for s, is_open in alert_open.items() if is_open),
    )
    conn.send(counts)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _snapshot_facts(path: Path, steady: list[str]) -> dict:
    """What the daemon's final snapshot holds: its streams, open alerts, and per steady stream
    its last seq and the readings its alert state counted."""
    from engine.alerts import A_OPEN, A_SEEN, ALERT_SLAB
    from engine.stream import SEQ_SLAB, read_snapshot

    header, arrays = read_snapshot(path)
    streams = header["streams"]
    alert = arrays[f"slab_{ALERT_SLAB}"]
    where = {stream: i for i, stream in enumerate(streams)}
    seq = arrays[f"slab_{SEQ_SLAB}"]
    return {
        "streams": streams,
        "open_alerts": int((alert[:, A_OPEN] > 0.0).sum()),
        "steady": {
            s: (int(seq[where[s]]) - 1, int(alert[where[s], A_SEEN])) if s in where else None
            for s in steady
        },
    }


def run(args: argparse.Namespace) -> tuple[str, bool]:
    ctx = mp.get_context("spawn")
    plan = _burst_plan(args) if args.bursts else []
    extra = {"steady": args.steady, "steady_hz": args.steady_hz, "bursts": plan}
    steady = [f"{STEADY_PREFIX}{i}" for i in range(args.steady)]
    # shared with the producer and the subscriber, for the periodic snapshots' checks
    announced = ctx.RawValue("q", 0)
    received = ctx.RawArray("q", max(1, len(steady)))
    with tempfile.TemporaryDirectory(prefix="rnnstream-soak-") as tmp:
        state = Path(tmp) / "state"
        serve_args = [
            "--state-dir",
            str(state),
            "--max-streams",
            str(args.max_streams),
            "--idle-timeout",
            str(args.idle_timeout),
            "--checkpoint-every",
            str(args.checkpoint_every),
        ]
        server = ServeProcess(default_model_path(), tmp, extra=serve_args).start()
        sub_conn, sub_child = ctx.Pipe()
        prod_conn, prod_child = ctx.Pipe()
        subscriber = ctx.Process(
            target=_subscriber_main, args=(sub_child, server.publish, received)
        )
        producer = ctx.Process(
            target=_producer_main,
            args=(prod_child, server.ingest, args.rate, args.window, args.churn, extra, announced),
        )
        subscriber.start()
        producer.start()
        watcher = _snapshot_watcher(
            args, server, state, Path(tmp) / "periodic", steady, announced, received
        ).start()
        if not sub_conn.poll(60):
            raise RuntimeError("the subscriber saw no prediction within 60 s")
        sub_conn.recv()
        prod_conn.send("go")
        began = time.monotonic()
        samples = []
        # the daemon's memory every turn of the loop: its level between snapshot writes
        rss_trace: list[tuple[float, float]] = []
        deadline = began + args.minutes * 60
        # with bursts, a sample a second (the table's size and memory around each burst); the
        # report's table keeps one per --sample-every
        every = 1.0 if plan else args.sample_every
        next_sample = began + every
        next_print = args.sample_every
        while True:
            # between samples, the periodic snapshots are taken as they appear and checked
            while (now := time.monotonic()) < min(next_sample, deadline):
                rss_trace.append((now - began, _rss_mb(server.pid)))
                verdict = watcher.tick()
                if verdict is not None:
                    print(_verdict_line(verdict, now - began), file=sys.stderr)
                time.sleep(max(0.0, min(WATCH_TICK_S, next_sample - now, deadline - now)))
            stats = control(server.control, "stats", timeout=10.0)
            # `every` after this sample, as the runs in bench/results were sampled
            next_sample = time.monotonic() + every
            samples.append(
                {
                    "t": time.monotonic() - began,
                    "rss": _rss_mb(server.pid),
                    "streams": stats["streams"],
                    "capacity": stats["capacity"],
                    "idle": stats["evicted_idle"],
                    "lru": stats["evicted_lru"],
                    "readings": stats["readings_in"],
                    "rejects": sum(stats["rejects"].values()),
                    "snapshots": stats["snapshots"],
                    "alerts": sum(stats["alerts"].values()),
                    "open_alerts": stats["open_alerts"],
                }
            )
            samples[-1]["table"] = samples[-1]["t"] >= next_print - every / 2
            if samples[-1]["table"]:
                next_print += args.sample_every
                print(_sample_line(samples[-1]), file=sys.stderr)
            if now >= deadline:
                break
        periodic = watcher.finish()
        prod_conn.send("stop")
        produced = prod_conn.recv()
        producer.join(30)
        time.sleep(2.0)  # the daemon drains its queue
        final = control(server.control, "stats", timeout=10.0)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(60)
        # after the daemon's exit: every alert it published is in, none can follow
        sub_conn.send("stop")
        received = sub_conn.recv()
        subscriber.join(30)
        shutdown = re.findall(r"why=shutdown streams=(\d+)", server.log_text())
        saved = int(shutdown[-1]) if shutdown else -1
        snapshot = _snapshot_facts(state / SNAPSHOT_NAME, steady)
        # no idle timeout on the restored daemon: its first sweep would race the health check
        restored = ServeProcess(default_model_path(), tmp, extra=["--state-dir", str(state)])
        restored.start()
        try:
            health = control(restored.control, "health", timeout=10.0)
            after = control(restored.control, "stats", timeout=10.0)
            listed = control(restored.control, "streams", timeout=30.0, limit=10**8)
        finally:
            restored.stop()
    restart = {
        "health": health,
        "open_alerts": after["open_alerts"],
        "streams": listed["streams"],
    }
    return _report(
        args,
        plan,
        samples,
        np.asarray(rss_trace, dtype=np.float64).reshape(-1, 2),
        produced,
        received,
        final,
        exit_code,
        saved,
        snapshot,
        restart,
        periodic,
    )


def _snapshot_watcher(
    args: argparse.Namespace,
    server: ServeProcess,
    state: Path,
    aside: Path,
    steady: list[str],
    announced: Any,
    received: Any,
) -> PeriodicSnapshotWatcher:
    """A watcher of the daemon's periodic snapshots, checked against the producer's announced
    rounds, the subscriber's received seqs and the daemon's counts of streams."""
    setup = CheckerSetup(
        str(default_model_path()),
        {"max_streams": args.max_streams, "idle_timeout": args.idle_timeout},
        steady,
        control(server.control, "health", timeout=10.0)["model"],
        args.corrupt_snapshots,
    )
    seqs = np.frombuffer(received, np.int64)[: len(steady)]
    return PeriodicSnapshotWatcher(
        state / SNAPSHOT_NAME,
        aside,
        setup,
        count_table=lambda: control(server.control, "stats", timeout=10.0),
        announced=lambda: announced.value,
        received=lambda: seqs,
    )


def _live_until(args: argparse.Namespace, burst: dict) -> float:
    """Until when a burst's streams are all live: none is idle past the timeout yet."""
    return burst["at"] + burst["seconds"] + args.idle_timeout


def _settled_at(args: argparse.Namespace, burst: dict) -> float:
    """When a burst's streams have been evicted (3 s for the sweep)."""
    return _live_until(args, burst) + 3.0


def _burst_rows(
    args: argparse.Namespace, plan: list[dict], samples: list[dict], rss_trace: np.ndarray
) -> list[dict]:
    """Per burst: the sample before it, the table at its largest, the first sample once its
    streams were evicted and the last before the next burst (or the end), and the memory the
    daemon held around it (`judge_burst`)."""
    window = held_window(args.checkpoint_every)
    rows = []
    since = 0.0
    for i, burst in enumerate(plan):
        until = plan[i + 1]["at"] if i + 1 < len(plan) else math.inf
        before = [s for s in samples if s["t"] < burst["at"]][-1]
        during = [s for s in samples if burst["at"] <= s["t"] < until]
        quiet = _settled_at(args, burst)
        settled = [s for s in during if s["t"] >= quiet]
        if not during or not settled:
            rows.append({"burst": burst, "before": before, "memory": None})
            continue
        memory = judge_burst(
            rss_trace,
            window,
            since=since,
            at=burst["at"],
            live_until=_live_until(args, burst),
            settled=quiet,
            until=min(until, float(rss_trace[-1, 0])),
        )
        rows.append(
            {
                "burst": burst,
                "before": before,
                "memory": memory,
                "peak_capacity": max(s["capacity"] for s in during),
                "peak_streams": max(s["streams"] for s in during),
                "peak_open": max(s["open_alerts"] for s in during),
                "first_settled": settled[0],
                "after": settled[-1],
                "snapshots": settled[0]["snapshots"] - before["snapshots"],
            }
        )
        since = quiet
    return rows


def _sample_line(s: dict) -> str:
    return (
        f"{s['t']:7.0f} s  rss {s['rss']:7.1f} MB  streams {s['streams']:6d}  "
        f"slots {s['capacity']:6d}  "
        f"evicted idle {s['idle']:8d} lru {s['lru']:8d}  readings {s['readings']:10d}  "
        f"rejects {s['rejects']:6d}"
    )


def _report(
    args: argparse.Namespace,
    plan: list[dict],
    samples: list[dict],
    rss_trace: np.ndarray,
    produced: dict,
    received: dict,
    final: dict,
    exit_code: int,
    saved: int,
    snapshot: dict,
    restart: dict,
    periodic: WatchSummary,
) -> tuple[str, bool]:
    table = [s for s in samples if s["table"]]
    window = held_window(args.checkpoint_every)
    sent, bad = produced["sent"], produced["bad"]
    published = final["predictions_out"] - produced["probes"]
    snapshot_ids = snapshot["streams"]
    restored_ids = restart["streams"]
    tally = received["opens"] - received["closes"]
    checks = [
        (
            "every reading's prediction arrived",
            received["predictions"] == sent == published,
            f"{received['predictions']:,} received, {sent:,} sent, daemon published "
            f"{published:,} (not counting {produced['probes']} probes)",
        ),
        (
            "every malformed message rejected and counted",
            received["errors"] == bad == sum(final["rejects"].values()),
            f"{bad} sent, {received['errors']} error messages, "
            f"{sum(final['rejects'].values())} counted",
        ),
        (
            "no seq gap or duplicate counted by the daemon (the producer makes none)",
            final["gaps"] == 0 and final["duplicates"] == 0,
            f"{final['gaps']} gaps, {final['duplicates']} duplicates",
        ),
        (
            "alerts: each stream's opens and closes alternate; opens - closes = open_alerts",
            received["alternation_errors"] == 0
            and tally == final["open_alerts"] == snapshot["open_alerts"] == restart["open_alerts"],
            f"{received['opens']:,} opens, {received['closes']:,} closes "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(received['close_reasons'].items()))}),"
            f" {received['alternation_errors']} out of turn"
            f"{_examples(received['alternation_examples'])}"
            f"; open_alerts {final['open_alerts']} before SIGTERM, {snapshot['open_alerts']} in "
            f"the snapshot, {restart['open_alerts']} after restart",
        ),
        _flat_check(args, plan, rss_trace),
        (
            "state slots bounded (<= --max-streams)",
            all(s["capacity"] <= args.max_streams for s in samples),
            f"largest {max(s['capacity'] for s in samples):,} slots",
        ),
        (
            "SIGTERM: snapshot and exit 0",
            exit_code == 0 and saved > 0 and saved == len(snapshot_ids),
            f"exit status {exit_code}, {saved:,} streams in the shutdown snapshot "
            f"({len(snapshot_ids):,} in its file)",
        ),
        (
            "restart restores exactly the snapshot's streams",
            restart["health"]["streams"] == saved and sorted(restored_ids) == sorted(snapshot_ids),
            f"{saved:,} in the snapshot, {restart['health']['streams']:,} live after restart, "
            f"{len(set(restored_ids) ^ set(snapshot_ids))} ids differ",
        ),
    ]
    if args.steady:
        checks += _steady_checks(produced, received, snapshot)
    checks.append(_periodic_check(args, periodic))
    bursts = _burst_rows(args, plan, samples, rss_trace)
    if plan:
        checks += _burst_checks(args, plan, bursts, produced, received)
    ok = all(passed is not False for _, passed, _ in checks)  # None: not applicable
    lines = [
        "# rnnstream soak run",
        "",
        f"- command: `python bench/soak.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_description()}",
        f"- daemon: built-in model (scoring and alerts), `--max-streams {args.max_streams} "
        f"--idle-timeout {args.idle_timeout} --checkpoint-every {args.checkpoint_every}`, "
        "publish mode each",
        f"- load: {args.rate:,.0f} readings/s for {args.minutes:g} min (70% in batches of 64, the "
        f"rest single), stream ids drawn from a window of {args.window:,} drifting by "
        f"{args.churn:g} ids/s; {args.steady:,} steady streams at {args.steady_hz:g} "
        f"readings/s each; {len(BAD_FRAMES)} malformed messages a second",
    ]
    if plan:
        lines.append(
            f"- bursts: {len(plan)} (at {', '.join(str(round(b['at'])) for b in plan)} s), each "
            f"{args.burst_streams:,} new streams with one reading and {args.burst_alerting} "
            f"alerting streams ({ALERT_RAMP} readings of a sine, then a spike) in "
            f"{args.burst_seconds:g} s; {produced['burst_sent']:,} burst readings"
        )
    lines += [
        f"- totals: {sent:,} readings, {final['evicted_idle']:,} idle and "
        f"{final['evicted_lru']:,} least-recently-used evictions, "
        f"{final['snapshots']} periodic snapshots ({len(periodic.verdicts)} checked while "
        f"loaded), {received['alerts']:,} alert messages",
        "",
        "| check | passed | measured |",
        "|---|---|---|",
        *(f"| {name} | {_passed(ok_)} | {detail} |" for name, ok_, detail in checks),
        "",
    ]
    if plan:
        lines += [
            "Around each burst: the memory the daemon held (the lowest of its readings, "
            f"{WATCH_TICK_S:g} s apart, in a window of {window:g} s) in the window before it, "
            "at most while its streams were live (and the highest single reading, with a "
            "snapshot's buffers) and in the last window before the next burst or the end; "
            "slots and streams from the samples a second apart: before it, at the table's "
            "largest, the first once its streams were idle past the timeout, and the last.",
            "",
            "| burst | before: held MB / slots / streams | while live: held MB (highest reading) / "
            "slots / streams / open alerts | evicted: t s / slots / streams | later: t s / held "
            "MB / slots | snapshots in between |",
            "|---|---|---|---|---|---|",
            *(_burst_line(row) for row in bursts),
            "",
        ]
    lines += [
        f"| t (s) | RSS (MB) | held over {window:g} s (MB) | live streams | slots | evicted idle "
        "| evicted LRU | readings in | rejects | snapshots | open alerts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {s['t']:.0f} | {s['rss']:.1f} | {held_at(rss_trace, s['t'], window):.1f} | "
            f"{s['streams']:,} | {s['capacity']:,} | "
            f"{s['idle']:,} | {s['lru']:,} | {s['readings']:,} | {s['rejects']:,} | "
            f"{s['snapshots']} | {s['open_alerts']} |"
            for s in table
        ),
    ]
    return "\n".join(lines) + "\n", ok


def _burst_checks(
    args: argparse.Namespace,
    plan: list[dict],
    bursts: list[dict],
    produced: dict,
    received: dict,
) -> list[tuple[str, bool, str]]:
    settled = [row for row in bursts if row["memory"] is not None]
    # shrunk, and not sparse: a table shrinks when under a quarter of its slots are live
    shrunk = [
        row
        for row in settled
        if row["after"]["capacity"] < row["peak_capacity"]
        and row["after"]["capacity"] <= max(1024, 4 * row["after"]["streams"])
    ]

    memory: list[BurstMemory] = [row["memory"] for row in settled]
    returned = [m for m in memory if m.kept <= args.burst_rss_keep]
    # what glibc keeps of the small objects (ids, dict, messages) is reused by the next burst:
    # the level after each burst must not climb
    floor = memory[0].after.mb if memory else 0.0
    ratchet = [m for m in memory if m.after.mb > floor * (1 + args.rss_growth)]
    evicted_open = received["close_reasons"].get("evicted", 0)
    alerting = args.burst_alerting * len(plan)
    return [
        (
            "bursts ran to the end, each evicted before the next or the end",
            produced["bursts_done"] == len(plan) and len(settled) == len(plan),
            f"{produced['bursts_done']} of {len(plan)} sent whole, {len(settled)} with "
            "samples after their eviction",
        ),
        (
            "the bursts' alerting streams opened alerts and eviction closed them",
            evicted_open >= alerting,
            f"{alerting} alerting streams, {evicted_open} closes for eviction, largest "
            f"open_alerts {max((r['peak_open'] for r in settled), default=0)}",
        ),
        (
            "the table shrank after each burst's eviction (to at most 4 slots a live stream)",
            len(shrunk) == len(plan),
            ", ".join(
                f"{r['peak_capacity']:,} -> {r['after']['capacity']:,} slots "
                f"({r['after']['streams']:,} live)"
                for r in settled
            ),
        ),
        (
            f"memory came back after each burst (held: kept <= {args.burst_rss_keep:.0%} of its "
            "growth)",
            len(returned) == len(plan),
            ", ".join(
                f"{m.before.mb:.0f} -> {m.peak.mb:.0f} (highest reading {m.highest.mb:.0f}) -> "
                f"{m.after.mb:.0f} MB, kept {m.kept:.0%}"
                for m in memory
            ),
        ),
        (
            f"no ratchet: memory held after each burst within {args.rss_growth:.0%} of the first's",
            not ratchet,
            ", ".join(f"{m.after.mb:.1f} MB at {m.after.t:.0f} s" for m in memory),
        ),
    ]


def _periodic_check(args: argparse.Namespace, periodic: WatchSummary) -> tuple[str, bool, str]:
    """The periodic snapshots checked while loaded: none failed, at least one per two intervals."""
    needed = max(1, int(args.minutes * 60 / (2 * args.checkpoint_every)))
    verdicts, failed = periodic.verdicts, periodic.failed
    detail = (
        f"{len(verdicts)} checked of {periodic.written} written while loaded "
        f"({periodic.skipped} appeared during a check; at least {needed} needed), "
        f"{len(failed)} failed" + _examples([f"{v.name}: {v.problems[0]}" for v in failed[:3]])
    )
    loaded = [v for v in verdicts if v.streams is not None]
    if loaded:
        widths = [b[1] - b[0] for v in loaded if (b := v.count_bounds) and b[1] is not None]
        above = _span(_ends(loaded, "above_received"))
        below = _span(_ends(loaded, "below_sent"))
        detail += (
            f"; {_span([v.streams for v in loaded])} streams, bounds at most "
            f"{max(widths, default=0):,} wide; steady seqs {above} over the last received before "
            f"the copy (known for {sum(v.lower_known for v in loaded)}) and {below} under the "
            f"rounds sent; each restored and stepped; taken "
            f"{_span([v.file_age for v in loaded], '{:.2f}')} s after its copy, checked in "
            f"{_span([v.seconds for v in verdicts], '{:.2f}')} s"
        )
    return (
        "periodic snapshots while loaded: each loads, model, stream count, steady seqs, steps",
        not failed and len(verdicts) >= needed,
        detail,
    )


def _ends(verdicts: list[Verdict], name: str) -> list[int]:
    return [end for v in verdicts if (pair := getattr(v, name)) is not None for end in pair]


def _span(values: list, fmt: str = "{:,}") -> str:
    if not values:
        return "-"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low} to {high}"


def _verdict_line(verdict: Verdict, t: float) -> str:
    low, high = verdict.count_bounds or (0, None)
    state = "ok" if verdict.passed else "FAILED: " + "; ".join(verdict.problems)
    return (
        f"{t:7.0f} s  periodic snapshot {verdict.name}: {verdict.streams} streams in "
        f"[{low}, {high}], steady seqs {_span(list(verdict.above_received or ()))} over received, "
        f"{_span(list(verdict.below_sent or ()))} under sent; checked in {verdict.seconds:.2f} s: "
        f"{state}"
    )


def _steady_checks(produced: dict, received: dict, snapshot: dict) -> list[tuple[str, bool, str]]:
    sent = produced["steady_sent"]
    got = received["steady_seq"]
    short = [s for s, n in sent.items() if got.get(s) != n]
    in_snapshot = snapshot["steady"]
    restarted = [s for s, n in sent.items() if in_snapshot[s] is None or in_snapshot[s] != (n, n)]
    return [
        (
            "steady streams: every seq predicted once and in order",
            received["steady_breaks"] == 0 and not short,
            f"{len(sent)} streams, {sum(sent.values()):,} readings; "
            f"{received['steady_breaks']} seq breaks"
            f"{_examples(received['steady_break_examples'])}"
            f", {len(short)} streams short of their readings",
        ),
        (
            "steady streams never restarted: the snapshot's seq and alert count = readings sent",
            not restarted,
            f"{len(sent) - len(restarted)} of {len(sent)} as sent"
            + _examples(
                [f"{s}: sent {sent[s]}, (seq, counted) {in_snapshot[s]}" for s in restarted]
            ),
        ),
    ]


def _examples(examples: list[str]) -> str:
    return f" (e.g. {'; '.join(examples[:5])})" if examples else ""


def _burst_line(row: dict) -> str:
    b, before, memory = row["burst"], row["before"], row["memory"]
    if memory is None:
        return (
            f"| {b['index'] + 1} at {b['at']:.0f} s | - / {before['capacity']:,} / "
            f"{before['streams']:,} | no samples | | | |"
        )
    first, after = row["first_settled"], row["after"]
    return (
        f"| {b['index'] + 1} at {b['at']:.0f} s | {memory.before.mb:.1f} / "
        f"{before['capacity']:,} / {before['streams']:,} | {memory.peak.mb:.1f} "
        f"({memory.highest.mb:.1f}) / {row['peak_capacity']:,} / {row['peak_streams']:,} / "
        f"{row['peak_open']} | {first['t']:.0f} / {first['capacity']:,} / {first['streams']:,} | "
        f"{memory.after.t:.0f} / {memory.after.mb:.1f} / {after['capacity']:,} | "
        f"{row['snapshots']} |"
    )


def _flat_check(
    args: argparse.Namespace, plan: list[dict], rss_trace: np.ndarray
) -> tuple[str, bool | None, str]:
    """Memory held at the end against a third of the way in or, with bursts, once the last
    burst's streams were evicted: the same bursts behind both levels (`judge_flat`)."""
    window = held_window(args.checkpoint_every)
    since = max((_settled_at(args, burst) for burst in plan), default=0.0)
    flat: FlatMemory = judge_flat(rss_trace, window, since, args.rss_growth)
    name = f"memory flat: held at the end within {args.rss_growth:.0%} of it a third in" + (
        " or after the last burst's eviction" if plan else ""
    )
    if flat.passed is None:
        start = "the last burst's eviction" if flat.start == since else "a third in"
        return (
            name,
            None,
            f"not applicable: from {start} ({flat.start:.0f} s) to the end ({flat.end:.0f} s) "
            f"there is no room for two windows of {window:g} s",
        )
    assert flat.reference is not None and flat.last is not None and flat.growth is not None
    return (
        name,
        flat.passed,
        f"{flat.reference.mb:.1f} MB at {flat.reference.t:.0f} s -> {flat.last.mb:.1f} MB at "
        f"{flat.last.t:.0f} s ({flat.growth:+.1%}); the lowest reading in a window of "
        f"{window:g} s, readings {WATCH_TICK_S:g} s apart",
    )


def _passed(passed: bool | None) -> str:
    return "n/a" if passed is None else "yes" if passed else "**no**"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the loaded run")
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings per second")
    parser.add_argument("--window", type=int, default=3_000, help="stream ids live at a time")
    parser.add_argument("--churn", type=float, default=100.0, help="new stream ids per second")
    parser.add_argument("--max-streams", type=int, default=5_000, help="the daemon's limit")
    parser.add_argument("--idle-timeout", type=float, default=20.0, help="the daemon's, seconds")
    parser.add_argument("--checkpoint-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--steady",
        type=int,
        default=None,
        help="streams sending throughout (default 1000 with bursts, 100 without)",
    )
    parser.add_argument("--steady-hz", type=float, default=2.0, help="readings/s per steady one")
    parser.add_argument(
        "--corrupt-snapshots",
        choices=CORRUPTIONS,
        default=None,
        help="an experiment: damage each periodic snapshot's copy before its check, which must "
        "then fail (bytes: 64 overwritten; behind / ahead: seqs 5 lower / higher; half: half "
        "the streams)",
    )
    parser.add_argument(
        "--rss-growth",
        type=float,
        default=0.05,
        help="allowed growth of held memory after the first third (or the last burst)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    bursts = parser.add_argument_group("bursts (the table grows, then shrinks)")
    bursts.add_argument("--bursts", type=int, default=0, help="how many, evenly spread")
    bursts.add_argument("--burst-streams", type=int, default=100_000, help="new ids a burst")
    bursts.add_argument(
        "--burst-alerting", type=int, default=200, help="streams a burst that open an alert"
    )
    bursts.add_argument("--burst-seconds", type=float, default=4.0, help="a burst's length")
    bursts.add_argument(
        "--burst-rss-keep",
        type=float,
        default=0.9,
        help="share of a burst's growth in held memory the daemon may keep after its eviction "
        "(glibc and Python keep freed small objects: ids, dict entries, messages; 45-80%% kept "
        "with malloc_trim after the shrink, over 100%% without)",
    )
    args = parser.parse_args()
    if args.steady is None:
        args.steady = 1_000 if args.bursts else 100
    if args.bursts and args.max_streams < 2 * args.burst_streams:
        args.max_streams = 4 * args.burst_streams  # room to grow, no LRU eviction
    if args.bursts and args.minutes * 60 / (args.bursts + 1) < (
        args.burst_seconds + args.idle_timeout + 10
    ):
        parser.error("bursts too close together for their streams to be evicted between them")
    if args.minutes * 60 < 3 * args.sample_every:
        parser.error("--minutes must allow at least three samples")
    if not 0 < 2 * args.checkpoint_every <= args.minutes * 60:
        parser.error("--minutes must span two --checkpoint-every (periodic snapshots are checked)")
    report, ok = run(args)
    sys.stdout.write(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
