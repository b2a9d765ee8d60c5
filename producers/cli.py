"""Send readings to a running `rnnstream serve`: synthetic sensors or a replay of CSV files.

Exit status 0 when every reading left for the daemon, 1 when some were left unsent at the end
(nothing accepted the connection within the linger, the daemon refused this client's CURVE key,
...: the message says which), 2 for a usage mistake. A refused key ends the run at once, and
`--duration` ends it even while sends are held up by a full queue.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from engine.cli import HelpFormatter, UserError
from engine.keys import add_curve_client_arguments
from producers.client import DEFAULT_INGEST_ENDPOINT, Producer
from producers.csv_replay import merge, paced, read_csv
from producers.synthetic import ANOMALY_KINDS, DEFAULT_PERIOD, SyntheticFleet

# Seconds `close` waits at the end for queued readings to leave; a daemon that takes them at all
# takes them well within this.
LINGER = 5.0
# How often a run asks whether the daemon refused the connection for good (a CURVE key it does
# not know, CURVE on one side only): libzmq stops trying then, so sending on would only fill the
# queue and, at its high-water mark, block for good. A send held up this long at the mark asks
# too, then tries again: a daemon not started yet is waited for, as before.
CHECK_EVERY = 0.5
SEND_TIMEOUT = 1.0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", default=DEFAULT_INGEST_ENDPOINT, help="the daemon's ingest socket"
    )
    add_curve_client_arguments(parser)
    parser.add_argument(
        "--progress", type=float, default=5.0, help="seconds between progress lines (0: none)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `synthetic` and `csv` sources as sub-commands."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    fmt = HelpFormatter

    syn = sub.add_parser(
        "synthetic",
        help="realistic sensor signals with labelled anomalies",
        description="Send readings of N synthetic sensors, one reading per stream per tick.",
        formatter_class=fmt,
    )
    syn.add_argument("--streams", type=int, default=10, help="number of sensors")
    syn.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="readings per second over all streams (0: as fast as possible)",
    )
    syn.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    syn.add_argument("--ticks", type=int, default=None, help="stop after this many ticks")
    syn.add_argument("--seed", type=int, default=0, help="random seed of the fleet")
    syn.add_argument("--period", type=int, default=DEFAULT_PERIOD, help="samples per day")
    syn.add_argument(
        "--anomaly-rate",
        type=float,
        default=None,
        help="anomaly starts per sample per stream (default about one per 4 days)",
    )
    syn.add_argument(
        "--kinds",
        default=",".join(ANOMALY_KINDS),
        help="comma-separated anomaly kinds to inject",
    )
    syn.add_argument(
        "--single", action="store_true", help="one message per reading instead of one per tick"
    )
    syn.add_argument(
        "--labels", type=Path, default=None, help="write the injected anomalies to this JSONL file"
    )
    _common(syn)

    csv_p = sub.add_parser(
        "csv",
        help="replay CSV files in time order",
        description="Replay CSV files of readings in time order, paced by their timestamps.",
        formatter_class=fmt,
    )
    csv_p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    csv_p.add_argument(
        "--stream-column", default=None, help="column of stream ids (default: the file's stem)"
    )
    csv_p.add_argument(
        "--time-column",
        default=None,
        help="column of timestamps (default: the first column named like timestamp, time, date "
        "or datetime, or a first column named like an index)",
    )
    csv_p.add_argument(
        "--value-columns",
        default=None,
        help="comma-separated value columns (default: all but time and stream)",
    )
    csv_p.add_argument(
        "--stream", default=None, help="stream id for a single file's rows (no --stream-column)"
    )
    pace = csv_p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=1.0, help="replay X times faster than the timestamps"
    )
    pace.add_argument("--as-fast-as-possible", action="store_true", help="do not pace at all")
    csv_p.add_argument(
        "--max-gap", type=float, default=None, help="cap any single wait at this many seconds"
    )
    csv_p.add_argument(
        "--end", action="store_true", help="mark each stream's last reading with end=true"
    )
    _common(csv_p)


def _require(ok: bool, flag: str, what: str, value: float | None) -> None:
    """Refuse `value` of `flag` with a usage error unless `ok` (checks must refuse NaN too)."""
    if not ok:
        raise UserError(f"{flag} must be {what}, not {value}")


def _check_progress(args: argparse.Namespace) -> None:
    ok = math.isfinite(args.progress) and args.progress >= 0
    _require(ok, "--progress", "a finite number of seconds >= 0 (0: none)", args.progress)


def _producer(args: argparse.Namespace) -> Producer:
    try:
        return Producer(
            args.endpoint,
            linger=LINGER,
            send_timeout=SEND_TIMEOUT,
            server_public_key=args.server_public_key,
            client_secret_key=args.client_secret_key,
        )
    except ValueError as exc:  # bad key material
        raise UserError(str(exc)) from None
    except Exception as exc:  # zmq.ZMQError for a malformed endpoint
        raise UserError(f"cannot connect to {args.endpoint!r}: {exc}") from None


def _close(
    producer: Producer, progress: _Progress, args: argparse.Namespace, rows: str = ""
) -> bool:
    """Close `producer`, waiting up to LINGER seconds, and print the run's summary (plus `rows`);
    say why and return False if readings were left unsent (nothing accepted the connection, the
    daemon refused the CURVE key, ...). Readings left unsent were queued, not sent."""
    progress.stop()
    problem = producer.close()
    verb = "sent" if problem is None else "queued"
    print(progress.line(producer, verb) + rows, file=sys.stderr, flush=True)
    if problem is None:
        return True
    lost = producer.lost_readings  # None: ZeroMQ does not tell how many
    what = {None: "readings", 1: "the reading"}.get(lost, f"all {lost} readings")
    print(
        f"rnnstream produce: {what} for {args.endpoint} were left unsent and are lost: {problem}",
        file=sys.stderr,
    )
    return False


class _GiveUp(Exception):
    """Sending on is pointless: the daemon refused the connection for good, or the run's time
    ran out while a send was held up; `_close` says what was left unsent and why."""


class _Sender:
    """Send through `producer`; give up (`_GiveUp`) once the daemon refused the connection, or
    when `stop_at` (time.monotonic) passes while a send is held up at the high-water mark."""

    def __init__(self, producer: Producer, stop_at: float | None = None) -> None:
        self.producer = producer
        self.stop_at = stop_at
        self.next_check = time.monotonic()

    def __call__(self, send: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Call `send(*args, **kwargs)`, one of the producer's send methods."""
        while True:
            try:
                send(*args, **kwargs)
                break
            except zmq.Again:  # held up at the high-water mark for SEND_TIMEOUT
                self._check()
                if self.stop_at is not None and time.monotonic() >= self.stop_at:
                    raise _GiveUp from None
        if time.monotonic() >= self.next_check:
            self._check()

    def _check(self) -> None:
        self.next_check = time.monotonic() + CHECK_EVERY
        problem = self.producer.connection_problem()
        if problem is not None and problem.handshake_failed:
            raise _GiveUp


class _Progress:
    def __init__(self, every: float) -> None:
        self.every = every
        self.start = time.monotonic()
        self.next = self.start + every
        self.stopped: float | None = None

    def maybe(self, producer: Producer) -> None:
        now = time.monotonic()
        if self.every > 0 and now >= self.next:
            self.next = now + self.every
            # Readings are only queued while no connection gets through.
            verb = "sent" if producer.connection_problem() is None else "queued"
            print(self.line(producer, verb), file=sys.stderr, flush=True)

    def stop(self) -> None:
        """End the run's clock, so that the summary's rate leaves out the wait in `close`."""
        self.stopped = time.monotonic()

    def line(self, producer: Producer, verb: str = "sent") -> str:
        end = time.monotonic() if self.stopped is None else self.stopped
        elapsed = max(end - self.start, 1e-9)
        return (
            f"{verb} {producer.sent_readings} readings in {producer.sent_messages} messages, "
            f"{elapsed:.1f} s, {producer.sent_readings / elapsed:.0f} readings/s"
        )


def run(args: argparse.Namespace) -> int:
    """Run the chosen source until it ends, `--duration`/`--ticks` pass, or Ctrl-C."""
    if args.source == "synthetic":
        return _run_synthetic(args)
    return _run_csv(args)


def _run_synthetic(args: argparse.Namespace) -> int:
    if args.streams < 1:
        raise UserError("--streams must be at least 1")
    rate_ok = math.isfinite(args.rate) and args.rate >= 0
    _require(rate_ok, "--rate", "a finite number >= 0 (0 sends as fast as possible)", args.rate)
    duration_ok = args.duration is None or math.isfinite(args.duration)
    _require(duration_ok, "--duration", "a finite number", args.duration)
    anomaly_rate = args.anomaly_rate
    anomaly_rate_ok = anomaly_rate is None or (math.isfinite(anomaly_rate) and anomaly_rate >= 0)
    _require(anomaly_rate_ok, "--anomaly-rate", "a finite number >= 0", anomaly_rate)
    if args.seed < 0:
        raise UserError("--seed must be at least 0")
    _check_progress(args)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds and anomaly_rate != 0:
        raise UserError("--kinds names no anomaly kind; name some, or give --anomaly-rate 0")
    options = {"period": args.period, "kinds": kinds}
    if anomaly_rate is not None:
        options["anomaly_rate"] = anomaly_rate
    try:
        fleet = SyntheticFleet(args.streams, args.seed, **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    interval = args.streams / args.rate if args.rate > 0 else 0.0
    producer = _producer(args)
    labels = None
    if args.labels is not None:
        try:  # before anything is sent, so that a bad path costs no run
            labels = args.labels.open("w")
        except OSError as exc:
            producer.close(linger=0)
            raise UserError(f"cannot write --labels {args.labels}: {exc.strerror}") from None
    progress = _Progress(args.progress)
    start = time.monotonic()
    stop_at = None if args.duration is None else start + args.duration
    send = _Sender(producer, stop_at)
    flushed = False
    try:
        tick = 0
        while args.ticks is None or tick < args.ticks:
            now = time.monotonic()
            if stop_at is not None and now >= stop_at:
                break
            due = start + tick * interval
            if due > now:
                time.sleep(due - now if stop_at is None else min(due - now, stop_at - now))
                continue
            streams, values = fleet.next_readings()
            ts = time.time()
            if args.single:
                for stream, row in zip(streams, values, strict=True):
                    send(producer.send, stream, row, ts)
            else:
                send(producer.send_many, streams, values, ts)
            tick += 1
            progress.maybe(producer)
    except (KeyboardInterrupt, _GiveUp):
        pass
    finally:
        flushed = _close(producer, progress, args)
    if labels is not None:
        with labels:
            for a in fleet.labels:
                labels.write(json.dumps(a._asdict()) + "\n")
        print(f"wrote {len(fleet.labels)} anomaly labels to {args.labels}", file=sys.stderr)
    return 0 if flushed else 1


def _run_csv(args: argparse.Namespace) -> int:
    # before the files are read, which may take a while
    if not args.as_fast_as_possible:
        ok = math.isfinite(args.speed) and args.speed > 0
        what = "a finite number > 0 (--as-fast-as-possible does not pace at all)"
        _require(ok, "--speed", what, args.speed)
    if args.max_gap is not None:
        ok = math.isfinite(args.max_gap) and args.max_gap >= 0
        _require(ok, "--max-gap", "a finite number >= 0", args.max_gap)
    _check_progress(args)
    value_columns = None
    if args.value_columns:
        value_columns = [c.strip() for c in args.value_columns.split(",") if c.strip()]
    if args.stream is not None and len(args.files) > 1:
        raise UserError("--stream names one file's rows; give one FILE or use --stream-column")
    if args.stream is not None and args.stream_column is not None:
        # `report` would draw just that stream: say so rather than replay every stream
        raise UserError(
            "--stream names the rows of a file without --stream-column; it does not pick one "
            "stream of the column: produce replays them all"
        )
    tables = []
    for path in args.files:
        if not path.is_file():
            raise UserError(f"no such file: {path}")
        try:
            tables.append(
                read_csv(
                    path,
                    stream_column=args.stream_column,
                    time_column=args.time_column,
                    value_columns=value_columns,
                    stream=args.stream,
                )
            )
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a UTF-8 text CSV file") from None
        except ValueError as exc:
            raise UserError(str(exc)) from None
    rows = merge(*tables)
    if not rows:
        raise UserError("the CSV files hold no rows")
    speed = None if args.as_fast_as_possible else args.speed
    last_of = {r.stream: i for i, r in enumerate(rows)} if args.end else {}
    last_rows = set(last_of.values())
    producer = _producer(args)
    progress = _Progress(args.progress)
    send = _Sender(producer)
    index = 0
    flushed = False
    try:
        for group in paced(rows, speed=speed, max_gap=args.max_gap):
            ends = [index + k in last_rows for k in range(len(group))]
            widths = {len(r.values) for r in group}
            if len(group) > 1 and len(widths) == 1:
                send(
                    producer.send_many,
                    [r.stream for r in group],
                    np.array([r.values for r in group], dtype=np.float32),
                    [r.ts for r in group],
                    end=ends if args.end else None,
                )
            else:
                for r, end in zip(group, ends, strict=True):
                    send(producer.send, r.stream, r.values, r.ts, end=end)
            index += len(group)
            progress.maybe(producer)
    except (KeyboardInterrupt, _GiveUp):
        pass
    finally:
        flushed = _close(producer, progress, args, f", {index}/{len(rows)} rows replayed")
    return 0 if flushed else 1
