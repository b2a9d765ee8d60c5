"""`socket_io` moves a pass's frames in one call: the same frames as pyzmq's calls, on real
sockets over loopback, through libzmq directly (the daemon's way on Linux) and through pyzmq."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import zmq

from engine import socket_io
from engine.protocol import split_frames
from engine.socket_io import (
    FrameReceiver,
    MessageSender,
    context_with_batch_io_threads,
    direct_send,
)

MAX_FRAME = 100_000


@pytest.fixture
def pair():
    """A connected PUSH -> PULL pair on loopback tcp."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    pull.rcvtimeo = 5000
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()


def wait_for(sock: zmq.Socket) -> None:
    assert sock.poll(5000), "nothing arrived within 5 s"
    time.sleep(0.05)  # let the rest of what was sent arrive too


def received(receiver: FrameReceiver, n: int) -> list[bytes]:
    return split_frames(*receiver.frames(n))


def test_libzmq_is_called_directly_here():
    # The daemon's fast path must be the one these tests (and bench e2e) exercise on Linux.
    assert socket_io._zmqcalls() is not None


@pytest.mark.parametrize("direct", [True, False])
def test_frames_arrive_whole_and_in_order(pair, direct):
    push, pull = pair
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5000, 60)
    frames = [b"", b"a", *(rng.bytes(int(k)) for k in sizes), rng.bytes(MAX_FRAME)]
    for frame in frames:
        push.send(frame)
    receiver = FrameReceiver(pull, MAX_FRAME, direct=direct)
    assert receiver.direct is direct
    wait_for(pull)
    n = receiver.receive(1000)
    assert received(receiver, n) == frames
    assert receiver.receive(1000) == 0  # nothing left: no wait, no error


@pytest.mark.parametrize("direct", [True, False])
def test_a_pass_stops_at_max_frames_and_goes_on_from_there(pair, direct):
    push, pull = pair
    frames = [f"frame {i}".encode() for i in range(10)]
    for frame in frames:
        push.send(frame)
    receiver = FrameReceiver(pull, MAX_FRAME, direct=direct)
    wait_for(pull)
    assert receiver.receive(4) == 4
    assert receiver.receive(7, first=4) == 7
    assert received(receiver, 7) == frames[:7]
    assert receiver.receive(100) == 3
    assert received(receiver, 3) == frames[7:]


@pytest.mark.parametrize("direct", [True, False])
def test_a_pass_stops_once_its_byte_budget_is_used(pair, direct):
    push, pull = pair
    receiver = FrameReceiver(pull, MAX_FRAME, budget_bytes=1000, direct=direct)
    frames = [bytes([i]) * 300 for i in range(6)]
    for frame in frames:
        push.send(frame)
    wait_for(pull)
    assert receiver.receive(100) == 4  # 1200 bytes: the fourth frame crossed the budget
    assert received(receiver, 4) == frames[:4]
    assert receiver.receive(100) == 2


@pytest.mark.parametrize("direct", [True, False])
def test_a_frame_over_the_limit_comes_cut_but_still_over_it(pair, direct):
    # The daemon sets MAXMSGSIZE, so such a frame does not get through tcp or ipc; if one ever
    # did, what arrives is still over the limit, and the decoder rejects it as oversized.
    push, pull = pair
    receiver = FrameReceiver(pull, 100, budget_bytes=10, direct=direct)
    push.send(b"x" * 5000)
    push.send(b"next")
    wait_for(pull)
    assert receiver.receive(100) == 1
    [cut] = received(receiver, 1)
    assert 100 < len(cut) < 5000 and cut == b"x" * len(cut)
    assert receiver.receive(100) == 1
    assert received(receiver, 1) == [b"next"]


@pytest.mark.parametrize("direct", [True, False])
def test_messages_go_out_as_topic_and_payload_pairs(pair, direct):
    push, pull = pair
    sender = MessageSender(push, direct=direct)
    assert sender.direct is direct
    messages = [(f"pred.s{i}".encode(), bytes([i % 256]) * (i * 7)) for i in range(50)]
    parts = [p for message in messages for p in message]
    bounds = np.cumsum([0, *map(len, parts)]).astype(np.int64)
    sender.send_messages(np.frombuffer(b"".join(parts), np.uint8), bounds)
    sender.send_messages(np.empty(0, np.uint8), np.zeros(1, np.int64))  # nothing to send
    got = [tuple(pull.recv_multipart()) for _ in messages]
    assert got == messages
    assert not pull.poll(100)


@pytest.mark.parametrize("direct", [True, False])
def test_a_queueing_socket_stops_at_its_high_water_mark_without_blocking(direct):
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.sndhwm = pull.rcvhwm = 10
    pull.rcvtimeo = 5000
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        sender = MessageSender(push, direct=direct)
        # 8 MB: far past both HWMs and what the kernel's socket buffers hold
        messages = [(b"pred.s", i.to_bytes(4, "little") * 1000) for i in range(2000)]
        parts = [p for message in messages for p in message]
        bounds = np.cumsum([0, *map(len, parts)]).astype(np.int64)
        sent = sender.send_messages(np.frombuffer(b"".join(parts), np.uint8), bounds)
        assert 0 < sent < len(messages)
        got = [tuple(pull.recv_multipart()) for _ in range(sent)]
        assert got == messages[:sent]
        assert not pull.poll(200)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def zmq_io_threads() -> set[int]:
    tids = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as comm:
            if comm.read().startswith("ZMQbg/IO/"):
                tids.add(int(tid))
    return tids


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
def test_the_io_threads_of_such_a_context_are_sched_batch():
    before = zmq_io_threads()  # other tests' contexts may still be alive
    ctx = context_with_batch_io_threads()
    sock = ctx.socket(zmq.PUB)  # libzmq starts its threads with the first socket
    try:
        # a new thread names itself once running: look until it has (CI saw it not yet named)
        deadline = time.monotonic() + 5
        while not (started := zmq_io_threads() - before) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started and {os.sched_getscheduler(tid) for tid in started} == {os.SCHED_BATCH}
    finally:
        sock.close(linger=0)
        ctx.term()


def test_direct_send_sends_multipart_messages(pair):
    push, pull = pair
    send = direct_send(push)
    assert send.__func__ is zmq.backend.Socket.send
    send(b"pred.a", zmq.SNDMORE)
    send(b"payload")
    assert pull.recv_multipart() == [b"pred.a", b"payload"]


def test_direct_send_of_something_else_is_its_own_send():
    class Recorder:
        def send(self, data: bytes, flags: int = 0) -> None:
            pass

    recorder = Recorder()
    assert direct_send(recorder) == recorder.send


WARM_PASS = """
import numpy as np, zmq
from engine import protocol as P
from engine.fastpaths import idindex, wire, zmqcalls
from engine.kernels import counting
from engine.metrics import Metrics
from engine.model import Model
from engine.socket_io import FrameReceiver, MessageSender
from engine.stream import StreamEngine

kernels = [wire.parse_readings, wire.pack_predictions, wire.pack_seq_array, wire.pack_ts_array,
           wire.pack_str_array, zmqcalls.recv_frames, zmqcalls.send_messages, idindex.find_slots,
           idindex.insert_slots, idindex.remove_slots, counting.add_latencies]
ctx = zmq.Context()
pull, push, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PUB)
port = pull.bind_to_random_port("tcp://127.0.0.1")
push.connect(f"tcp://127.0.0.1:{port}")
pub.bind("tcp://127.0.0.1:0")
# What Daemon.start does before it says ready:
P.compile_jitted_paths(3)
receiver, sender = FrameReceiver(pull, 1 << 20), MessageSender(pub)
engine, metrics = StreamEngine(Model.random("lstm", 3, 4, output_size=2, seed=0)), Metrics()
compiled = [len(k.signatures) for k in kernels]
# A daemon pass of single readings and a batch, published both ways:
push.send(P.encode_reading("a", [1.0, 2.0, 3.0], seq=1, ts=1.5))
push.send(P.encode_batch(["b", "c"], np.ones((2, 3), np.float32), seq=[1, 1], ts=2.5))
assert pull.poll(5000)
import time; time.sleep(0.2)
n = receiver.receive(100)
readings, rejections = P.decode_frames(*receiver.frames(n), 3)
assert len(readings) == 3 and not rejections
assert readings.ids is not None
for step in range(2):  # admitting the streams, then finding them by their ids
    outputs = engine.process(readings.streams, readings.values, readings.ts,
                             readings.seq + step, ids=readings.ids).outputs
metrics.observe_latencies(readings.ts)
for scores in (None, np.array([0.5, np.nan, 1.0])):
    sender.send_messages(*P.pack_prediction_messages(
        readings.streams, readings.seq, readings.ts, outputs, scores, ids=readings.ids))
    P.encode_prediction_batch(readings.streams, readings.seq, readings.ts, outputs, scores,
                              readings.ids)
print([len(k.signatures) for k in kernels] == compiled, compiled,
      [len(k.signatures) for k in kernels])
"""


def test_a_daemon_pass_compiles_nothing_after_the_warm_up():
    # A fresh interpreter, so what earlier tests compiled does not count: with a cold cache a
    # kernel compiled on the first readings costs seconds after "ready" (a read-only buffer
    # once made parse_readings compile again, and control requests timed out meanwhile).
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WARM_PASS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True"), done.stdout
