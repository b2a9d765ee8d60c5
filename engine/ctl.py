"""`rnnstream ctl`: send one control command to a running `rnnstream serve` and print the reply.

Commands: health, stats, streams [--limit N], reset STREAM, drop STREAM, snapshot,
threshold LEVEL [--stream STREAM], reload [PATH] [--reset], shutdown. ctl's own options
(--endpoint, --timeout, --json, the CURVE keys) go before or after the command. Exit status 0
when the daemon answered ok, 1 when it answered with an error or did not answer within --timeout
(or when the reader of the output went away first, as `| head` does), 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import zmq

from engine import protocol
from engine.connection import ConnectionWatch
from engine.keys import KeyLike, add_curve_client_arguments, apply_curve_client
from engine.logs import one_line

DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5557"
# ZeroMQ keeps a socket's timeouts as a C int of milliseconds: at most 2**31 - 1 ms, 24.8 days.
MAX_TIMEOUT = 2_147_483  # seconds

# A dict with these keys is a histogram summary from the daemon's `stats` reply (its
# `buckets` are left to --json).
_HISTOGRAM_KEYS = frozenset({"count", "sum", "p50", "p99"})


class NoReply(TimeoutError):
    """The daemon did not answer within the timeout."""


def control(
    endpoint: str,
    cmd: str,
    timeout: float = 5.0,
    *,
    server_public_key: KeyLike | None = None,
    client_secret_key: KeyLike | None = None,
    **fields: Any,
) -> dict:
    """Send `{"cmd": cmd, **fields}` to the control socket at `endpoint` and return the reply.

    The reply is the daemon's decoded map, `ok` included. Raise `NoReply` when no answer comes
    within `timeout` seconds, `protocol.ProtocolError` for a malformed answer, and `ValueError`
    for a bad endpoint or key. `server_public_key` (Z85 text or the daemon's `.key` file) turns
    on CURVE; `client_secret_key` is this client's secret key (its `.key_secret` file or Z85
    text). Without it an ephemeral key pair is used, which a daemon that checks client keys
    refuses: that shows up as `NoReply`, whose message says what the connection went through
    (nothing listening, a CURVE key refused, another kind of socket). `timeout` must lie in
    (0, MAX_TIMEOUT].
    """
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses NaN
        raise ValueError(
            f"timeout must be a number of seconds in (0, {MAX_TIMEOUT}], not {timeout}"
        )
    ms = max(1, int(timeout * 1000))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    watch = None
    try:
        sock.linger = 0
        sock.rcvtimeo = ms
        sock.sndtimeo = ms
        apply_curve_client(sock, server_public_key, client_secret_key=client_secret_key)
        watch = ConnectionWatch(sock, "control", curve=server_public_key is not None)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ValueError(f"cannot connect to {endpoint!r}: {exc.strerror}") from None
        try:
            sock.send(protocol.encode_control(cmd, **fields))
            frame = sock.recv()
        except zmq.Again:
            problem = watch.problem()
            why = (
                "the daemon took the request but did not answer in time (busy? a longer --timeout)"
                if problem is None
                else problem.reason
            )
            raise NoReply(f"no reply from {endpoint} within {timeout:g} s: {why}") from None
        return protocol.decode_reply(frame)
    finally:
        if watch is not None:
            watch.close()
        sock.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------- printing


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "inf"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _scalar(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key in ("uptime", "seconds") or key.endswith("_seconds"):
            return _duration(float(value))
        return _number(float(value))
    return one_line(value)  # stream ids are what producers sent


def _histogram(key: str, h: dict) -> str:
    """Render a histogram summary on one line.

    Quantiles are bucket upper bounds, hence `<=`; `inf` means beyond the highest bucket.
    """
    count = int(h["count"])
    if count == 0:
        return "count=0"
    timed = key.endswith("_seconds")

    def show(v: float) -> str:
        return _duration(v) if timed else _number(v)

    parts = [f"count={count}", f"mean={show(float(h['sum']) / count)}"]
    for q in ("p50", "p99"):
        v = h[q]
        if v is None:
            parts.append(f"{q}=-")
        elif math.isinf(float(v)):
            parts.append(f"{q}=inf")
        else:
            parts.append(f"{q}<={show(float(v))}")
    return " ".join(parts)


def format_reply(reply: dict, indent: int = 0) -> list[str]:
    """Return the reply as aligned `key: value` lines (nested maps indented, lists one per line).

    The `ok` flag is left out: the exit status carries it.
    """
    items = [(k, v) for k, v in reply.items() if not (indent == 0 and k == "ok")]
    width = max((len(str(k)) for k, _ in items), default=0)
    pad = " " * indent
    lines: list[str] = []
    for key, value in items:
        key = str(key)
        label = f"{pad}{key + ':':<{width + 1}}"
        if isinstance(value, dict) and _HISTOGRAM_KEYS <= set(value):
            lines.append(f"{label} {_histogram(key, value)}")
        elif isinstance(value, dict):
            if value:
                lines.append(label.rstrip())
                lines += format_reply(value, indent + 2)
            else:
                lines.append(f"{label} -")
        elif isinstance(value, list):
            if value:
                lines.append(label.rstrip())
                lines += [f"{pad}  {_scalar(key, item)}" for item in value]
            else:
                lines.append(f"{label} -")
        else:
            lines.append(f"{label} {_scalar(key, value)}")
    return lines


def to_json(reply: dict) -> str:
    """Return `reply` as strict JSON (RFC 8259), which has no Infinity or NaN.

    Non-finite numbers become the strings "+Inf", "-Inf" and "NaN", as Prometheus writes them;
    null stays what the daemon means by it (no observation yet).
    """
    return json.dumps(_finite(reply), indent=2, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------- CLI


def _add_options(parser: argparse.ArgumentParser, description: str | None = None) -> None:
    """Add the options every command takes: where the daemon is, how long to wait, how to print."""
    group = parser.add_argument_group(
        "every command's options (before or after COMMAND)", description
    )
    group.add_argument(
        "--endpoint", default=DEFAULT_CONTROL_ENDPOINT, help="the daemon's control socket"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help=f"seconds to wait for the reply, at most {MAX_TIMEOUT} (24.8 days)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print the raw reply as strict JSON; infinite and NaN numbers (a quantile beyond "
        'the highest bucket) are written as the strings "+Inf", "-Inf" and "NaN", as Prometheus '
        "writes them",
    )
    add_curve_client_arguments(group)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    # The same options after COMMAND; without a default there, so that one given before COMMAND
    # is not overwritten by the default when the command's parser fills in its namespace.
    after = argparse.ArgumentParser(add_help=False)
    _add_options(after, f"defaults: --endpoint {DEFAULT_CONTROL_ENDPOINT}, --timeout 5")
    for action in after._actions:  # not set_defaults: that would make SUPPRESS a value
        action.default = argparse.SUPPRESS
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def command(name: str, what: str) -> argparse.ArgumentParser:
        from engine.cli import HelpFormatter

        return sub.add_parser(name, help=what, formatter_class=HelpFormatter, parents=[after])

    command("health", "status, uptime, live streams, model")
    command("stats", "counters, histograms and state-table sizes")
    streams = command("streams", "list live stream ids")
    streams.add_argument("--limit", type=int, default=1000, help="list at most this many ids")
    for name, what in (
        ("reset", "start a stream's state afresh (zeros)"),
        ("drop", "forget a stream and free its slot"),
    ):
        command(name, what).add_argument("stream", metavar="STREAM", help="stream id")
    command("snapshot", "write a state snapshot now")
    threshold = command(
        "threshold", "set the alert open level of one stream (--stream) or of every stream"
    )
    threshold.add_argument(
        "level", metavar="LEVEL", help="anomaly score in (0, 1]; 'default' unsets a stream's own"
    )
    threshold.add_argument("--stream", default=None, help="only this stream")
    reload = command(
        "reload", "load a model file and switch to it, keeping stream state if shapes match"
    )
    reload.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="model file (an existing local path is made absolute); default: the daemon's --model",
    )
    reload.add_argument(
        "--reset",
        action="store_true",
        help="allow a model with other state shapes, restarting every stream from zeros",
    )
    command("shutdown", "stop the daemon in order (drain, snapshot)")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.cmd == "streams":
        return {"limit": args.limit}
    if args.cmd in ("reset", "drop"):
        return {"stream": args.stream}
    if args.cmd == "threshold":
        from engine.cli import UserError

        level: float | None = None
        if args.level != "default":
            try:
                level = float(args.level)
            except ValueError:
                level = math.nan
            if not 0.0 < level <= 1.0:  # also refuses NaN
                raise UserError(
                    f"LEVEL must be a number in (0, 1] or 'default', not {args.level!r}"
                )
        elif args.stream is None:
            raise UserError("'default' unsets one stream's own level: give --stream STREAM")
        return {"level": level} if args.stream is None else {"stream": args.stream, "level": level}
    if args.cmd == "reload":
        fields: dict[str, Any] = {"reset": bool(args.reset)}
        if args.path is not None:
            # The daemon may run elsewhere; only a path that exists here is taken as ours.
            path = Path(args.path)
            fields["path"] = str(path.resolve()) if path.exists() else args.path
        return fields
    return {}


def run(args: argparse.Namespace) -> int:
    from engine.cli import UserError

    if not 0 < args.timeout <= MAX_TIMEOUT:  # also refuses NaN
        raise UserError(
            f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT} (24.8 days), "
            f"not {args.timeout}"
        )
    if args.cmd == "streams" and args.limit < 0:
        raise UserError("--limit must not be negative")
    if args.client_secret_key is not None and args.server_public_key is None:
        raise UserError(
            "--client-secret-key needs --server-public-key (the daemon's public key) as well"
        )
    try:
        reply = control(
            args.endpoint,
            args.cmd,
            args.timeout,
            server_public_key=args.server_public_key,
            client_secret_key=args.client_secret_key,
            **_fields(args),
        )
    except NoReply as exc:
        print(f"rnnstream ctl: {exc}", file=sys.stderr)
        return 1
    except protocol.ProtocolError as exc:
        print(f"rnnstream ctl: bad reply from {args.endpoint}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        text = to_json(reply)
    else:
        # A failure's error goes to stderr below, not twice.
        text = "\n".join(format_reply({k: v for k, v in reply.items() if k != "error"}))
    if text:
        print(text)
    if not reply["ok"]:
        print(f"rnnstream ctl: {args.cmd} failed: {reply.get('error')}", file=sys.stderr)
        return 1
    return 0
