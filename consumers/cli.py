"""Watch a running `rnnstream serve`: tail its output, record predictions, or collect alerts.

Exit status 0 after --count records, --duration seconds, Ctrl-C or SIGTERM; 1 when the daemon
refused the connection's handshake (an unknown CURVE key, CURVE on one side only: the message
says which); 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from consumers.client import DEFAULT_PUBLISH_ENDPOINT, Subscriber
from engine import protocol
from engine.cli import HelpFormatter, UserError
from engine.keys import add_curve_client_arguments
from engine.logs import one_line

_DEFAULT_TOPICS = {
    "tail": ["pred.", "batch.pred", "alert.", "error"],
    "record": ["pred.", "batch.pred"],
    "alerts": ["alert."],
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", default=DEFAULT_PUBLISH_ENDPOINT, help="the daemon's publish socket"
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=None,
        help="subscription prefix, repeatable (default depends on the command)",
    )
    parser.add_argument(
        "--stream",
        action="append",
        default=None,
        help="keep only this exact stream id, repeatable",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--count", type=int, default=None, help="stop after this many records")
    add_curve_client_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `tail`, `record` and `alerts` sub-commands."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = HelpFormatter
    tail = sub.add_parser(
        "tail",
        help="print predictions, alerts and errors as they arrive",
        description="Print one readable line per prediction, alert and error as they arrive.",
        formatter_class=fmt,
    )
    tail.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="highlight alerts"
    )
    _common(tail)
    record = sub.add_parser(
        "record",
        help="write every prediction to a CSV or JSON-lines file",
        description="Write every prediction (batch publications expanded) to a file.",
        formatter_class=fmt,
    )
    record.add_argument("--out", type=Path, required=True, help="output file")
    record.add_argument(
        "--format",
        choices=["csv", "jsonl"],
        default=None,
        help="file format (default: jsonl for .jsonl/.json files, else csv)",
    )
    _common(record)
    alerts = sub.add_parser(
        "alerts",
        help="print alerts, optionally appending them to a JSON-lines file",
        description="Print alerts as they open and close; optionally append them to a file.",
        formatter_class=fmt,
    )
    alerts.add_argument("--append", type=Path, default=None, help="append alerts to this JSONL")
    _common(alerts)


class _Refused(Exception):
    """The daemon's end of the connection failed the handshake; the message says why."""


def _records(sub: Subscriber, duration: float | None, endpoint: str) -> Iterator[tuple[str, dict]]:
    """Yield (kind, payload) with batch publications expanded into "pred" rows.

    A daemon in `--publish-mode both` sends every prediction twice, as `pred.<stream>` and in a
    `batch.pred`, a pass's `pred.` messages before its batch; so once a `pred.` message has
    arrived, batches are skipped, and each prediction is yielded once in any mode. Raise
    `_Refused` when nothing arrives because the handshake failed: ZeroMQ would wait forever.
    Otherwise it waits (the daemon may start, or come back, later), and says once on stderr
    what it waits for: nothing accepted the connection, the daemon hung up.
    """
    per_reading = False
    seen = said = None
    stop_at = None if duration is None else time.monotonic() + duration
    while True:
        wait = 0.5
        if stop_at is not None:
            wait = min(wait, stop_at - time.monotonic())
            if wait <= 0:
                return
        item = sub.recv(timeout=wait)
        if item is None:
            # asked only while idle: a Subscriber that gets publications pays nothing for it
            problem = sub.connection_problem()
            if problem is not None and problem.handshake_failed:
                raise _Refused(problem.reason)
            # said once it held for two idle checks: a handshake under way is not news
            reason = None if problem is None else problem.reason
            if reason is None:
                said = None  # through again: a later outage is news again
            elif reason == seen and reason != said:
                print(f"rnnstream consume: waiting for {endpoint}: {reason}", file=sys.stderr)
                said = reason
            seen = reason
            continue
        kind, payload = item
        if kind == "batch":
            if not per_reading:
                for row in protocol.batch_rows(payload):
                    yield "pred", row
            continue
        per_reading = per_reading or kind == "pred"
        yield kind, payload


def _clock(ts: Any) -> str:
    when = ts if isinstance(ts, int | float) and math.isfinite(ts) else time.time()
    try:
        return datetime.fromtimestamp(when).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return f"{when:.3f}"


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _vec(xs: Any) -> str:
    if isinstance(xs, list):
        return "[" + ", ".join(_num(v) for v in xs) + "]"
    return _num(xs)


def format_record(kind: str, p: dict) -> str:
    """Return one readable line for a decoded prediction, alert or error."""
    return one_line(_record_text(kind, p))  # stream ids and details are what producers sent


def _record_text(kind: str, p: dict) -> str:
    if kind == "pred":
        return (
            f"{_clock(p.get('ts'))}  {p['stream']}  seq={_num(p.get('seq'))}  "
            f"pred={_vec(p.get('prediction'))}  score={_num(p.get('score'))}"
        )
    if kind == "alert":
        parts = [f"{_clock(p.get('ts'))}  ALERT {str(p.get('event', '?')).upper()}  {p['stream']}"]
        if p.get("event") == "close":
            parts.append(
                f"reason={_num(p.get('reason'))}  peak={_num(p.get('peak'))}  "
                f"readings={_num(p.get('readings'))}  duration={_num(p.get('duration'))}"
            )
        if p.get("value") is not None:  # a close between readings (evicted, dropped) has none
            parts.append(
                f"seq={_num(p.get('seq'))}  severity={_num(p.get('severity'))}  "
                f"score={_num(p.get('score'))}  value={_vec(p.get('value'))}  "
                f"expected={_vec(p.get('expected'))}  feature={_num(p.get('feature'))}"
            )
        return "  ".join(parts)
    where = f"  stream={p['stream']}" if p.get("stream") is not None else ""
    row = f"  row={p['row']}" if p.get("row") is not None else ""
    return f"{_clock(None)}  ERROR {p.get('reason')}{where}{row}  {p.get('detail', '')}"


def _subscriber(args: argparse.Namespace) -> Subscriber:
    topics = args.topic if args.topic else _DEFAULT_TOPICS[args.action]
    try:
        return Subscriber(
            args.endpoint,
            topics,
            exact_streams=args.stream,
            server_public_key=args.server_public_key,
            client_secret_key=args.client_secret_key,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:  # zmq.ZMQError for a malformed endpoint
        raise UserError(f"cannot connect to {args.endpoint!r}: {exc}") from None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the chosen action until `--count` records, `--duration` seconds, or Ctrl-C."""
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    out = sys.stdout if out is None else out
    action = {"tail": _tail, "record": _record, "alerts": _alerts}[args.action]
    with _subscriber(args) as sub:
        try:
            action(args, sub, out)
        except KeyboardInterrupt:
            pass
        except _Refused as exc:
            print(
                f"rnnstream consume: no publications from {args.endpoint}: {exc}", file=sys.stderr
            )
            return 1
        finally:
            if sub.malformed:
                print(f"skipped {sub.malformed} malformed publications", file=sys.stderr)
    return 0


def _limited(
    args: argparse.Namespace, sub: Subscriber, kinds: tuple[str, ...] | None = None
) -> Iterator[tuple[int, str, dict]]:
    """Yield numbered records of `kinds` (all when None) until --count or --duration."""
    n = 0
    for kind, payload in _records(sub, args.duration, args.endpoint):
        if kinds is not None and kind not in kinds:
            continue
        n += 1
        yield n, kind, payload
        if args.count is not None and n >= args.count:
            return


def _tail(args: argparse.Namespace, sub: Subscriber, out: TextIO) -> int:
    color = args.color == "always" or (args.color == "auto" and out.isatty())
    n = 0
    for n, kind, payload in _limited(args, sub):  # noqa: B007 - n is the count afterwards
        line = format_record(kind, payload)
        if color and kind == "alert":
            code = "1;31" if payload.get("event") == "open" else "1;32"
            line = f"\033[{code}m{line}\033[0m"
        elif color and kind == "error":
            line = f"\033[33m{line}\033[0m"
        print(line, file=out, flush=True)
    return n


class _Recorder:
    """Write prediction rows to CSV (one column per output) or JSON lines."""

    def __init__(self, fh: TextIO, fmt: str) -> None:
        self.fh = fh
        self.fmt = fmt
        self.writer: Any = None
        self.n_outputs: int | None = None

    def write(self, p: dict) -> None:
        pred = p.get("prediction") or []
        if self.fmt == "jsonl":
            row = {k: p.get(k) for k in ("stream", "seq", "ts", "prediction", "score")}
            self.fh.write(json.dumps(row) + "\n")
            return
        if self.writer is None:
            self.n_outputs = len(pred)
            self.writer = csv.writer(self.fh)
            self.writer.writerow(
                ["stream", "seq", "ts", "score", *(f"y{i}" for i in range(self.n_outputs))]
            )
        cells = ["" if v is None else repr(v) if isinstance(v, float) else v for v in pred]
        score = p.get("score")
        self.writer.writerow(
            [
                p.get("stream"),
                "" if p.get("seq") is None else p["seq"],
                "" if p.get("ts") is None else repr(float(p["ts"])),
                "" if score is None else repr(float(score)),
                *cells,
            ]
        )


def _record(args: argparse.Namespace, sub: Subscriber, out: TextIO) -> int:
    fmt = args.format or ("jsonl" if args.out.suffix.lower() in (".jsonl", ".json") else "csv")
    try:
        fh = args.out.open("w", newline="")
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    n = 0
    last_flush = time.monotonic()
    with fh:
        recorder = _Recorder(fh, fmt)
        try:
            for n, _, payload in _limited(args, sub, ("pred",)):  # noqa: B007
                recorder.write(payload)
                if time.monotonic() - last_flush > 1.0:
                    fh.flush()
                    last_flush = time.monotonic()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM ends a recording as --duration does
            pass
    print(f"recorded {n} predictions to {args.out} ({fmt})", file=out, flush=True)
    return n


def _alerts(args: argparse.Namespace, sub: Subscriber, out: TextIO) -> int:
    fh = None
    if args.append is not None:
        try:
            fh = args.append.open("a")
        except OSError as exc:
            raise UserError(f"cannot append to {args.append}: {exc.strerror}") from None
    n = 0
    try:
        for n, kind, payload in _limited(args, sub):  # noqa: B007
            print(format_record(kind, payload), file=out, flush=True)
            if fh is not None and kind == "alert":
                fh.write(json.dumps({"received": time.time(), **payload}) + "\n")
                fh.flush()
    finally:
        if fh is not None:
            fh.close()
    return n
