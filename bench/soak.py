"""Soak run: a daemon under steady load with stream churn for minutes; memory must stay flat.

    python bench/soak.py                                   # 10 minutes, report on stdout
    python bench/soak.py --minutes 5 --out bench/results/soak.md

A real `rnnstream serve` (the built-in model: scoring and alerts on, `--max-streams`,
`--idle-timeout` and periodic snapshots set) gets a paced mix of columnar batches and single
readings from a producer process whose stream ids drift, so streams keep arriving, going idle
and being evicted; every second a few malformed messages as well. A subscriber process counts
every prediction. Every `--sample-every` seconds the run records the daemon's resident memory
and its `ctl stats`. At the end the daemon gets SIGTERM, must exit 0 after its snapshot, and a
new daemon on the same state directory must restore every stream.

Passes when every accepted reading's prediction arrived, every malformed message was rejected
and counted, the daemon's memory in the last sample is within `--rss-growth` of its level a
third of the way in (when the state table has filled), its slots stayed within --max-streams, and
shutdown and restore worked. Exit status 1 otherwise. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from engine.ctl import control  # noqa: E402
from engine.default_model import default_model_path  # noqa: E402
from engine.process import ServeProcess  # noqa: E402

PROBE_STREAM = "__soak_probe__"
TICK_S = 0.01  # the producer sends what is due every 10 ms
BAD_FRAMES = (
    b"\xc1 not msgpack",  # NOT_MSGPACK
    b"\x81\xa6stream\xa0",  # {"stream": ""}: BAD_STREAM
)


def _producer_main(conn: Any, endpoint: str, rate: float, window: int, churn: float) -> None:
    """Send `rate` readings/s until told to stop: 70% in batches of 64, the rest single.

    Stream ids are `s<k>` with k drawn from [churn * t, churn * t + window): ids drift by
    `churn` per second, so old streams go idle and new ones arrive all the time.
    """
    import zmq

    from producers.client import Producer

    rng = np.random.default_rng(1)
    producer = Producer(endpoint, hwm=1_000_000, linger=30.0)
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.connect(endpoint)
    probes = 0
    while not conn.poll(0.05):  # probe until the subscriber has seen a prediction
        producer.send(PROBE_STREAM, [0.0])
        probes += 1
    conn.recv()
    start = time.monotonic()
    sent = bad = 0
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
        if now >= next_bad:
            for frame in BAD_FRAMES:
                raw.send(frame)
            bad += len(BAD_FRAMES)
            next_bad += 1.0
        time.sleep(TICK_S)
    raw.close(linger=5000)
    producer.close()
    conn.send({"sent": sent, "bad": bad, "probes": probes})


def _subscriber_main(conn: Any, endpoint: str) -> None:
    """Count predictions (not the probe's), errors and alerts until told to stop."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.rcvhwm = 0
    for topic in (b"pred.", b"error", b"alert."):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    probe_topic = b"pred." + PROBE_STREAM.encode()
    counts = {"predictions": 0, "errors": 0, "alerts": 0}
    probed = False

    def receive_one() -> None:
        nonlocal probed
        topic = sock.recv()
        sock.recv()
        if topic == probe_topic:
            if not probed:
                probed = True
                conn.send("probed")
        elif topic.startswith(b"pred."):
            counts["predictions"] += 1
        elif topic == b"error":
            counts["errors"] += 1
        else:
            counts["alerts"] += 1

    while not conn.poll(0):
        if sock.poll(100):
            receive_one()
    conn.recv()
    while sock.poll(500):  # what is still in flight
        receive_one()
    conn.send(counts)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run(args: argparse.Namespace) -> tuple[str, bool]:
    ctx = mp.get_context("spawn")
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
        subscriber = ctx.Process(target=_subscriber_main, args=(sub_child, server.publish))
        producer = ctx.Process(
            target=_producer_main,
            args=(prod_child, server.ingest, args.rate, args.window, args.churn),
        )
        subscriber.start()
        producer.start()
        if not sub_conn.poll(60):
            raise RuntimeError("the subscriber saw no prediction within 60 s")
        sub_conn.recv()
        prod_conn.send("go")
        began = time.monotonic()
        samples = []
        deadline = began + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(args.sample_every, max(0.0, deadline - time.monotonic())))
            stats = control(server.control, "stats", timeout=10.0)
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
                }
            )
            print(_sample_line(samples[-1]), file=sys.stderr)
        prod_conn.send("stop")
        produced = prod_conn.recv()
        producer.join(30)
        time.sleep(2.0)  # the daemon drains its queue
        final = control(server.control, "stats", timeout=10.0)
        sub_conn.send("stop")
        received = sub_conn.recv()
        subscriber.join(30)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(60)
        shutdown = re.findall(r"why=shutdown streams=(\d+)", server.log_text())
        saved = int(shutdown[-1]) if shutdown else -1
        # no idle timeout on the restored daemon: its first sweep would race the health check
        restored = ServeProcess(default_model_path(), tmp, extra=["--state-dir", str(state)])
        restored.start()
        try:
            health = control(restored.control, "health", timeout=10.0)
        finally:
            restored.stop()
    return _report(args, samples, produced, received, final, exit_code, saved, health)


def _sample_line(s: dict) -> str:
    return (
        f"{s['t']:7.0f} s  rss {s['rss']:7.1f} MB  streams {s['streams']:6d}  "
        f"slots {s['capacity']:6d}  "
        f"evicted idle {s['idle']:8d} lru {s['lru']:8d}  readings {s['readings']:10d}  "
        f"rejects {s['rejects']:6d}"
    )


def _report(
    args: argparse.Namespace,
    samples: list[dict],
    produced: dict,
    received: dict,
    final: dict,
    exit_code: int,
    saved: int,
    health: dict,
) -> tuple[str, bool]:
    third = samples[len(samples) // 3]
    last = samples[-1]
    growth = last["rss"] / third["rss"] - 1.0
    sent, bad = produced["sent"], produced["bad"]
    published = final["predictions_out"] - produced["probes"]
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
            f"memory flat: last sample within {args.rss_growth:.0%} of the sample at a third",
            growth <= args.rss_growth,
            f"{third['rss']:.1f} MB at {third['t']:.0f} s -> {last['rss']:.1f} MB at "
            f"{last['t']:.0f} s ({growth:+.1%})",
        ),
        (
            "state slots bounded (<= --max-streams)",
            all(s["capacity"] <= args.max_streams for s in samples),
            f"largest {max(s['capacity'] for s in samples):,} slots",
        ),
        (
            "SIGTERM: snapshot and exit 0",
            exit_code == 0 and saved > 0,
            f"exit status {exit_code}, {saved:,} streams in the shutdown snapshot",
        ),
        (
            "restart restores every stream",
            health["streams"] == saved,
            f"{saved:,} in the snapshot, {health['streams']:,} live after restart",
        ),
    ]
    ok = all(passed for _, passed, _ in checks)
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
        f"{args.churn:g} ids/s; {len(BAD_FRAMES)} malformed messages a second",
        f"- totals: {sent:,} readings, {final['evicted_idle']:,} idle and "
        f"{final['evicted_lru']:,} least-recently-used evictions, "
        f"{final['snapshots']} periodic snapshots, {received['alerts']:,} alert messages",
        "",
        "| check | passed | measured |",
        "|---|---|---|",
        *(f"| {name} | {'yes' if ok_ else '**no**'} | {detail} |" for name, ok_, detail in checks),
        "",
        "| t (s) | RSS (MB) | live streams | slots | evicted idle | evicted LRU | "
        "readings in | rejects | snapshots |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {s['t']:.0f} | {s['rss']:.1f} | {s['streams']:,} | {s['capacity']:,} | "
            f"{s['idle']:,} | {s['lru']:,} | {s['readings']:,} | {s['rejects']:,} | "
            f"{s['snapshots']} |"
            for s in samples
        ),
    ]
    return "\n".join(lines) + "\n", ok


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
        "--rss-growth", type=float, default=0.05, help="allowed growth after the first third"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if args.minutes * 60 < 3 * args.sample_every:
        parser.error("--minutes must allow at least three samples")
    report, ok = run(args)
    sys.stdout.write(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
