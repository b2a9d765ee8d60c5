"""Run `rnnstream serve` as a real subprocess and talk to it over real sockets, for tests.

`DaemonProcess` starts the daemon on free loopback TCP ports (or ipc:// endpoints in a temp
dir), waits for its `ready` log line, hands out clients that share one ZeroMQ context (and the
CURVE keys, when the daemon uses CURVE), and stops it. Every wait has a timeout that fails the
test with a message holding the daemon's stderr, so a broken daemon never hangs the suite; every
socket is closed with linger=0.

Ordering tools: a *fence* is a reading of a throw-away stream sent on the same PUSH socket after
the messages under test. The daemon reads one connection in order and PUB keeps order, so once
the fence's prediction arrives, everything the daemon published for the earlier messages has
arrived too; that lets a test assert that nothing extra was published without sleeping.
`sync_subscriber` uses probes the same way to wait until a new subscription is live (ZeroMQ drops
what a PUB sends before the SUB's subscription reaches it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
from prometheus_client.parser import text_string_to_metric_families

from consumers.client import Subscriber
from engine import protocol
from engine.keys import apply_curve_client
from engine.model import Model
from engine.stream import StreamEngine
from producers.client import Producer

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0  # numba loads its cache at start; a loaded 2-core machine can be slow
RECV_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0
SYNC_STREAM = "__sync__"
_CURVE_KEYS = ("server_public_key", "client_public_key", "client_secret_key")
FENCE_PREFIX = "__fence__"


# ------------------------------------------------------------------------------ endpoints


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_endpoints() -> dict[str, str]:
    """Return ingest/publish/control endpoints on three free loopback ports."""
    return {name: f"tcp://127.0.0.1:{free_port()}" for name in ("ingest", "publish", "control")}


def ipc_endpoints(folder: Path) -> dict[str, str]:
    """Return ingest/publish/control ipc:// endpoints inside `folder` (kept short for AF_UNIX)."""
    return {name: f"ipc://{folder}/{name[0]}.sock" for name in ("ingest", "publish", "control")}


# ------------------------------------------------------------------------------ models


def save_model(model: Model, folder: Path, name: str = "model.npz") -> Path:
    """Save `model` into `folder` and return the file's path."""
    path = Path(folder) / name
    model.save(path)
    return path


def reference_outputs(
    model: Model, rows: Iterable[tuple[str, Sequence[float]]], engine: StreamEngine | None = None
) -> list[np.ndarray]:
    """Feed `(stream, values)` rows one at a time to an in-process engine; return each output."""
    engine = StreamEngine(model) if engine is None else engine
    return [engine.step(stream, np.asarray(values, np.float32)) for stream, values in rows]


# ------------------------------------------------------------------------------ messages


def pack(obj: Any) -> bytes:
    """Pack any msgpack value (for hand-made, possibly malformed, intake frames)."""
    return msgpack.packb(obj, use_bin_type=True)


def recv_until(
    sub: Subscriber,
    done: Callable[[str, dict], bool],
    *,
    timeout: float = RECV_TIMEOUT,
    what: str = "the expected message",
    daemon: DaemonProcess | None = None,
) -> list[tuple[str, dict]]:
    """Receive `(kind, payload)` pairs until `done(kind, payload)`; return all, the last included.

    Fail with a clear message (and the daemon's stderr) when `timeout` seconds pass first.
    """
    got: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        item = sub.recv(timeout=max(left, 0.0)) if left > 0 else None
        if item is None:
            tail = f"\n--- daemon stderr ---\n{daemon.stderr_text()}" if daemon else ""
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; received {len(got)} "
                f"message(s) before: {_short(got)}{tail}"
            )
        got.append(item)
        if done(*item):
            return got


def recv_count(
    sub: Subscriber,
    n: int,
    *,
    kind: str | None = None,
    timeout: float = RECV_TIMEOUT,
    daemon: DaemonProcess | None = None,
) -> list[tuple[str, dict]]:
    """Receive until `n` messages (of `kind`, when given) have arrived; return those n."""
    kept: list[tuple[str, dict]] = []

    def done(k: str, payload: dict) -> bool:
        if kind is None or k == kind:
            kept.append((k, payload))
        return len(kept) >= n

    if n > 0:
        recv_until(
            sub, done, timeout=timeout, what=f"{n} {kind or 'any'} message(s)", daemon=daemon
        )
    return kept


def is_fence(name: str) -> Callable[[str, dict], bool]:
    """Return a predicate true for the (single or batched) prediction of fence stream `name`."""

    def check(kind: str, payload: dict) -> bool:
        if kind == "pred":
            return payload["stream"] == name
        if kind == "batch":
            return name in payload["streams"]
        return False

    return check


def without_helpers(
    items: Iterable[tuple[str, dict]], also: str | None = None
) -> list[tuple[str, dict]]:
    """Drop the predictions (and batch rows) of sync probes and fences (and of stream `also`)."""

    def helper(stream: str) -> bool:
        return stream == also or _is_helper(stream)

    out = []
    for kind, payload in items:
        if kind == "pred" and helper(payload["stream"]):
            continue
        if kind == "batch":
            keep = [i for i, s in enumerate(payload["streams"]) if not helper(s)]
            if not keep:
                continue
            if len(keep) != len(payload["streams"]):
                payload = dict(payload)
                payload["streams"] = [payload["streams"][i] for i in keep]
                payload["seq"] = [payload["seq"][i] for i in keep]
                payload["ts"] = [payload["ts"][i] for i in keep]
                payload["prediction"] = payload["prediction"][keep]
                payload["score"] = payload["score"][keep]
        out.append((kind, payload))
    return out


def predictions_by_stream(items: Iterable[tuple[str, dict]]) -> dict[str, list[dict]]:
    """Group prediction payloads (batch publications expanded to rows) by stream, in order."""
    out: dict[str, list[dict]] = {}
    for kind, payload in items:
        if kind == "pred":
            out.setdefault(payload["stream"], []).append(payload)
        elif kind == "batch":
            for row in protocol.batch_rows(payload):
                out.setdefault(row["stream"], []).append(row)
    return out


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics and return {(sample name, sorted labels): value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _is_helper(stream: str) -> bool:
    return stream.startswith((SYNC_STREAM, FENCE_PREFIX))


def _short(items: list[tuple[str, dict]], limit: int = 5) -> str:
    shown = [(k, {key: p.get(key) for key in ("stream", "streams", "reason")}) for k, p in items]
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return repr(shown[-limit:]) + more


# ------------------------------------------------------------------------------ the daemon


class DaemonProcess:
    """One `rnnstream serve` subprocess plus the clients a test needs to talk to it.

    `endpoints` default to free TCP ports and are passed as flags (only those named in
    `endpoint_flags`, so a test can set the others by config file or environment); `args` are
    extra command-line flags; `env` entries are added to the environment. `metrics` serves
    Prometheus metrics on a free port (`metrics_port`). Ports taken by someone else between
    picking and binding are picked again. With `curve` =
    (server public key file, client secret key file) every client this object makes is a CURVE
    client with those keys unless told otherwise.
    """

    def __init__(
        self,
        model_path: Path | str | None,
        state_dir: Path | str,
        *,
        endpoints: dict[str, str] | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        curve: tuple[Path | str, Path | str] | None = None,
        log_format: str = "json",
        endpoint_flags: Sequence[str] = ("ingest", "publish", "control"),
        metrics: bool = False,
    ) -> None:
        self.model_path = None if model_path is None else str(model_path)
        self.state_dir = Path(state_dir)
        self._auto_ports = endpoints is None
        self.endpoints = dict(endpoints) if endpoints is not None else tcp_endpoints()
        self.args = list(args)
        self.env = dict(env or {})
        self.curve = curve
        self.log_format = log_format
        self.endpoint_flags = tuple(endpoint_flags)
        self.metrics_port = free_port() if metrics else None
        self.proc: subprocess.Popen[str] | None = None
        self.context = zmq.Context()
        self._sockets: list[Any] = []
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -------------------------------------------------------------- process
    @property
    def ingest(self) -> str:
        return self.endpoints["ingest"]

    @property
    def publish(self) -> str:
        return self.endpoints["publish"]

    @property
    def control_endpoint(self) -> str:
        return self.endpoints["control"]

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.npz"

    def command(self) -> list[str]:
        """Return the daemon's argv."""
        cmd = [sys.executable, "-m", "engine.cli", "serve"]
        if self.model_path is not None:
            cmd += ["--model", self.model_path]
        for name in self.endpoint_flags:
            cmd += [f"--{name}", self.endpoints[name]]
        if self.metrics_port is not None:
            cmd += ["--metrics-port", str(self.metrics_port)]
        cmd += [
            "--state-dir",
            str(self.state_dir),
            "--log-format",
            self.log_format,
        ]
        return cmd + self.args

    def start(self, timeout: float = START_TIMEOUT) -> DaemonProcess:
        """Start the daemon and wait for its `ready` log line; retry on a port taken meanwhile."""
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_for_log(lambda r: r.get("msg") == "ready", timeout=timeout, what="ready")
                return self
            except AssertionError:
                taken = "Address already in use" in self.stderr_text()
                retry = self._auto_ports or self.metrics_port is not None
                if not (retry and taken and attempt < 2):
                    self.kill()
                    raise
                self.kill()
                if self._auto_ports:
                    self.endpoints = tcp_endpoints()
                if self.metrics_port is not None:
                    self.metrics_port = free_port()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with self._cond:
            self._lines = []
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def stderr_lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines())

    def log_records(self) -> list[dict]:
        """Return the JSON log records seen so far (non-JSON lines are skipped)."""
        records = []
        for line in self.stderr_lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def wait_for_log(
        self,
        match: Callable[[dict], bool],
        *,
        after: int = 0,
        timeout: float = RECV_TIMEOUT,
        what: str = "a log line",
    ) -> dict:
        """Wait for a JSON log record matching `match` among lines from index `after` on."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[after:]:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and match(record):
                        return record
                exited = self.proc is not None and self.proc.poll() is not None
                reader_done = self._reader is None or not self._reader.is_alive()
                left = deadline - time.monotonic()
                if left <= 0 or (exited and reader_done):
                    why = f"daemon exited with {self.proc.returncode}" if exited else "timed out"
                    raise AssertionError(
                        f"{why} while waiting for {what} ({timeout:g}s)\n--- daemon stderr ---\n"
                        + "\n".join(self._lines)
                    )
                self._cond.wait(min(left, 0.2))

    def log_count(self) -> int:
        with self._cond:
            return len(self._lines)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit and return its exit code; fail clearly on a timeout."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"daemon did not exit within {timeout:g}s\n--- daemon stderr ---\n"
                + self.stderr_text()
            ) from None
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the daemon, wait for it and return the exit code (None-safe when not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return -1 if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the daemon (if running) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def close(self) -> None:
        """Stop the daemon if running and close every client socket and the context."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.stop()
                except AssertionError:
                    pass
        finally:
            self.kill()
            self.close_clients()
            self.context.destroy(linger=0)  # also closes any socket a failed test left open

    def close_clients(self) -> None:
        """Close every client socket made so far (linger 0)."""
        for sock in self._sockets:
            if isinstance(sock, Producer):
                sock.close(linger=0)
            elif isinstance(sock, Subscriber):
                sock.close()
            else:
                sock.close(linger=0)
        self._sockets.clear()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------- clients
    def _with_curve(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Add this daemon's client keys to `kwargs` unless they name CURVE keys themselves."""
        if any(key in kwargs for key in _CURVE_KEYS):
            return kwargs
        return {**self._curve_kwargs(), **kwargs}

    def _curve_kwargs(self) -> dict[str, Any]:
        if self.curve is None:
            return {"server_public_key": None}
        server_public, client_secret = self.curve
        return {"server_public_key": server_public, "client_secret_key": client_secret}

    def producer(self, **kwargs: Any) -> Producer:
        """Return a Producer connected to the ingest socket (linger 1 s, so sends get flushed)."""
        options = self._with_curve({"linger": 1.0, **kwargs})
        prod = Producer(self.ingest, context=self.context, **options)
        self._sockets.append(prod)
        return prod

    def push(self, *, connect: bool = True, **curve: Any) -> zmq.Socket:
        """Return a raw PUSH socket connected to the ingest socket (for hand-made frames).

        With `connect=False` the caller connects it (e.g. after attaching a socket monitor).
        """
        sock = self.context.socket(zmq.PUSH)
        self._sockets.append(sock)
        sock.linger = 0
        sock.sndtimeo = int(RECV_TIMEOUT * 1000)
        apply_curve_client(sock, **(curve or self._curve_kwargs()))
        if connect:
            sock.connect(self.ingest)
        return sock

    def subscriber(
        self, topics: Iterable[str | bytes] = ("pred.",), *, sync: bool = True, **kwargs: Any
    ) -> Subscriber:
        """Return a Subscriber of the publish socket; with `sync`, wait until it is live."""
        options = self._with_curve(kwargs)
        sub = Subscriber(self.publish, topics, context=self.context, **options)
        self._sockets.append(sub)
        if sync:
            self.sync_subscriber(sub)
        return sub

    def sync_subscriber(self, sub: Subscriber, timeout: float = RECV_TIMEOUT) -> None:
        """Block until `sub` receives publications, then leave it with nothing queued.

        Temporarily subscribe the underlying socket to the probe topics, send probe readings until
        one arrives, then send a fence probe and discard everything up to it. Subscriptions are
        reference-counted by ZeroMQ, so removing the probe topics keeps the caller's own.
        """
        raw = sub._socket  # the only way to add a subscription the Subscriber would filter out
        probe_topics = [protocol.prediction_topic(SYNC_STREAM), protocol.BATCH_TOPIC]
        for topic in probe_topics:
            raw.setsockopt(zmq.SUBSCRIBE, topic)
        push = self.push()
        values = np.zeros(self._n_inputs(), np.float32)
        deadline = time.monotonic() + timeout
        try:
            fence = f"{SYNC_STREAM}-{uuid.uuid4().hex[:8]}"
            synced = False
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"subscriber never received a probe within {timeout:g}s\n"
                        f"--- daemon stderr ---\n{self.stderr_text()}"
                    )
                if not synced:
                    push.send(protocol.encode_reading(SYNC_STREAM, values, end=True))
                if raw.poll(200):
                    topic, payload = raw.recv_multipart()
                    streams = self._streams_of(topic, payload)
                    if not synced and SYNC_STREAM in streams:
                        synced = True
                        push.send(protocol.encode_reading(fence, values, end=True))
                    elif synced and fence in streams:
                        return
        finally:
            for topic in probe_topics:
                raw.setsockopt(zmq.UNSUBSCRIBE, topic)
            self._sockets.remove(push)
            push.close(linger=0)

    @staticmethod
    def _streams_of(topic: bytes, payload: bytes) -> list[str]:
        try:
            kind, msg = protocol.decode_publication(topic, payload)
        except protocol.ProtocolError:
            return []
        if kind == "batch":
            return list(msg["streams"])
        return [msg.get("stream")]

    def _n_inputs(self) -> int:
        if not hasattr(self, "_inputs"):
            if self.model_path is None:
                raise ValueError("pass a model file to use probes")
            self._inputs = Model.load(self.model_path).input_size
        return self._inputs

    def fence(self, sock: zmq.Socket | Producer, name: str | None = None) -> str:
        """Send a fence reading on `sock`; return its stream id (see the module docstring)."""
        name = name or f"{FENCE_PREFIX}{uuid.uuid4().hex[:8]}"
        values = np.zeros(self._n_inputs(), np.float32)
        if isinstance(sock, Producer):
            sock.send(name, values, end=True)
        else:
            sock.send(protocol.encode_reading(name, values, end=True))
        return name

    def until_fence(
        self,
        sub: Subscriber,
        sock: zmq.Socket | Producer,
        *,
        name: str | None = None,
        timeout: float = RECV_TIMEOUT,
    ) -> list[tuple[str, dict]]:
        """Fence `sock`, return everything `sub` got before the fence (probes and fences removed).

        `sub` must be subscribed to the fence's topic (`pred.` or `batch.pred`); pass `name` to
        choose the fence's stream id (e.g. one matching a narrow prefix); it is removed as well.
        """
        name = self.fence(sock, name)
        got = recv_until(sub, is_fence(name), timeout=timeout, what=f"fence {name}", daemon=self)
        return without_helpers(got, also=name)

    def control(self, cmd: str, *, timeout: float = RECV_TIMEOUT, **fields: Any) -> dict:
        """Send one control command and return the decoded reply."""
        return protocol.decode_reply(
            self.control_raw([protocol.encode_control(cmd, **fields)], timeout=timeout)
        )

    def control_raw(
        self, frames: Sequence[bytes], *, timeout: float = RECV_TIMEOUT, **curve: Any
    ) -> bytes:
        """Send `frames` as one multipart request on a fresh REQ socket and return the reply.

        Fail clearly when no reply comes within `timeout` seconds.
        """
        sock = self.context.socket(zmq.REQ)
        try:
            sock.linger = 0
            sock.rcvtimeo = int(timeout * 1000)
            sock.sndtimeo = int(timeout * 1000)
            apply_curve_client(sock, **(curve or self._curve_kwargs()))
            sock.connect(self.control_endpoint)
            try:
                # A server that refuses the handshake (CURVE) may leave the REQ socket no peer
                # to send to: the send times out then, instead of the receive.
                sock.send_multipart(list(frames))
                return sock.recv()
            except zmq.Again:
                raise AssertionError(
                    f"no control reply within {timeout:g}s to {list(frames)!r:.200}\n"
                    f"--- daemon stderr ---\n{self.stderr_text()}"
                ) from None
        finally:
            sock.close(linger=0)

    def stats(self) -> dict:
        reply = self.control("stats")
        assert reply["ok"], reply
        return reply
