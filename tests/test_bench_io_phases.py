"""The load generator's jitted send phase (`bench.io_phases`, driven by bench_e2e's
`SingleReadingLoad`) on real ZeroMQ sockets: what it sends, when, and how late it says it was.

Timing here is only ever checked from below (nothing leaves before it is due) or on a schedule
set in the past (every reading is late by construction), so a slow machine cannot fail it.
"""

from __future__ import annotations

import signal
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from engine import protocol
from engine.bench import io_phases
from engine.bench.e2e import LATE_S, Pacing, SingleReadingLoad

STREAMS = ["pump-1", "pump-2", "ç" * 30]
POOL = (np.arange(16 * 4, dtype=np.float32).reshape(16, 4) - 20) / 3


@pytest.fixture
def pull_and_load():
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = 10_000  # a missing reading fails the test instead of hanging it
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    load = SingleReadingLoad(context, f"tcp://127.0.0.1:{port}", STREAMS, POOL)
    yield pull, load
    load.close()
    pull.close(linger=0)
    context.term()


def expected_frame(i: int, seq: int, ts: float, first: int = 0) -> bytes:
    values = [float(v) for v in POOL[(first + i) % len(POOL)]]
    return protocol.encode_reading(STREAMS[i % len(STREAMS)], values, seq=seq, ts=ts)


def test_wall_clock_is_time_time():
    timespec = np.zeros(2, np.int64)
    before = time.time()
    now = io_phases.wall_clock(timespec)
    after = time.time()
    assert before - 1e-6 <= now <= after + 1e-6


def test_readings_late_counts_those_due_over_late_s_before_the_send():
    # reading k due at 100 s + k ms; sent at 100.0105 s, readings 0-9 were due 1 ms before
    assert io_phases.readings_late(100.0105, 100.0, 1000.0, 1e-3, 0, 20) == 10
    assert io_phases.readings_late(100.0105, 100.0, 1000.0, 1e-3, 4, 20) == 6
    assert io_phases.readings_late(100.0205, 100.0, 1000.0, 1e-3, 20, 21) == 0  # 0.5 ms after
    assert io_phases.readings_late(99.0, 100.0, 1000.0, 1e-3, 0, 5) == 0  # before the start


def test_paced_readings_leave_no_earlier_than_due_and_as_encode_reading_packs_them(
    pull_and_load,
):
    pull, load = pull_and_load
    n, rate = 40, 2000.0  # 20 ms of readings
    pacing = Pacing(time.time() + 0.05, rate)
    seq_sum = load.send_paced(n, pacing)
    frames = [pull.recv() for _ in range(n)]
    seqs = [1 + i // len(STREAMS) for i in range(n)]
    assert seq_sum == sum(seqs)
    for i, frame in enumerate(frames):
        ts = msgpack.unpackb(frame)["ts"]
        assert ts >= pacing.start_at + i / rate - 1e-6  # stamped when sent, never before due
        assert frame == expected_frame(i, seqs[i], ts)
    assert 0 <= pacing.late <= n
    assert pacing.max_lag >= 0.0


def test_a_schedule_already_past_sends_everything_at_once_and_counts_it_late(pull_and_load):
    pull, load = pull_and_load
    started = time.time()
    pacing = Pacing(started - 1.0, 1000.0)  # readings 0-999 were due up to a second ago
    load.send_paced(10, pacing)
    frames = [pull.recv() for _ in range(10)]
    assert pacing.late == 10
    assert 1.0 <= pacing.max_lag < 1.0 + (time.time() - started)
    assert [msgpack.unpackb(f)["seq"] for f in frames] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert LATE_S < 1.0


def test_phases_continue_each_stream_seq_and_the_pool(pull_and_load):
    pull, load = pull_and_load
    first = load.send(4, 0)
    second = load.send_paced(3, Pacing(time.time(), 1e6), first=4)
    frames = [pull.recv() for _ in range(7)]
    seqs = [1, 1, 1, 2, 2, 2, 3]
    assert (first, second) == (sum(seqs[:4]), sum(seqs[4:]))
    for i, frame in enumerate(frames):
        assert frame == expected_frame(i, seqs[i], msgpack.unpackb(frame)["ts"])


def test_a_full_socket_makes_the_sender_wait_not_drop():
    """inproc, so that nothing but the two high-water marks (the load's 100,000 and 4 here)
    holds what is sent: the sender meets EAGAIN while this thread has not begun reading, and
    must wait for room rather than drop or fail."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvhwm = 4
    pull.rcvtimeo = 10_000
    pull.bind("inproc://harness-full")
    load = SingleReadingLoad(context, "inproc://harness-full", STREAMS, POOL)
    n = load.socket.sndhwm + 1_000
    result: list[int] = []
    sender = threading.Thread(target=lambda: result.append(load.send(n, 0)))
    try:
        sender.start()
        time.sleep(0.3)  # the sender fills both queues meanwhile
        assert sender.is_alive()  # n readings do not fit: it waits
        seqs = np.array([msgpack.unpackb(pull.recv())["seq"] for _ in range(n)])
        sender.join(10)
        assert not sender.is_alive()
    finally:
        load.close()
        pull.close(linger=0)
        context.term()
    want = 1 + np.arange(n) // len(STREAMS)
    assert result == [int(want.sum())]
    assert np.array_equal(seqs, want)


# --------------------------------------------------------------------------- the subscriber


@pytest.fixture
def push_pull():
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def predictions(streams: list[str], first_seq: int, ts: float) -> list[tuple[bytes, bytes]]:
    n = len(streams)
    seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
    out = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return list(protocol.prediction_messages(streams, seqs, np.full(n, ts), out, None))


def test_the_subscriber_counts_predictions_and_batches_and_skips_errors_and_probes(push_pull):
    from engine.bench.e2e import PROBE_STREAM, _receive_phase

    push, pull = push_pull
    sent_at = time.time()
    rejection = protocol.Rejection(protocol.RejectReason.NOT_MSGPACK, "bad", None)
    batch = protocol.encode_prediction_batch(
        ["b-1", "b-2"], [7, 8], [sent_at, sent_at], np.zeros((2, 2), np.float32), None
    )
    messages = (
        predictions(["a"] * 5, 1, sent_at)
        + [(protocol.ERROR_TOPIC, protocol.encode_error(rejection))]
        + predictions(["a"] * 3, 6, sent_at)
        + predictions([PROBE_STREAM], 1, sent_at)
        + [(protocol.BATCH_TOPIC, batch)]
        + predictions(["a"] * 2, 9, sent_at)
    )
    for message in messages:
        push.send_multipart(message)
    got = _receive_phase(pull, 12, 5.0, msgpack.unpackb)
    assert got["count"] == 12 and got["errors"] == 1
    assert got["seq_sum"] == sum(range(1, 11)) + 7 + 8
    assert sent_at <= got["first"] <= got["last"] <= time.time()
    assert got["latency"].shape == (12,)
    assert np.all(got["latency"] >= 0) and np.all(got["latency"] <= got["last"] - sent_at)


def test_the_subscriber_stops_after_the_idle_timeout_with_what_came(push_pull):
    from engine.bench.e2e import _receive_phase

    push, pull = push_pull
    for message in predictions(["a", "b", "c"], 1, time.time()):
        push.send_multipart(message)
    began = time.monotonic()
    got = _receive_phase(pull, 5, 0.2, msgpack.unpackb)
    assert got["count"] == 3 and got["seq_sum"] == 6
    assert time.monotonic() - began >= 0.2
    nothing = _receive_phase(pull, 5, 0.05, msgpack.unpackb)
    assert nothing["count"] == 0 and nothing["first"] is None and nothing["last"] is None


def test_a_look_cut_between_topic_and_payload_takes_the_payload_too(push_pull):
    """Looks of 3 frames: each must end on a whole message (4 frames taken, then 2)."""
    from engine.fastpaths import zmqcalls

    push, pull = push_pull
    sent_at = time.time()
    for message in predictions(["a", "b", "c"], 1, sent_at):
        push.send_multipart(message)
    item = zmqcalls.poll_item(pull)
    buf = np.empty(4096, np.uint8)
    starts = np.zeros(8, np.int64)
    seq, ts, latency = np.empty(3, np.int64), np.empty(3), np.empty(3)
    looks = np.full(2, np.nan)
    prefix = np.frombuffer(protocol.PREDICTION_PREFIX, np.uint8)
    count, n, i = 0, 0, 0
    time.sleep(0.2)  # all three queued: the first look is cut by max_frames
    count, seq_sum, n, i, why = io_phases.receive_stamps(
        item, 2000, buf, starts, 3, 4000, n, i, prefix, np.zeros(1, np.uint8),
        seq, ts, latency, count, 3, looks, np.zeros(2, np.int64),
    )  # fmt: skip
    assert (count, seq_sum, why) == (3, 6, io_phases.EXPECTED_REACHED)
    assert seq.tolist() == [1, 2, 3] and ts.tolist() == [sent_at] * 3
    # two predictions in the first look (4 frames), the third in the second
    assert latency.tolist() == [looks[0] - sent_at] * 2 + [looks[1] - sent_at]
    assert looks[0] < looks[1]


def test_a_signal_during_the_wait_does_not_end_the_phase(push_pull):
    """SIGALRM arrives while the subscriber waits (zmq_poll fails with EINTR): its handler runs
    and the wait goes on, as with pyzmq's poll, so the predictions sent after it still count."""
    from engine.bench.e2e import _receive_phase

    push, pull = push_pull
    assert _receive_phase(pull, 1, 0.01, msgpack.unpackb)["count"] == 0  # compiled: no waiting
    alarms: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: alarms.append(signum))
    waiter = threading.get_ident()  # the signal must reach the thread in zmq_poll
    alarm = threading.Timer(0.1, signal.pthread_kill, (waiter, signal.SIGALRM))
    later = threading.Timer(
        0.4, lambda: [push.send_multipart(m) for m in predictions(["a", "b"], 1, time.time())]
    )
    try:
        alarm.start()
        later.start()
        got = _receive_phase(pull, 2, 2.0, msgpack.unpackb)
    finally:
        alarm.join()
        later.join()
        signal.signal(signal.SIGALRM, previous)
    assert alarms == [signal.SIGALRM]
    assert got["count"] == 2 and got["seq_sum"] == 3
