"""`rnnstream serve`: the long-lived daemon.

Producers PUSH readings to the ingest socket; every accepted reading advances its stream's state
by one step through StreamEngine and its prediction goes out on the PUB socket; operators talk to
the REP control socket. Lifecycle: starting (load model, compile, restore state) -> ready ->
stopping (stop intake, drain what was received, publish, snapshot) -> stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gc
import logging
import math
import os
import shlex
import signal
import socket
import stat
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from engine import protocol
from engine.alerts import (
    EVENT_CLOSE,
    EVENT_OPEN,
    AlertPolicy,
    ClosedAlert,
    CloseReason,
    check_open_level,
)
from engine.config import ServeConfig, add_config_arguments, config_from_args
from engine.logs import RateLimitedLog, log, setup_logging
from engine.metrics import Metrics, registry_for
from engine.model import Model
from engine.protocol import Readings, Rejection, RejectReason
from engine.socket_io import FrameReceiver, MessageSender, context_with_batch_io_threads
from engine.state import faulted_in
from engine.stream import NeedsReset, StepResult, StreamEngine, write_snapshot

SNAPSHOT_NAME = "state.npz"
LOCK_NAME = "serve.lock"  # in the state directory: one daemon a state directory
_POLL_MS = 100
# Rows per engine call: bigger batches no longer amortise anything and their buffers leave the
# cache (a 75,000-row LSTM batch made step_many ~2x slower per reading than 1,024-row ones).
_ENGINE_ROWS = 4096
_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: zmq's Flag enum costs about a microsecond per call
_DRAIN_QUIET_S = 0.05  # at shutdown, intake counts as drained after this long without a message
# ...or after this long in all, so producers that keep sending cannot hold the stop off forever
# (readings queued at the signal are first in line, so they are served well before this).
DRAIN_LIMIT_S = 5.0
# Control commands that change state, refused while the daemon drains intake at shutdown; the
# others (health, stats, streams, shutdown again) are answered until the final snapshot begins.
_REFUSED_WHILE_STOPPING = frozenset({"reset", "drop", "snapshot", "threshold", "reload"})
# What a close carries of a reading when no reading went with it (docs/PROTOCOL.md, alerts)
_NO_READING = dict.fromkeys(
    ("seq", "ts", "score", "value", "expected", "feature", "surprise", "severity")
)


class Status(StrEnum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


class Daemon:
    """One serving process: sockets, micro-batching, control, snapshots and metrics."""

    def __init__(self, config: ServeConfig, logger: logging.Logger) -> None:
        self.config = config
        self.logger = logger
        self.warn = RateLimitedLog(logger)
        self.metrics = Metrics()
        self.status = Status.STARTING
        self.started = time.time()
        self._stop_requested = False
        self._signals = 0
        self._context: zmq.Context | None = None
        self._busy = False
        self._metrics_server: Any = None
        self._auth: Any = None
        self._state_lock: Any = None
        # A periodic snapshot's thread: faulting in memory for the copy, then writing the file;
        # the memory, once it is in place, until the loop copies the states into it.
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_memory: list[np.ndarray] | None = None
        self.state_path = Path(config.state_dir) / SNAPSHOT_NAME

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Load the model, compile, restore state, bind sockets; log `ready` when done."""
        cfg = self.config
        self.model = self._load_model(cfg.model)
        self._check_state_dir()
        self.engine = self._restore_or_new(self.model)
        protocol.compile_jitted_paths(self.model.input_size)
        self._bind()
        if cfg.metrics_port:
            self._start_metrics()
        self._next_checkpoint = (
            time.monotonic() + cfg.checkpoint_every if cfg.checkpoint_every else math.inf
        )
        self.status = Status.READY
        # Everything an operator needs to reach the daemon, in the one line they wait for.
        metrics = {"metrics": self._metrics_url()} if cfg.metrics_port else {}
        log(
            self.logger,
            logging.INFO,
            "ready",
            ingest=cfg.ingest,
            publish=cfg.publish,
            control=cfg.control,
            **metrics,
            model=self.model.fingerprint[:16],
            streams=len(self.engine),
            pid=os.getpid(),
        )

    def _load_model(self, path: str | None) -> Model:
        if path is None:
            from engine.default_model import load_default_model

            return load_default_model()
        try:
            return Model.load(path)
        except FileNotFoundError:
            # A relative path is the daemon's, not the shell's of whoever asked for a reload.
            where = "" if os.path.isabs(path) else f" in the daemon's directory {os.getcwd()}"
            raise StartupError(f"model file {path} does not exist{where}") from None
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot load model {path}: {exc}") from None

    def _engine_options(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "max_streams": cfg.max_streams or None,
            "idle_timeout": cfg.idle_timeout or None,
            "blas_threads": cfg.blas_threads,
            "alerts": AlertPolicy(
                open_level=cfg.alert_threshold,
                close_level=cfg.alert_close,
                min_duration=cfg.alert_min_duration,
                cooldown=cfg.alert_cooldown,
                warmup=cfg.alert_warmup,
                error_gate=cfg.alert_error_gate,
            ),
        }

    def _check_state_dir(self) -> None:
        folder = self.state_path.parent
        if folder.exists() and not folder.is_dir():
            raise StartupError(
                f"state directory {folder} is a file, not a directory; choose another with "
                "--state-dir"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StartupError(
                f"state directory {folder} is not writable ({exc.strerror}); "
                "choose another with --state-dir"
            ) from None
        # Two daemons on one folder would overwrite each other's snapshots and restore a mix.
        # The kernel drops the lock when the process ends, however it ends.
        lock = (folder / LOCK_NAME).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StartupError(
                f"state directory {folder} is in use by another rnnstream serve (pid {holder}); "
                "give each daemon its own --state-dir"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._state_lock = lock
        # A daemon killed while writing a snapshot leaves its temp file (engine.files); with the
        # folder now ours, no other writer can own one.
        for leftover in folder.glob(f".{self.state_path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
            log(self.logger, logging.WARNING, "removed an unfinished snapshot", path=leftover)

    def _restore_or_new(self, model: Model) -> StreamEngine:
        path = self.state_path
        if path.exists():
            try:
                engine = StreamEngine.restore(path, model, **self._engine_options())
            except OSError as exc:
                # Not the file's content: setting it aside would lose a good snapshot to, say,
                # a backup copied back with an owner or mode this user cannot read.
                raise StartupError(
                    f"cannot read snapshot {path}: {exc.strerror}; make it a file this user can "
                    "read, or move it away to start with no stream state"
                ) from None
            except ValueError as exc:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                aside = path.with_name(f"{path.name}.rejected-{stamp}")
                path.rename(aside)
                log(
                    self.logger,
                    logging.ERROR,
                    "snapshot not restored; set aside, starting with no stream state",
                    reason=str(exc),
                    moved_to=str(aside),
                )
            else:
                # Streams keep their last seq in the engine's slots now; older snapshots had
                # a table of them here.
                engine.snapshot_extra.pop("last_seq", None)
                if engine.evictions:
                    log(
                        self.logger,
                        logging.WARNING,
                        "snapshot holds more streams than --max-streams: evicted the least "
                        "recently used",
                        evicted=engine.evictions,
                        max_streams=self.config.max_streams,
                    )
                log(self.logger, logging.INFO, "state restored", streams=len(engine), path=path)
                return engine
        return StreamEngine(model, **self._engine_options())

    def _bind(self) -> None:
        cfg = self.config
        ctx = self._context = context_with_batch_io_threads()
        if cfg.curve_secret_key is not None:
            try:
                self._start_curve(ctx)
            except StartupError:
                self._close_sockets(linger=0)
                raise
        self.ingest = ctx.socket(zmq.PULL)
        self.ingest.rcvhwm = cfg.ingest_hwm
        self.ingest.maxmsgsize = cfg.max_message_bytes
        self.publisher = ctx.socket(zmq.PUB)
        self.publisher.sndhwm = cfg.publish_hwm
        self.control = ctx.socket(zmq.REP)
        for name, sock, endpoint in (
            ("ingest", self.ingest, cfg.ingest),
            ("publish", self.publisher, cfg.publish),
            ("control", self.control, cfg.control),
        ):
            if cfg.curve_secret_key is not None:
                sock.curve_server = True
                sock.curve_publickey = self._server_public
                sock.curve_secretkey = self._server_secret
            if _ipc_endpoint_in_use(endpoint):
                self._close_sockets(linger=0)
                raise StartupError(
                    f"cannot bind the {name} socket to {endpoint}: a running process listens "
                    f"on that socket file (is another rnnstream serve running?); "
                    f"choose another with --{name}"
                )
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self._close_sockets(linger=0)
                hint = (
                    " (is another rnnstream serve running?)" if exc.errno == zmq.EADDRINUSE else ""
                )
                raise StartupError(
                    f"cannot bind the {name} socket to {endpoint}: {exc.strerror}{hint}; "
                    f"choose another with --{name}"
                ) from None
        # Compiled (or loaded from Numba's cache) here, before the daemon says it is ready.
        self.intake = FrameReceiver(self.ingest, cfg.max_message_bytes)
        self.predictions = MessageSender(self.publisher)

    def _start_curve(self, ctx: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        cfg = self.config
        try:
            self._server_public = protocol.curve_key(cfg.curve_secret_key)
            self._server_secret = protocol.curve_key(cfg.curve_secret_key, secret=True)
        except ValueError as exc:
            raise StartupError(f"bad --curve-secret-key: {exc}") from None
        if not Path(cfg.curve_clients).is_dir():
            raise StartupError(f"--curve-clients {cfg.curve_clients} is not a directory")
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("rnnstream.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(cfg.curve_clients))

    def _start_metrics(self) -> None:
        from prometheus_client import start_http_server

        registry = registry_for(self.metrics, self._gauges)
        try:
            server, _thread = start_http_server(
                self.config.metrics_port, addr=self.config.metrics_host, registry=registry
            )
        except OSError as exc:
            self._close_sockets(linger=0)
            raise StartupError(
                f"cannot serve metrics on {self.config.metrics_host}:{self.config.metrics_port}: "
                f"{exc.strerror}; choose another --metrics-port or --metrics-host"
            ) from None
        self._metrics_server = server

    def _metrics_url(self) -> str:
        host = self.config.metrics_host
        host = f"[{host}]" if ":" in host else host  # an IPv6 address, as in a URL
        return f"http://{host}:{self.config.metrics_port}/metrics"

    def _gauges(self) -> dict[str, Any]:
        return {**self.engine.stats(), "ready": self.status == Status.READY}

    # ------------------------------------------------------------------- loop
    def install_signal_handlers(self) -> None:
        """SIGTERM, SIGINT and SIGHUP start an orderly stop; a second one exits at once.

        SIGHUP too: by default it ended the daemon at once, without a snapshot, whether it came
        from a closed terminal or from an operator who expected it to reload something.
        """

        def handler(signum: int, _frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:
                os._exit(128 + signum)
            self._stop_requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, handler)

    def run(self) -> int:
        """Serve until asked to stop, then drain, publish, snapshot and close; return the exit
        status: 0, or 1 when the last snapshot could not be written."""
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        self._next_sweep = time.monotonic() + 1.0
        while not self._stop_requested:
            try:
                events = dict(poller.poll(_POLL_MS))
            except zmq.ZMQError as exc:  # EINTR from a signal
                if exc.errno != zmq.EINTR:
                    raise
                continue
            if self.control in events:
                self._serve_control()
            if self.ingest in events:
                self._intake_pass()
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + 1.0
                self.engine.evict_idle()  # so idle streams go even when no reading arrives
                self._publish_closed()
            if now >= self._next_checkpoint:
                self._checkpoint_in_background()
            if self._snapshot_memory is not None:
                self._copy_for_checkpoint()
        return self._shutdown()

    def _intake_pass(self, wait: bool = True) -> int:
        """Receive what is queued (up to max_batch messages or socket_io.PASS_BUDGET_BYTES),
        step it, publish; return rows.

        Readings that arrive while a pass runs share the next pass's engine call. With
        max_wait_us, under load (the previous pass found more than one reading) an empty queue
        gets one more look after that long: fewer, bigger calls for less CPU, at the cost of
        that wait in every reading's latency (bench/README.md, "The daemon with batches and at
        moderate load"). The wait sleeps rather than spins: producers and subscribers need the
        CPU.
        """
        cfg = self.config
        n = self.intake.receive(cfg.max_batch)
        if n < cfg.max_batch and wait and self._busy and cfg.max_wait_us:
            time.sleep(cfg.max_wait_us * 1e-6)
            n = self.intake.receive(cfg.max_batch, n)
        if not n:
            self._busy = False
            return 0
        self.metrics.frames_in += n
        buf, starts = self.intake.frames(n)
        readings, rejections = protocol.decode_frames(
            buf, starts, self.engine.model.input_size, max_frame_bytes=cfg.max_message_bytes
        )
        for rejection in rejections:
            self._reject(rejection)
        rows = len(readings)
        self._busy = rows > 1
        if rows:
            self._process(readings)
        return rows

    def _process(self, batch: Readings) -> None:
        """Step the readings in arrival order, drop duplicates, publish every prediction.

        A reading with `reset` or `end` is stepped on its own, between the rows before and after
        it, so the flag applies exactly at its place in the stream.
        """
        if not (np.count_nonzero(batch.reset) or np.count_nonzero(batch.end)):  # ~1 us less
            self._step_and_publish(batch)
            return
        flagged = np.flatnonzero(batch.reset | batch.end).tolist()
        start = 0
        n = len(batch)
        for i in [*flagged, n]:
            if i > start:
                self._step_and_publish(batch.take(slice(start, i)))
            if i < n:
                self._step_flagged(batch.take(slice(i, i + 1)))
            start = i + 1

    def _step_flagged(self, row: Readings) -> None:
        stream = row.streams[0]
        if row.reset[0]:
            self.engine.reset(stream)  # also forgets its last seq: any seq starts afresh
            self._publish_closed()
        result = self._step_one(row)
        if row.end[0] and result is not None:  # a duplicate is dropped whole, its `end` with it
            self.engine.drop(stream, CloseReason.END)
            self._publish_closed((row, result))

    def _step_and_publish(self, batch: Readings) -> int:
        """Step `batch` and publish its predictions; return how many readings were stepped."""
        if len(batch) > _ENGINE_ROWS:
            return sum(
                self._step_and_publish(batch.take(slice(start, start + _ENGINE_ROWS)))
                for start in range(0, len(batch), _ENGINE_ROWS)
            )
        began = time.perf_counter()
        try:
            result = self.engine.process(
                batch.streams, batch.values, batch.ts, batch.seq, ids=batch.ids
            )
        except ValueError:
            # e.g. more distinct streams than max_streams: fall back to one reading at a time
            return self._step_rows_one_by_one(batch)
        self.metrics.step_seconds.observe(time.perf_counter() - began)
        return self._publish_stepped(batch, result)

    def _step_rows_one_by_one(self, batch: Readings) -> int:
        return sum(
            self._step_one(batch.take(slice(i, i + 1))) is not None for i in range(len(batch))
        )

    def _step_one(self, row: Readings) -> StepResult | None:
        """Step one reading and publish its prediction; return its result, or None when it was
        rejected or dropped as a duplicate."""
        began = time.perf_counter()
        try:
            result = self.engine.process(row.streams, row.values, row.ts, row.seq, ids=row.ids)
        except ValueError as exc:
            self._reject(Rejection(RejectReason.INTERNAL, str(exc), row.streams[0]))
            return None
        self.metrics.step_seconds.observe(time.perf_counter() - began)
        return result if self._publish_stepped(row, result) else None

    def _publish_stepped(self, batch: Readings, result: StepResult) -> int:
        """Publish the closes of incidents whose streams the step evicted, count its seq gaps,
        reject its duplicates, publish the rest; return how many readings were stepped."""
        # The call's evictions close before its readings publish: a stream that came back after
        # --idle-timeout closes its old incident before its new state's first alert
        self._publish_closed()
        self.metrics.gaps += result.gaps
        if result.kept is not None:
            dropped = np.ones(len(batch), np.bool_)
            dropped[result.kept] = False
            for i in np.flatnonzero(dropped).tolist():
                self.metrics.duplicates += 1
                self._reject(
                    Rejection(
                        RejectReason.DUPLICATE,
                        f"seq {batch.seq_of(i)} is not after the stream's last: duplicate dropped",
                        batch.streams[i],
                    )
                )
            batch = batch.take(result.kept)
        if len(batch):
            self._publish(batch, result)
        return len(batch)

    def _publish(self, batch: Readings, result: StepResult) -> None:
        n = len(batch)
        mode = self.config.publish_mode
        if mode in ("each", "both"):
            self.predictions.send_messages(
                *protocol.pack_prediction_messages(
                    batch.streams, batch.seq, batch.ts, result.outputs, result.scores, ids=batch.ids
                )
            )
        if mode in ("batch", "both"):
            payload = protocol.encode_prediction_batch(
                batch.streams, batch.seq, batch.ts, result.outputs, result.scores, batch.ids
            )
            self.publisher.send_multipart((protocol.BATCH_TOPIC, payload))
        if result.events is not None:
            for i in np.flatnonzero(result.events).tolist():
                self._send_alert(self._alert(batch, result, i))
        self.metrics.readings_in += n
        self.metrics.predictions_out += n
        self.metrics.batch_size.observe(n)
        self.metrics.observe_latencies(batch.ts)

    def _send_alert(self, alert: dict[str, Any]) -> None:
        self.publisher.send_multipart(
            (protocol.alert_topic(alert["stream"]), protocol.encode_alert(alert))
        )
        self.metrics.alerts[alert["event"]] += 1

    def _alert(self, batch: Readings, result: StepResult, i: int) -> dict[str, Any]:
        """Build the alert message for row i, which opened or closed an incident."""
        alert: dict[str, Any] = {
            "stream": batch.streams[i],
            "event": "open" if result.events[i] == EVENT_OPEN else "close",
            **self._reading_fields(batch, result, i),
        }
        if result.events[i] == EVENT_CLOSE:
            alert["peak"] = float(result.peaks[i])
            alert["readings"] = int(result.lengths[i])
            alert["duration"] = _duration(alert["ts"], float(result.opened[i]))
            alert["reason"] = str(CloseReason.SCORE)
        return alert

    def _reading_fields(self, batch: Readings, result: StepResult, i: int) -> dict[str, Any]:
        """Return what an alert says of the reading in row i, the one that went with it."""
        value = batch.values[i].astype(np.float64)
        expected = result.expected[i].astype(np.float64)
        worst = int(np.argmax(np.abs(value - expected)))
        names = self.engine.model.feature_names
        return {
            "seq": batch.seq_of(i),
            "ts": batch.ts_of(i),
            "score": float(result.scores[i]),
            "value": value.tolist(),
            "expected": expected.tolist(),
            "feature": names[worst] if names else worst,
            "surprise": float(result.surprise[i]),
            "severity": _severity(float(result.surprise[i])),
        }

    def _publish_closed(self, ending: tuple[Readings, StepResult] | None = None) -> None:
        """Publish a close for each incident the engine closed since the last call because its
        stream's state was discarded; `ending`: the one reading (and its step) whose `end`
        discarded it, which the close then carries."""
        for closed in self.engine.take_closed_alerts():
            self._send_alert(self._discarded_alert(closed, ending))

    def _discarded_alert(
        self, closed: ClosedAlert, ending: tuple[Readings, StepResult] | None
    ) -> dict[str, Any]:
        reading = _NO_READING if ending is None else self._reading_fields(*ending, 0)
        return {
            "stream": closed.stream,
            "event": "close",
            **reading,
            "peak": closed.peak,
            "readings": closed.readings,
            "duration": _duration(reading["ts"], closed.opened_ts),
            "reason": str(closed.reason),
        }

    def _reject(self, rejection: Rejection) -> None:
        reason = str(rejection.reason)
        self.metrics.rejects[reason] += 1
        self.publisher.send_multipart([protocol.ERROR_TOPIC, protocol.encode_error(rejection)])
        self.warn.warning(
            reason,
            "message rejected",
            reason=reason,
            detail=rejection.detail,
            stream=rejection.stream,
        )

    # ---------------------------------------------------------------- control
    def _serve_control(self) -> None:
        try:
            frames = self.control.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return
        cmd: str | None = None  # stays None for a request that cannot be decoded
        try:
            if len(frames) != 1:
                raise protocol.ProtocolError(
                    f"a control request is one msgpack frame, not {len(frames)}"
                )
            request = protocol.decode_control(frames[0])
            cmd = request["cmd"]
            reply = self._command(request)
        except protocol.ProtocolError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a failing command must not take the daemon down
            log(self.logger, logging.ERROR, "control command failed", error=repr(exc))
            reply = {"ok": False, "error": f"internal error: {exc}"}
        ok = reply.pop("ok", True)
        error = reply.pop("error", None)
        # Counted before the reply goes out: a client that has its reply sees it counted.
        self.metrics.count_control(cmd, ok)
        self.control.send(protocol.encode_reply(ok, error=error, **reply))

    def _command(self, request: dict) -> dict:
        cmd = request["cmd"]
        stream = request.get("stream")
        if self.status == Status.STOPPING and cmd in _REFUSED_WHILE_STOPPING:
            # the stop is under way: its snapshot is to hold the drained state, nothing else
            return {"ok": False, "error": f"the daemon is stopping: {cmd} refused"}
        if cmd == "health":
            return {
                "status": str(self.status),
                "uptime": time.time() - self.started,
                "streams": len(self.engine),
                "model": self.model.fingerprint,
                "pid": os.getpid(),
            }
        if cmd == "stats":
            return {
                "status": str(self.status),
                **self.metrics.snapshot(),
                **self.engine.stats(),
            }
        if cmd == "streams":
            limit = _field(request, "limit", 1000)
            if type(limit) is not int or limit < 0:
                return {"ok": False, "error": "'limit' must be a non-negative integer"}
            streams = self.engine.streams()
            return {"count": len(streams), "streams": streams[:limit]}
        if cmd in ("reset", "drop"):
            if not isinstance(stream, str):
                return {"ok": False, "error": f"{cmd} needs a 'stream' string"}
            existed = getattr(self.engine, cmd)(stream)  # either forgets the stream's last seq
            self._publish_closed()
            return {"existed": existed}
        if cmd == "snapshot":
            return self._checkpoint("requested")
        if cmd == "threshold":
            return self._threshold(request)
        if cmd == "reload":
            return self._reload(request)
        if cmd == "shutdown":
            self._stop_requested = True
            return {"status": str(Status.STOPPING)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _threshold(self, request: dict) -> dict:
        """Set the alert open level of one stream ("stream" given) or of all streams."""
        if not self.engine.scoring:
            return {"ok": False, "error": "the model does not score anomalies; no alerts"}
        level = request.get("level")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int | float)):
            return {"ok": False, "error": "threshold needs a numeric 'level' (or nil to unset)"}
        stream = request.get("stream")
        try:
            if level is not None:
                # here, not left to the alert policy: that names the close level, none sent
                check_open_level(level)
            if stream is None:
                if level is None:
                    return {"ok": False, "error": "a global threshold needs a 'level'"}
                # The configured close level, lowered to the open level only while that is
                # lower: raising the threshold again restores it.
                self.engine.alerts = dataclasses.replace(
                    self.engine.alerts,
                    open_level=float(level),
                    close_level=min(self.config.alert_close, float(level)),
                )
                return {"level": float(level), "close_level": self.engine.alerts.close_level}
            if not isinstance(stream, str):
                return {"ok": False, "error": "'stream' must be a string"}
            existed = self.engine.set_threshold(stream, None if level is None else float(level))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if not existed:
            return {"ok": False, "error": f"no stream {stream!r}"}
        return {"stream": stream, "level": level}

    def _reload(self, request: dict) -> dict:
        path = request.get("path")
        if path is None:
            path = self.config.model
        elif not isinstance(path, str) or not path:
            # not read as "no path": that would swap to --model, with `reset` forgetting all
            error = "'path' must be a non-empty string (or nil for the daemon's model)"
            return {"ok": False, "error": error}
        reset = _field(request, "reset", False)
        if not isinstance(reset, bool):
            return {"ok": False, "error": "'reset' must be a bool"}
        try:
            model = self._load_model(path)
        except StartupError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            self.engine.swap_model(model, reset=reset)
        except NeedsReset as exc:
            # Name what the user types; the request field for other clients.
            again = "rnnstream ctl reload" + ("" if path is None else f" {shlex.quote(path)}")
            error = f"{exc.reason}: use `{again} --reset` (reset: true) to {exc.effect}"
            return {"ok": False, "error": error}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        self._publish_closed()
        self.model = model
        log(
            self.logger,
            logging.INFO,
            "model reloaded",
            model=model.fingerprint[:16],
            path=path or "(built in)",
        )
        return {"model": model.fingerprint, "streams": len(self.engine)}

    # -------------------------------------------------------------- snapshots
    def _checkpoint(self, why: str) -> dict:
        """Write a snapshot before going on (on request, at shutdown); return the reply."""
        self._wait_for_snapshot_writer()  # one writer of the file at a time
        began = time.perf_counter()
        try:
            count = self.engine.snapshot(self.state_path)
        except OSError as exc:
            self.metrics.snapshot_failures += 1
            log(self.logger, logging.ERROR, "snapshot failed", error=str(exc), path=self.state_path)
            return {"ok": False, "error": f"snapshot failed: {exc}"}
        finally:
            self._schedule_checkpoint()
        return self._snapshot_written(why, count, began)

    def _checkpoint_in_background(self) -> None:
        """Start a periodic snapshot: memory for the copy is faulted in on a thread, then
        `_copy_for_checkpoint` copies the states into it and writes the file on a thread.

        Readings wait for the copy only: written in the loop, a snapshot of 500,000 streams
        held intake up for ~0.9 s. Memory faulted in as the copy first touched it (the kernel
        zeroing each page) took half of the copy's time at 100,000-300,000 streams.
        """
        self._schedule_checkpoint()
        if self._snapshot_memory is not None:
            return  # memory for this one on its way or ready for the loop's copy: keep it
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            return  # still writing the last one: the timer comes round again
        size = self.engine.snapshot_memory()
        memory: list[np.ndarray] = []
        self._snapshot_memory = memory
        self._snapshot_thread = threading.Thread(
            target=lambda: memory.append(faulted_in(size)), name="snapshot", daemon=True
        )
        self._snapshot_thread.start()

    def _copy_for_checkpoint(self) -> None:
        """Once the memory is in place, copy the states into it and write them on a thread."""
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            return
        memory, self._snapshot_memory = self._snapshot_memory, None
        began = time.perf_counter()
        copy = self.engine.snapshot_copy(memory[0] if memory else None)

        def write() -> None:
            try:
                count = write_snapshot(self.state_path, copy)
            except OSError as exc:
                self.metrics.snapshot_failures += 1
                log(
                    self.logger,
                    logging.ERROR,
                    "snapshot failed",
                    error=str(exc),
                    path=self.state_path,
                )
                return
            self._snapshot_written("periodic", count, began)

        self._snapshot_thread = threading.Thread(target=write, name="snapshot", daemon=True)
        self._snapshot_thread.start()

    def _wait_for_snapshot_writer(self) -> None:
        """Let a periodic snapshot's thread finish; one whose copy is not taken yet is dropped."""
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
            self._snapshot_thread = None
        self._snapshot_memory = None

    def _schedule_checkpoint(self) -> None:
        if self.config.checkpoint_every:
            self._next_checkpoint = time.monotonic() + self.config.checkpoint_every

    def _snapshot_written(self, why: str, count: int, began: float) -> dict:
        seconds = time.perf_counter() - began
        self.metrics.snapshots += 1
        self.metrics.snapshot_seconds.observe(seconds)
        log(
            self.logger,
            logging.INFO,
            "snapshot written",
            why=why,
            streams=count,
            seconds=round(seconds, 4),
            path=self.state_path,
        )
        return {"path": str(self.state_path), "streams": count, "seconds": seconds}

    # --------------------------------------------------------------- shutdown
    def _shutdown(self) -> int:
        """Stop intake, process what was received, publish it, snapshot, close; return the exit
        status.

        1 when the snapshot failed: the readings since the last good one are lost to the state,
        which an operator (or systemd, which marks the unit failed) should not read as a clean
        stop.
        """
        self.status = Status.STOPPING
        log(self.logger, logging.INFO, "stopping: draining intake")
        began = quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < _DRAIN_QUIET_S:
            if time.monotonic() - began > DRAIN_LIMIT_S:
                log(self.logger, logging.WARNING, "intake still busy: stopping without waiting")
                break
            self._serve_control()  # a probe during the drain learns the daemon is stopping
            if self._intake_pass(wait=False):
                quiet_since = time.monotonic()
            else:
                self.ingest.poll(10)
        saved = self._checkpoint("shutdown").get("ok", True)
        self._close_sockets(linger=5000)
        self.status = Status.STOPPED
        log(
            self.logger,
            logging.INFO,
            "stopped",
            readings=self.metrics.readings_in,
            predictions=self.metrics.predictions_out,
            snapshot="written" if saved else "failed",
        )
        return 0 if saved else 1

    def _close_sockets(self, linger: int) -> None:
        for name in ("ingest", "control", "publisher"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=linger)
        if self._auth is not None:
            self._auth.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()  # its listening socket
        if self._context is not None:
            self._context.term()


def _field(request: dict, name: str, default: Any) -> Any:
    """Return an optional field of a control request; nil counts as not given, as a client
    that fills every field of its own request type sends it."""
    value = request.get(name)
    return default if value is None else value


def _ipc_endpoint_in_use(endpoint: str) -> bool:
    """Tell whether a live process accepts connections on an ipc:// endpoint's socket file.

    ZeroMQ binds an ipc:// endpoint by first unlinking the file at its path, so a second daemon
    would silently take the endpoint from a running one (which then serves nobody) instead of
    failing as a TCP port in use does. A file left by a daemon that is gone refuses the
    connection and may be replaced.
    """
    if not endpoint.startswith("ipc://") or not hasattr(socket, "AF_UNIX"):
        return False
    path = endpoint.removeprefix("ipc://")
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _duration(ts: float | None, opened: float) -> float | None:
    """Seconds from an incident's opening reading to `ts`; None when either is unknown."""
    return ts - opened if ts is not None and math.isfinite(opened) else None


def _severity(surprise: float) -> str:
    """Grade an alert by how far the reading was from its forecast, in typical errors."""
    if surprise >= 8.0:
        return "critical"
    if surprise >= 5.0:
        return "major"
    return "minor"


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from engine.cli import UserError

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    logger = setup_logging(config.log_format, config.log_level)
    daemon = Daemon(config, logger)
    daemon.install_signal_handlers()
    try:
        daemon.start()
    except StartupError as exc:
        raise UserError(str(exc)) from None
    # Everything allocated at start-up lives for weeks: keep it out of the collector's scans,
    # and collect the young generation less often (each reading makes a few short-lived dicts).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return daemon.run()
