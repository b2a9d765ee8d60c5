"""`rnnstream bench e2e`: end-to-end throughput and latency against a real `rnnstream serve`.

Producer processes send readings over loopback TCP (or `--transport ipc`) to a daemon subprocess
(single readings packed and sent a tick at a time by `SingleReadingLoad`, batches by
`Producer.send_many`); a subscriber process counts every prediction and measures latency as its
receive time minus the `ts` the producer stamped at send time (the daemon echoes it). Measured,
for N streams:

- sustained throughput, flat out, of single-reading messages (`--publish-mode each`) and of
  columnar batches (`--publish-mode batch`): every prediction must arrive (count and seq sum are
  checked), else the run fails;
- latency percentiles at fractions of that maximum, with rate-controlled producers;
- when torch is installed, the same for a plain pyzmq + `torch.nn.LSTMCell` loop (the baseline).

Everything shares the machine's cores, so the numbers are for producer + daemon + subscriber
together; the CPU columns show where the time went.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import importlib.util
import multiprocessing as mp
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.bench.stalls import Stalls, steal_seconds
from engine.bench.stalls import measure as stall_measure
from engine.process import TRANSPORTS, ServeProcess, local_endpoints

PROBE_STREAM = "__bench_probe__"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A paced producer sleeps at least this long between sends: at 40k readings/s it sends ~8 at a
# time, as producers on other machines would arrive interleaved, without a wake-up per reading
# (those cost it 2.5x the CPU of sending flat out). It sleeps rather than spins: the cores are
# shared with the daemon under test.
PACING_TICK_S = 200e-6
LATE_S = 1e-3  # a paced reading sent this long after its due time counts as sent late
_READINGS_PER_PACK = 4096  # single readings packed and sent by one call each, flat out
# Frames the subscriber takes from its socket at a time (even: topic and payload pairs). All of
# a look's frames get the time the look ended, and one frame takes ~60 ns: a look of 8192 stamped
# its first frames up to 0.5 ms after they were in hand, one of 1024 at most ~0.07 ms after.
_FRAMES_PER_LOOK = 1024

# Targets from the project brief (2 cores shared by producer, daemon and subscriber).
TARGET_SINGLE = 100_000.0  # readings/s, single-reading messages
TARGET_BATCH = 1_000_000.0  # readings/s, columnar batches with batched publication
TARGET_P50_MS = 1.0  # at 50% load
TARGET_P99_MS = 5.0


# --------------------------------------------------------------------------- helpers


def cpu_seconds(pid: int) -> float | None:
    """Return user + system CPU seconds used so far by process `pid` (None if unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may contain spaces; the fields after its closing parenthesis do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# --------------------------------------------------------------------------- worker processes


def _producer_main(
    conn: Any, endpoint: str, streams: list[str], n_inputs: int, seed: int, nice: int
) -> None:
    """Producer process: run send phases on command, report what was sent and how late."""
    from engine.socket_io import context_with_batch_io_threads
    from producers.client import Producer

    os.nice(nice)  # before ZeroMQ starts its I/O thread, which inherits it
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((64, n_inputs)).astype(np.float32)
    context = context_with_batch_io_threads()
    producer = Producer(endpoint, context=context, hwm=100_000, linger=30.0)
    singles = SingleReadingLoad(context, endpoint, streams, pool)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                break
            if cmd[0] == "probe":
                producer.send(PROBE_STREAM, pool[0])
                conn.send("sent")
                continue
            _, mode, n, rate, batch_size, start_at = cmd
            pacing = Pacing(start_at, rate)
            if mode == "single":
                seq_sum = singles.send_paced(n, pacing)
            else:
                seq_sum = _send_batches(producer, streams, pool, n, batch_size, pacing)
            conn.send(("done", seq_sum, pacing.late, pacing.max_lag))
    finally:
        singles.close()
        producer.close()
        context.term()


class SingleReadingLoad:
    """Single-reading messages for `streams` in turn, each stream's seq counting 1, 2, 3, ...

    The frames are those `Producer.send` makes (`protocol.encode_reading` of the reading, its
    seq and the send time), but a whole phase's schedule runs in one jitted call
    (`bench.io_phases.send_paced`): reading the clock, packing what is due, sending it and
    sleeping until the next reading is due. The load generator then takes less of the cores the
    daemon under test shares with it (~1.7 us of Python a reading through `Producer.send`, ~20
    us a 200 us tick when the tick loop was Python).
    """

    def __init__(self, context: Any, endpoint: str, streams: list[str], pool: np.ndarray) -> None:
        import zmq

        from engine.bench import io_phases
        from engine.fastpaths import wire

        self._send_paced = io_phases.send_paced
        encoded = [stream.encode("utf-8") for stream in streams]
        self.id_bytes = np.frombuffer(b"".join(encoded), np.uint8)
        self.id_starts = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
        self.last_seq = np.zeros(len(streams), np.int64)
        self.pool = np.ascontiguousarray(pool, np.float32)
        self.cursor = 0  # the stream of the next reading
        self.chunk = min(_READINGS_PER_PACK, len(streams))  # a stream at most once a pack
        frame_room = (
            max(map(len, encoded)) + wire.READING_BYTES_BEYOND_ID_AND_VALUES + 9 * pool.shape[1]
        )
        self.out = np.empty(self.chunk * frame_room, np.uint8)
        self.bounds = np.empty(self.chunk + 1, np.int64)
        self.timespec = np.zeros(2, np.int64)
        self.socket = context.socket(zmq.PUSH)
        self.socket.sndhwm = 100_000
        self.socket.linger = 30_000
        self.socket.connect(endpoint)
        self.send(0, 0)  # compiles the kernel now, not in the first phase

    def send(self, count: int, first: int) -> int:
        """Send the next `count` readings at once (values from row `first` of the pool on),
        stamped as they are packed; return the sum of their seqs."""
        return self.send_paced(count, Pacing(0.0, 0.0), first)

    def send_paced(self, n: int, pacing: Pacing, first: int = 0) -> int:
        """Send the next `n` readings on `pacing`'s schedule, recording in it how late they
        went; return the sum of their seqs."""
        lateness = np.array([0.0, pacing.max_lag])
        seq_sum, self.cursor, error = self._send_paced(
            self.socket.underlying,
            self.id_bytes,
            self.id_starts,
            self.last_seq,
            self.cursor,
            self.pool,
            first,
            n,
            pacing.start_at,
            pacing.rate,
            PACING_TICK_S,
            LATE_S,
            self.chunk,
            self.out,
            self.bounds,
            self.timespec,
            lateness,
        )
        if error:
            import zmq

            raise zmq.ZMQError(error)
        pacing.late += int(lateness[0])
        pacing.max_lag = float(lateness[1])
        return int(seq_sum)

    def close(self) -> None:
        self.socket.close()


def _wait_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


class Pacing:
    """A producer's schedule (reading k due at start_at + k / rate; rate 0: flat out) and how
    far behind it the readings went out: a generator that falls behind offers less load than
    asked just when the daemon is slow, and its readings' stamps hide the delay, so the report
    shows it."""

    def __init__(self, start_at: float, rate: float) -> None:
        self.start_at = start_at
        self.rate = rate
        self.late = 0  # readings sent more than LATE_S after they were due
        self.max_lag = 0.0  # seconds, the most any reading was sent after it was due

    def due_at(self, k: int) -> float:
        return self.start_at + k / self.rate

    def record(self, now: float, first: int, end: int) -> None:
        """Readings first .. end - 1 go out at `now`."""
        if self.rate <= 0 or end <= first:
            return
        from engine.bench.io_phases import readings_late

        self.max_lag = max(self.max_lag, now - self.due_at(first))
        self.late += readings_late(now, self.start_at, self.rate, LATE_S, first, end)


def _send_batches(
    producer: Any,
    streams: list[str],
    pool: np.ndarray,
    n: int,
    batch_size: int,
    pacing: Pacing,
) -> int:
    """Send `n` readings as columnar batches of `batch_size` rows on `pacing`'s schedule."""
    n_streams = len(streams)
    doubled = streams + streams  # a batch's streams are one slice even when it wraps around
    X = np.resize(pool, (batch_size, pool.shape[1]))
    seq_sum = 0
    sent = 0
    cursor = 0
    _wait_until(pacing.start_at)
    while sent < n:
        size = min(batch_size, n - sent, n_streams)
        chunk = doubled[cursor : cursor + size]
        pacing.record(time.time(), sent, sent + size)
        seq_sum += sum(producer.send_many(chunk, X[:size]))
        cursor = (cursor + size) % n_streams
        sent += size
        if pacing.rate > 0 and sent < n:
            _wait_until(pacing.due_at(sent))
    return seq_sum


def _subscriber_main(conn: Any, endpoint: str, nice: int) -> None:
    """Subscriber process: count predictions per phase and record each one's latency."""
    import msgpack
    import zmq

    from engine.socket_io import context_with_batch_io_threads

    os.nice(nice)  # before ZeroMQ starts its I/O thread, which inherits it
    ctx = context_with_batch_io_threads()  # as consumers.Subscriber's
    sock = ctx.socket(zmq.SUB)
    sock.rcvhwm = 0  # never drop: a lost prediction must mean the daemon lost it
    sock.linger = 0
    for topic in (b"pred.", b"batch.pred", b"error"):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    unpackb = msgpack.unpackb
    conn.send(("ready", os.getpid()))
    try:
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                break
            if cmd[0] == "probe":
                conn.send(_wait_for_probe(sock, cmd[1], unpackb))
                continue
            _, expected, idle_timeout = cmd
            _drain(sock)
            conn.send("armed")
            conn.send(_receive_phase(sock, expected, idle_timeout, unpackb))
    finally:
        sock.close(linger=0)
        ctx.term()


def _drain(sock: Any) -> int:
    import zmq

    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
            n += 1
        except zmq.Again:
            return n


def _wait_for_probe(sock: Any, timeout: float, unpackb: Any) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(50):
            topic, payload = sock.recv_multipart()
            msg = unpackb(payload)
            streams = msg.get("streams") or [msg.get("stream")]
            if PROBE_STREAM in streams:
                return True
    return False


def _receive_phase(sock: Any, expected: int, idle_timeout: float, unpackb: Any) -> dict:
    """Receive until `expected` predictions arrived or none came for `idle_timeout` seconds.

    Single predictions are taken by one jitted call (`bench.io_phases.receive_stamps`: wait,
    take what is queued, stamp it with the time it was taken, read each one's seq and ts), which
    returns only for anything else (batch publications, errors, probe predictions), read by
    msgpack here. At 130k predictions/s reading them one by one in Python took this process
    0.42-0.45 of a core; a look at a time, from Python, 0.22-0.24 (and a pass's predictions no
    longer wait in its queue for each other to be read).
    """
    from engine.bench import io_phases
    from engine.fastpaths import zmqcalls
    from engine.protocol import DEFAULT_MAX_FRAME_BYTES, PREDICTION_PREFIX
    from engine.socket_io import PASS_BUDGET_BYTES

    item = zmqcalls.poll_item(sock)
    buf = np.empty(PASS_BUDGET_BYTES + DEFAULT_MAX_FRAME_BYTES + 1, np.uint8)
    starts = np.zeros(_FRAMES_PER_LOOK + 2, np.int64)
    prefix = np.frombuffer(PREDICTION_PREFIX, np.uint8)
    probe_id = np.frombuffer(PROBE_STREAM.encode(), np.uint8)
    capacity = max(expected, 1)
    latency = np.empty(capacity, np.float64)
    seq = np.empty(capacity, np.int64)
    ts = np.empty(capacity, np.float64)
    looks = np.full(2, np.nan)  # the first look's time and the last's
    timespec = np.zeros(2, np.int64)
    count = seq_sum = errors = n = i = 0
    while True:
        count, got_sum, n, i, why = io_phases.receive_stamps(
            item,
            int(idle_timeout * 1000),
            buf,
            starts,
            _FRAMES_PER_LOOK,
            PASS_BUDGET_BYTES,
            n,
            i,
            prefix,
            probe_id,
            seq,
            ts,
            latency,
            count,
            expected,
            looks,
            timespec,
        )
        seq_sum += got_sum
        if why == -errno.EINTR:  # its handler has run by now (as pyzmq's poll): wait again
            continue
        if why < 0:
            import zmq

            raise zmq.ZMQError(-why)
        if why != io_phases.OTHER_MESSAGE:
            break
        topic = buf[starts[i] : starts[i + 1]].tobytes()
        msg = unpackb(buf[starts[i + 1] : starts[i + 2]])  # read in place: batches are big
        i += 2
        if topic == b"batch.pred":
            streams = msg["streams"]
            if streams and streams[0] == PROBE_STREAM:
                continue
            k = min(len(streams), capacity - count)
            stamps = np.broadcast_to(np.asarray(msg["ts"], np.float64), (len(streams),))
            latency[count : count + k] = looks[1] - stamps[:k]
            seq_sum += sum(msg["seq"][:k])
            count += k
        elif topic == b"error":
            errors += 1
        elif msg["stream"] != PROBE_STREAM:
            latency[count] = looks[1] - msg["ts"]
            seq_sum += msg["seq"]
            count += 1
    first, last = (None if t != t else float(t) for t in looks)
    return {
        "count": count,
        "seq_sum": seq_sum,
        "errors": errors,
        "first": first,
        "last": last,
        "latency": latency[: min(count, expected)],
    }


def _baseline_main(ingest: str, publish: str, model_path: str, ready: Any) -> None:
    """A plain pyzmq loop stepping `torch.nn.LSTMCell` + `Linear` per message (the baseline)."""
    import msgpack
    import torch
    import zmq

    from engine.model import Model

    torch.set_num_threads(1)
    model = Model.load(model_path)
    layer = model.layers[0]
    cell = torch.nn.LSTMCell(model.input_size, model.hidden_size)
    head = torch.nn.Linear(model.hidden_size, model.output_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(torch.from_numpy(np.array(getattr(layer, name))))
        head.weight.copy_(torch.from_numpy(np.array(model.head_weight)))
        head.bias.copy_(torch.from_numpy(np.array(model.head_bias)))
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.rcvhwm = 100_000
    pull.bind(ingest)
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    pub.bind(publish)
    states: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    packb = msgpack.Packer(use_bin_type=True).pack
    unpackb = msgpack.unpackb
    ready.set()
    with torch.inference_mode():
        while True:
            msg = unpackb(pull.recv())
            stream = msg["stream"]
            x = torch.tensor([msg["values"]], dtype=torch.float32)
            h, c = cell(x, states.get(stream))
            states[stream] = (h, c)
            y = head(h)[0].tolist()
            payload = {
                "stream": stream,
                "seq": msg.get("seq"),
                "ts": msg.get("ts"),
                "prediction": y,
                "score": None,
            }
            pub.send_multipart([b"pred." + stream.encode(), packb(payload)])


# --------------------------------------------------------------------------- the harness


@dataclass
class PhaseResult:
    """One measured phase: what was sent, what arrived, how fast, how late, at what CPU cost."""

    engine: str
    messages: str  # "single" or "batch N"
    load: str  # "max" or "50%"
    offered: float  # readings/s asked of the producers (0: flat out)
    sent: int
    delivered: int
    complete: bool
    throughput: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds / wall second
    mean_batch: float | None = None  # readings per engine call (daemon only)
    step_share: float | None = None  # engine step time / daemon CPU time
    errors: int = 0
    host_steal: float | None = None  # share of all cores the host took during the phase
    sent_late: float | None = None  # paced phases: share of readings sent over LATE_S late
    max_send_lag: float | None = None  # paced phases: seconds, the most one was sent late
    flat_out_runs: tuple[float, ...] = ()  # "max" rows: readings/s of every flat-out run
    # Paced phases: the share of readings over the p99 target when the daemon published them
    # (its latency histogram, from `ts`) and when the subscriber had them: what of the tail
    # arose before publication and what in delivery.
    over_target_published: float | None = None
    over_target_received: float | None = None


class Harness:
    """Producer processes and one subscriber process attached to one server's sockets."""

    def __init__(
        self,
        ingest: str,
        publish: str,
        streams: list[str],
        *,
        producers: int,
        n_inputs: int,
        idle_timeout: float,
        nice: int,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.n_producers = producers
        ctx = mp.get_context("spawn")
        self._sub_conn, child = ctx.Pipe()
        self._sub = ctx.Process(
            target=_subscriber_main,
            args=(child, publish, nice),
            name="bench-subscriber",
            daemon=True,
        )
        self._sub.start()
        self._producers = []
        for k in range(producers):
            conn, child = ctx.Pipe()
            proc = ctx.Process(
                target=_producer_main,
                args=(child, ingest, streams[k::producers], n_inputs, k, nice),
                name=f"bench-producer-{k}",
                daemon=True,
            )
            proc.start()
            self._producers.append((proc, conn))
        self.pids = {"subscriber": self._expect_ready(self._sub_conn)}
        self.producer_pids = [self._expect_ready(conn) for _, conn in self._producers]

    def _expect_ready(self, conn: Any) -> int:
        if not conn.poll(60):
            raise RuntimeError("a benchmark worker process did not start within 60 s")
        tag, pid = conn.recv()
        return pid

    def probe(self, timeout: float = 30.0) -> None:
        """Send probe readings until the subscriber sees one (a SUB joins late otherwise)."""
        self._sub_conn.send(("probe", timeout))
        _, conn = self._producers[0]
        deadline = time.monotonic() + timeout
        while not self._sub_conn.poll(0.1):
            if time.monotonic() > deadline:
                break
            conn.send(("probe",))
            conn.recv()
        if not self._sub_conn.poll(timeout) or not self._sub_conn.recv():
            raise RuntimeError("the subscriber received nothing: is the server publishing?")
        time.sleep(0.2)  # let stray probe predictions arrive; the next phase drains them

    def phase(
        self,
        mode: str,
        readings: int,
        rate: float,
        batch_size: int,
        *,
        server_pid: int | None = None,
        stats: Any = None,
    ) -> tuple[dict, dict]:
        """Send `readings` in `mode` at `rate` (0: flat out) and collect every prediction."""
        p = self.n_producers
        shares = [readings // p + (1 if k < readings % p else 0) for k in range(p)]
        self._sub_conn.send(("phase", readings, self.idle_timeout))
        if self._sub_conn.recv() != "armed":
            raise RuntimeError("subscriber out of step")
        before_stats = stats() if stats else None
        pids = {"server": server_pid, "subscriber": self.pids["subscriber"]}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        prod_before = [cpu_seconds(pid) for pid in self.producer_pids]
        steal_before = steal_seconds()
        start_at = time.time() + 0.2
        for (_, conn), share in zip(self._producers, shares, strict=True):
            conn.send(("send", mode, share, rate / p, batch_size, start_at))
        seq_sum = late = 0
        max_lag = 0.0
        for _, conn in self._producers:
            _, sent_seq_sum, sent_late, sent_max_lag = conn.recv()
            seq_sum += sent_seq_sum
            late += sent_late
            max_lag = max(max_lag, sent_max_lag)
        received = self._sub_conn.recv()
        steal_after = steal_seconds()
        wall_end = received["last"] or time.time()
        wall = max(wall_end - start_at, 1e-9)
        cpu = {}
        for name, pid in pids.items():
            if pid and cpu_before.get(name) is not None:
                cpu[name] = ((cpu_seconds(pid) or 0.0) - cpu_before[name]) / wall
        prod_after = [cpu_seconds(pid) for pid in self.producer_pids]
        if all(v is not None for v in prod_before + prod_after):
            cpu["producers"] = (
                sum(a - b for a, b in zip(prod_after, prod_before, strict=True)) / wall
            )
        info = {
            "sent": readings,
            "seq_sum": seq_sum,
            "sent_late": late / readings if rate > 0 and readings else None,
            "max_send_lag": max_lag if rate > 0 else None,
            "wall": wall,
            "cpu": cpu,
            "host_steal": _steal_share(steal_before, steal_after, wall),
            "stats_before": before_stats,
            "stats_after": stats() if stats else None,
        }
        return info, received

    def close(self) -> None:
        for _, conn in self._producers:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        try:
            self._sub_conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        for proc, _ in self._producers:
            proc.join(35)
            if proc.is_alive():
                proc.kill()
        self._sub.join(5)
        if self._sub.is_alive():
            self._sub.kill()


def _result(
    engine: str, messages: str, load: str, offered: float, info: dict, received: dict
) -> PhaseResult:
    lat = received["latency"] * 1e3
    p50 = p99 = p999 = float("nan")
    if lat.size:
        p50, p99, p999 = (float(v) for v in np.percentile(lat, [50, 99, 99.9]))
    delivered = received["count"]
    result = PhaseResult(
        engine=engine,
        messages=messages,
        load=load,
        offered=offered,
        sent=info["sent"],
        delivered=delivered,
        complete=delivered == info["sent"] and received["seq_sum"] == info["seq_sum"],
        throughput=delivered / info["wall"],
        p50_ms=p50,
        p99_ms=p99,
        p999_ms=p999,
        cpu=info["cpu"],
        errors=received["errors"],
        host_steal=info.get("host_steal"),
        sent_late=info.get("sent_late"),
        max_send_lag=info.get("max_send_lag"),
    )
    if offered > 0 and lat.size:
        result.over_target_received = float(np.count_nonzero(lat > TARGET_P99_MS)) / lat.size
    before, after = info["stats_before"], info["stats_after"]
    if before and after:
        if offered > 0:
            result.over_target_published = _share_over(
                before["latency_seconds"], after["latency_seconds"], TARGET_P99_MS / 1e3
            )
        d_count = after["batch_size"]["count"] - before["batch_size"]["count"]
        d_rows = after["batch_size"]["sum"] - before["batch_size"]["sum"]
        d_step = after["step_seconds"]["sum"] - before["step_seconds"]["sum"]
        result.mean_batch = d_rows / d_count if d_count else None
        server_cpu = info["cpu"].get("server")
        if server_cpu:
            result.step_share = d_step / (server_cpu * info["wall"])
    return result


def _steal_share(before: float | None, after: float | None, wall: float) -> float | None:
    """The host's share of all cores over `wall` seconds, from two `steal_seconds` counts;
    None without them or when the phase was too short for the counter's ticks (a tick of steal
    would read as over 1%)."""
    core_seconds = wall * (os.cpu_count() or 1)
    if before is None or after is None or core_seconds * _CLK_TCK < 100:
        return None
    return (after - before) / core_seconds


def _share_over(before: dict, after: dict, bound: float) -> float | None:
    """The share of a histogram's observations between two `stats` replies that lie above
    `bound`, one of its bucket bounds (None when it is not one, or nothing was observed)."""
    observed = after["count"] - before["count"]
    at_or_below_after = dict(after.get("buckets", ()))
    at_or_below_before = dict(before.get("buckets", ()))
    if not observed or bound not in at_or_below_after:
        return None
    at_or_below = at_or_below_after[bound] - at_or_below_before.get(bound, 0)
    return (observed - at_or_below) / observed


@dataclass
class Settings:
    streams: int
    producers: int
    single_readings: int
    batch_readings: int
    baseline_readings: int
    batch_size: int
    latency_seconds: float
    loads: tuple[float, ...]
    hidden: int
    inputs: int
    outputs: int
    idle_timeout: float
    baseline: bool
    serve_args: tuple[str, ...] = ()
    max_runs: int = 3
    # Offered rates (readings/s) for the latency phases of single / batch messages, instead of
    # `loads` fractions of the run's own maximum: runs of different code then compare at the
    # same load.
    single_rates: tuple[float, ...] = ()
    batch_rates: tuple[float, ...] = ()
    stall_seconds: float = 5.0  # the machine's own stalls measured this long first (0: not)
    # Niceness of the producer and subscriber processes: they stand in for other machines, so
    # by default the daemon under test comes first when all want the cores at once.
    generator_nice: int = 5
    # How producers and subscriber reach the server: loopback TCP, as clients on other machines
    # would, or ipc:// socket files, as clients on the server's own host may.
    transport: str = "tcp"


def _measure(
    engine: str,
    harness: Harness,
    mode: str,
    settings: Settings,
    readings: int,
    *,
    server_pid: int | None,
    stats: Any,
    say: Any,
) -> list[PhaseResult]:
    """Warm up, run flat out `max_runs` times, then at each load fraction of the median run.

    One flat-out run on shared cores can land 40% off the next (measured: 143k then 98k
    single readings/s); the load phases would then offer 50% of a lucky figure.
    """
    size = settings.batch_size
    label = "single" if mode == "single" else f"batch {size}"
    # Warm-up: every stream gets its first reading (slots allocated, code paths warm).
    info, rec = harness.phase(mode, settings.streams, 0, size, server_pid=server_pid)
    if rec["count"] != settings.streams:
        raise RuntimeError(
            f"{engine} {label} warm-up: {rec['count']} of {settings.streams} predictions arrived"
        )
    results = []
    runs = []
    for _ in range(settings.max_runs):
        info, rec = harness.phase(mode, readings, 0, size, server_pid=server_pid, stats=stats)
        run = _result(engine, label, "max", 0.0, info, rec)
        say(_summary(run))
        if not run.complete:
            results.append(run)
            return results
        runs.append(run)
    fixed = settings.single_rates if mode == "single" else settings.batch_rates
    phases = [(f"{rate:,.0f}/s", rate) for rate in fixed]
    if runs:
        top = sorted(runs, key=lambda r: r.throughput)[len(runs) // 2]
        top.flat_out_runs = tuple(r.throughput for r in runs)
        results.append(top)
        if not fixed:
            phases = [(f"{load:.0%}", load * top.throughput) for load in settings.loads]
    for load, rate in phases:
        n = max(int(rate * settings.latency_seconds), settings.producers)
        if mode != "single":
            n = max(n, size)
        info, rec = harness.phase(mode, n, rate, size, server_pid=server_pid, stats=stats)
        r = _result(engine, label, load, rate, info, rec)
        results.append(r)
        say(_summary(r))
        if not r.complete:
            break
    return results


def _summary(r: PhaseResult) -> str:
    return (
        f"  {r.engine} {r.messages} {r.load}: {r.delivered}/{r.sent} delivered, "
        f"{r.throughput:,.0f} readings/s, p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms"
    )


def run_benchmark(settings: Settings, workdir: Path, say: Any = print) -> list[PhaseResult]:
    """Run every phase against fresh servers and return one result per phase."""
    from engine.ctl import control
    from engine.model import Model

    model_path = workdir / "bench-model.npz"
    Model.random(
        "lstm", settings.inputs, settings.hidden, output_size=settings.outputs, seed=0
    ).save(model_path)
    streams = [f"sensor-{i:05d}" for i in range(settings.streams)]
    results: list[PhaseResult] = []
    # No periodic snapshot inside a measurement; a publish queue deep enough that a lagging
    # subscriber delays predictions instead of losing them.
    extra = ["--checkpoint-every", "0", "--publish-hwm", "10000000", *settings.serve_args]
    for mode, publish_mode, readings in (
        ("single", "each", settings.single_readings),
        ("batch", "batch", settings.batch_readings),
    ):
        say(f"rnnstream serve --publish-mode {publish_mode}: {mode} messages")
        server = ServeProcess(
            model_path,
            workdir,
            publish_mode=publish_mode,
            extra=extra,
            transport=settings.transport,
        )
        server.start()
        harness = None
        try:
            harness = Harness(
                server.ingest,
                server.publish,
                streams,
                producers=settings.producers,
                n_inputs=settings.inputs,
                idle_timeout=settings.idle_timeout,
                nice=settings.generator_nice,
            )
            harness.probe()

            def stats(endpoint: str = server.control) -> dict:
                return control(endpoint, "stats", timeout=10.0)

            results += _measure(
                "rnnstream",
                harness,
                mode,
                settings,
                readings,
                server_pid=server.pid,
                stats=stats,
                say=say,
            )
        finally:
            if harness is not None:
                harness.close()
            server.stop()
    if settings.baseline:
        say("baseline: pyzmq + torch.nn.LSTMCell loop, single messages")
        results += _run_baseline(settings, model_path, streams, say)
    return results


def _run_baseline(
    settings: Settings, model_path: Path, streams: list[str], say: Any
) -> list[PhaseResult]:
    ctx = mp.get_context("spawn")
    ingest, publish = local_endpoints(settings.transport, model_path.parent, 2)
    ready = ctx.Event()
    proc = ctx.Process(
        target=_baseline_main,
        args=(ingest, publish, str(model_path), ready),
        name="bench-baseline",
        daemon=True,
    )
    proc.start()
    harness = None
    try:
        if not ready.wait(120):
            raise RuntimeError("the torch baseline did not start within 120 s")
        harness = Harness(
            ingest,
            publish,
            streams,
            producers=settings.producers,
            n_inputs=settings.inputs,
            idle_timeout=settings.idle_timeout,
            nice=settings.generator_nice,
        )
        harness.probe()
        return _measure(
            "torch loop",
            harness,
            "single",
            settings,
            settings.baseline_readings,
            server_pid=proc.pid,
            stats=None,
            say=say,
        )
    finally:
        if harness is not None:
            harness.close()
        proc.terminate()
        proc.join(10)


# --------------------------------------------------------------------------- report


def machine_description() -> str:
    """Return CPU model, core count, load average and library versions on one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import msgpack
    import zmq

    parts = [
        f"{cpu}, {os.cpu_count()} cores",
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start",
        f"Python {platform.python_version()}, numpy {np.__version__}, pyzmq {zmq.__version__} "
        f"(libzmq {zmq.zmq_version()}), msgpack {'.'.join(map(str, msgpack.version))}",
    ]
    if importlib.util.find_spec("torch") is not None:
        import torch

        parts.append(f"torch {torch.__version__}")
    return "; ".join(parts)


def _fmt_ms(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"


def _fmt_late(r: PhaseResult) -> str:
    if r.sent_late is None or r.max_send_lag is None:
        return "-"
    return f"{r.sent_late:.1%}, max {r.max_send_lag * 1e3:.1f} ms"


def _fmt_over(r: PhaseResult) -> str:
    if r.over_target_received is None:
        return "-"
    published = "-" if r.over_target_published is None else f"{r.over_target_published:.2%}"
    return f"{published} / {r.over_target_received:.2%}"


def _target(r: PhaseResult) -> tuple[str, str]:
    if r.engine != "rnnstream":
        return "", ""
    if r.load == "max":
        goal = TARGET_SINGLE if r.messages == "single" else TARGET_BATCH
        text = f">= {goal:,.0f}/s"
        return text, "yes" if r.complete and r.throughput >= goal else "**no**"
    if r.load == "50%" and r.messages == "single":
        ok = r.complete and r.p50_ms <= TARGET_P50_MS and r.p99_ms <= TARGET_P99_MS
        return f"p50 <= {TARGET_P50_MS:g}, p99 <= {TARGET_P99_MS:g} ms", "yes" if ok else "**no**"
    return "", ""


def markdown_report(
    results: list[PhaseResult],
    settings: Settings,
    command: str,
    machine: str,
    date: str,
    stalls: Stalls | None = None,
) -> str:
    """Return the results as a markdown document with the command, date and machine."""
    lines = [
        "# rnnstream end-to-end benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {date}",
        f"- machine: {machine}",
        *(
            [
                f"- the machine's own stalls, just before (a spinner on every core for "
                f"{stalls.seconds:g} s, gaps over 50 us; `engine/bench/stalls.py`): "
                f"{stalls.summary()}"
            ]
            if stalls is not None
            else []
        ),
        f"- model: LSTM 1 layer, hidden {settings.hidden}, input {settings.inputs}, "
        f"linear head {settings.outputs} (`Model.random`)",
        "- server: `rnnstream serve --checkpoint-every 0 --publish-hwm 10000000"
        + "".join(" " + shlex.quote(a) for a in settings.serve_args)
        + "` (`--publish-mode each` for single messages, `batch` for columnar ones)",
        f"- {settings.streams:,} streams, {settings.producers} producer process(es), one "
        f"subscriber process, server on {TRANSPORTS[settings.transport]}; producer, server "
        "and subscriber share the cores, "
        f"producers and subscriber at niceness +{settings.generator_nice} to the server's "
        "(`--generator-nice`: they stand in for other machines)",
        "- throughput = predictions delivered / (first send to last receive); latency = "
        "subscriber receive time - producer send `ts` (echoed by the server)",
        "- CPU = CPU seconds per wall second of each process (1.00 = one core busy); step = "
        "share of the daemon's CPU spent in `StreamEngine.step_many`; host steal = CPU time the "
        "VM's host took from its cores while they had work, as a share of all cores over the "
        "phase (`/proc/stat`; a thread on a core taken waits it out whole); sent late = paced "
        f"phases: the share of readings the producers sent over {LATE_S * 1e3:g} ms after their "
        "due time, and the most any was (their `ts` is the send time, so this delay is not in "
        f"the latency); over {TARGET_P99_MS:g} ms = paced phases: the share of readings over "
        "the p99 target when the server published them (its `rnnstream_latency_seconds` "
        "histogram, from `ts`) and when the subscriber had them: the part of the tail that "
        "arose before publication and the part added in delivery",
        *(
            [
                f"- max = the median of {settings.max_runs} flat-out runs (readings/s of each: "
                + "; ".join(
                    f"{r.engine} {r.messages} " + ", ".join(f"{x:,.0f}" for x in r.flat_out_runs)
                    for r in results
                    if r.flat_out_runs
                )
                + "); load phases given as a percentage offer that fraction of it"
            ]
            if settings.max_runs
            else []
        ),
        "",
        "| engine | messages | load | offered /s | delivered | all delivered | readings/s | "
        "p50 ms | p99 ms | p99.9 ms | CPU server | CPU producers | CPU subscriber | "
        "mean batch | step | host steal | sent late | "
        f"over {TARGET_P99_MS:g} ms published / received | target | met |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        "---|",
    ]
    for r in results:
        target, met = _target(r)
        cpu = [
            f"{r.cpu[k]:.2f}" if k in r.cpu else "-" for k in ("server", "producers", "subscriber")
        ]
        lines.append(
            "| "
            + " | ".join(
                [
                    r.engine,
                    r.messages,
                    r.load,
                    "flat out" if r.offered == 0 else f"{r.offered:,.0f}",
                    f"{r.delivered:,}/{r.sent:,}",
                    "yes" if r.complete else "**NO**",
                    f"{r.throughput:,.0f}",
                    _fmt_ms(r.p50_ms),
                    _fmt_ms(r.p99_ms),
                    _fmt_ms(r.p999_ms),
                    *cpu,
                    "-" if r.mean_batch is None else f"{r.mean_batch:.1f}",
                    "-" if r.step_share is None else f"{r.step_share:.0%}",
                    "-" if r.host_steal is None else f"{r.host_steal:.1%}",
                    _fmt_late(r),
                    _fmt_over(r),
                    target,
                    met,
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=10_000, help="number of streams")
    parser.add_argument("--producers", type=int, default=1, help="producer processes")
    parser.add_argument(
        "--single-readings",
        type=int,
        default=1_000_000,
        help="readings sent flat out as single-reading messages",
    )
    parser.add_argument(
        "--batch-readings",
        type=int,
        default=3_000_000,
        help="readings sent flat out as columnar batches",
    )
    parser.add_argument(
        "--baseline-readings",
        type=int,
        default=100_000,
        help="readings sent flat out to the torch baseline",
    )
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per columnar message")
    parser.add_argument(
        "--latency-seconds", type=float, default=4.0, help="duration of each latency phase"
    )
    parser.add_argument(
        "--loads",
        default="0.25,0.5,0.9",
        help="comma-separated fractions of the measured maximum for the latency phases",
    )
    parser.add_argument(
        "--baseline",
        choices=("auto", "on", "off"),
        default="auto",
        help="measure the pyzmq + torch.nn.LSTMCell loop (auto: when torch is installed)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=15.0,
        help="a phase fails when no prediction arrives for this many seconds",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=3,
        help="flat-out runs per message kind; the median one is the maximum the loads refer to "
        "(0: none, with --single-rates / --batch-rates)",
    )
    parser.add_argument(
        "--single-rates",
        default="",
        help="comma-separated readings/s for the single-message latency phases (rnnstream and "
        "the torch loop) instead of --loads fractions of the run's maximum: runs of different "
        "code or settings then compare at the same offered load",
    )
    parser.add_argument(
        "--batch-rates",
        default="",
        help="the same for the columnar batch latency phases",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: 30,000 single / 300,000 batch / 20,000 baseline readings, 1 s phases, "
        "one flat-out run",
    )
    parser.add_argument(
        "--serve-args",
        default="",
        help="extra options for rnnstream serve, e.g. '--max-wait-us 0' (shown in the report)",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=5.0,
        help="first spin this long on every core and report the gaps the machine itself makes "
        "(engine/bench/stalls.py; 0: skip)",
    )
    parser.add_argument(
        "--generator-nice",
        type=int,
        default=5,
        help="how much nicer than the daemon the producer and subscriber processes run (they "
        "stand in for other machines: the daemon comes first when all want the cores; 0: equal)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="tcp",
        help="how producers and subscriber reach the server and the torch loop: loopback TCP, "
        "as clients on other machines would, or ipc:// socket files in the run's directory",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the options and return the run's settings."""
    from engine.cli import UserError

    loads = _numbers(args.loads, "--loads")
    if not all(0 < x <= 1 for x in loads):
        raise UserError("--loads must be fractions in (0, 1]")
    single_rates = _numbers(args.single_rates, "--single-rates")
    batch_rates = _numbers(args.batch_rates, "--batch-rates")
    if not all(x > 0 for x in single_rates + batch_rates):
        raise UserError("--single-rates and --batch-rates must be positive readings/s")
    if args.max_runs == 0 and not (single_rates and batch_rates):
        raise UserError("--max-runs 0 needs --single-rates and --batch-rates (nothing to measure)")
    for name in (
        "streams",
        "producers",
        "batch_size",
        "single_readings",
        "batch_readings",
    ):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_runs < 0:
        raise UserError("--max-runs must not be negative")
    if args.stall_seconds < 0:
        raise UserError("--stall-seconds must not be negative")
    if not 0 <= args.generator_nice <= 19:
        raise UserError("--generator-nice must be 0-19 (a process may lower its own priority)")
    if args.producers > args.streams:
        raise UserError("--producers must not exceed --streams (each stream has one producer)")
    if not args.latency_seconds > 0 or not args.idle_timeout > 0:
        raise UserError("--latency-seconds and --idle-timeout must be positive")
    has_torch = importlib.util.find_spec("torch") is not None
    if args.baseline == "on" and not has_torch:
        raise UserError("--baseline on needs torch installed (pip install torch)")
    baseline = args.baseline == "on" or (args.baseline == "auto" and has_torch)
    single, batch, base, seconds, max_runs = (
        args.single_readings,
        args.batch_readings,
        args.baseline_readings,
        args.latency_seconds,
        args.max_runs,
    )
    if args.quick:
        single, batch, base, seconds, max_runs = (
            min(single, 30_000),
            min(batch, 300_000),
            min(base, 20_000),
            min(seconds, 1.0),
            min(max_runs, 1),
        )
    return Settings(
        streams=args.streams,
        producers=args.producers,
        single_readings=single,
        batch_readings=batch,
        baseline_readings=max(base, 1),
        batch_size=args.batch_size,
        latency_seconds=seconds,
        loads=loads,
        hidden=64,
        inputs=8,
        outputs=8,
        idle_timeout=args.idle_timeout,
        baseline=baseline,
        serve_args=tuple(shlex.split(args.serve_args)),
        max_runs=max_runs,
        single_rates=single_rates,
        batch_rates=batch_rates,
        stall_seconds=args.stall_seconds,
        generator_nice=args.generator_nice,
        transport=args.transport,
    )


def _numbers(text: str, option: str) -> tuple[float, ...]:
    from engine.cli import UserError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    command = shlex.join(["rnnstream", "bench", "e2e", *_argv_after("e2e")])
    machine = machine_description()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    stalls = stall_measure(settings.stall_seconds) if settings.stall_seconds else None
    with tempfile.TemporaryDirectory(prefix="rnnstream-e2e-") as tmp:
        try:
            results = run_benchmark(settings, Path(tmp), say=lambda s: print(s, file=sys.stderr))
        except RuntimeError as exc:
            print(f"rnnstream bench e2e: FAILED: {exc}", file=sys.stderr)
            return 1
    report = markdown_report(results, settings, command, machine, date, stalls)
    sys.stdout.write(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    lost = [r for r in results if not r.complete]
    for r in lost:
        print(
            f"rnnstream bench e2e: FAILED: {r.engine} {r.messages} {r.load}: "
            f"{r.delivered:,} of {r.sent:,} predictions delivered",
            file=sys.stderr,
        )
    return 1 if lost else 0


def _argv_after(word: str) -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index(word) + 1 :] if word in argv else argv


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(
        prog="rnnstream bench e2e", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
