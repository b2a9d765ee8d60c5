"""The daemon's cheaper publication paths send what the plain ones do; seqs live with streams.

These run the daemon's methods in-process on a recording publisher (through pyzmq's calls, as
`socket_io` does where libzmq cannot be called directly); the end-to-end behaviour over real
sockets is covered by tests/test_daemon.py, and the direct calls by tests/test_socket_io.py.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import zmq

from engine import daemon as daemon_module
from engine import protocol as P
from engine.config import ServeConfig
from engine.daemon import Daemon
from engine.default_model import load_default_model
from engine.model import Model
from engine.protocol import Readings
from engine.socket_io import FrameReceiver, MessageSender
from engine.stream import StreamEngine


class RecordingSocket:
    """Collect what the daemon sends as whole multipart messages."""

    def __init__(self) -> None:
        self.messages: list[list[bytes]] = []
        self._parts: list[bytes] = []

    def send(self, data: bytes, flags: int = 0) -> None:
        self._parts.append(bytes(data))
        if not flags & zmq.SNDMORE:
            self.messages.append(self._parts)
            self._parts = []

    def send_multipart(self, parts: list[bytes]) -> None:
        self.messages.append([bytes(p) for p in parts])


def in_process_daemon(tmp_path, model: Model, publish_mode: str, **settings) -> Daemon:
    config = ServeConfig(
        state_dir=str(tmp_path), publish_mode=publish_mode, checkpoint_every=0, **settings
    )
    daemon = Daemon(config, logging.getLogger("test"))
    daemon.model = model
    daemon.engine = StreamEngine(model)
    daemon.publisher = RecordingSocket()
    daemon.predictions = MessageSender(daemon.publisher, direct=False)
    return daemon


def readings(model: Model, streams: list[str], seed: int = 0) -> Readings:
    rng = np.random.default_rng(seed)
    n = len(streams)
    return Readings(
        list(streams),
        rng.standard_normal((n, model.input_size)).astype(np.float32),
        np.array([i + 2 if i % 3 else P.NO_SEQ for i in range(n)], np.int64),
        np.array([1.7e9 + i if i % 4 else np.nan for i in range(n)]),
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
    )


def expected_predictions(batch: Readings, result) -> list[list[bytes]]:
    """One `[topic, payload]` per row, built with the per-row encoder."""
    return [
        [
            P.prediction_topic(batch.streams[i]),
            P.encode_prediction(
                batch.streams[i],
                batch.seq_of(i),
                batch.ts_of(i),
                result.outputs[i].tolist(),
                None if result.scores is None else result.scores[i],
            ),
        ]
        for i in range(len(batch))
    ]


@pytest.mark.parametrize("scoring", [False, True])
def test_each_publication_sends_one_topic_and_payload_per_reading_as_encode_prediction_does(
    tmp_path, scoring
):
    model = load_default_model() if scoring else Model.random("lstm", 3, 8, output_size=2)
    daemon = in_process_daemon(tmp_path, model, "each")
    # A stream listed twice, so its two predictions must come out in row order.
    batch = readings(model, ["a", "b", "é", "a", "c"])
    result = daemon.engine.process(batch.streams, batch.values, batch.ts)
    daemon._publish(batch, result)
    preds = [m for m in daemon.publisher.messages if m[0].startswith(P.PREDICTION_PREFIX)]
    assert preds == expected_predictions(batch, result)
    assert daemon.metrics.predictions_out == 5 and daemon.metrics.readings_in == 5


def test_both_publication_sends_the_rows_then_one_batch_message(tmp_path):
    model = Model.random("gru", 2, 8, output_size=3)
    daemon = in_process_daemon(tmp_path, model, "both")
    batch = readings(model, ["x", "y", "z"])
    result = daemon.engine.process(batch.streams, batch.values, batch.ts)
    daemon._publish(batch, result)
    messages = daemon.publisher.messages
    assert messages[:3] == expected_predictions(batch, result)
    assert messages[3] == [
        P.BATCH_TOPIC,
        P.encode_prediction_batch(batch.streams, batch.seq, batch.ts, result.outputs, None),
    ]
    assert len(messages) == 4


def test_a_streams_last_seq_lives_and_goes_with_its_state(tmp_path):
    # A daemon runs for weeks with a churn of stream ids: what it remembers of seqs must be
    # bounded by the live streams, so it lives in their slots and leaves with them.
    model = Model.random("gru", 2, 4, seed=0)
    daemon = in_process_daemon(tmp_path, model, "batch")
    daemon.engine = StreamEngine(model, max_streams=100)
    rng = np.random.default_rng(0)

    def send(streams: list[str], seq: int) -> None:
        n = len(streams)
        X = rng.standard_normal((n, model.input_size)).astype(np.float32)
        seqs = np.full(n, seq, np.int64)
        daemon._process(Readings(streams, X, seqs, np.full(n, np.nan), *[np.zeros(n, bool)] * 2))

    for k in range(15):
        send([f"s{k}-{i}" for i in range(100)], 5)
    assert len(daemon.engine) == 100 and daemon.engine.stats()["capacity"] == 100
    assert daemon.metrics.duplicates == 0
    send(["s14-0"], 5)  # live: 5 again is a duplicate
    assert daemon.metrics.duplicates == 1
    send(["s0-0"], 5)  # evicted long ago: starts afresh, so 5 is served
    assert daemon.metrics.duplicates == 1
    assert daemon.metrics.predictions_out == 1501


@pytest.mark.parametrize(("max_wait_us", "rows"), [(0, 1), (100_000, 2)])
def test_a_busy_daemon_waits_max_wait_us_for_more_readings_only_when_told(
    tmp_path, max_wait_us, rows
):
    model = Model.random("gru", 2, 4, seed=0)
    daemon = in_process_daemon(tmp_path, model, "each", max_wait_us=max_wait_us)
    ctx = zmq.Context()
    daemon.ingest = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        port = daemon.ingest.bind_to_random_port("tcp://127.0.0.1")
        daemon.intake = FrameReceiver(daemon.ingest, daemon.config.max_message_bytes)
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(P.encode_reading("a", [1.0, 2.0], seq=1))
        assert daemon.ingest.poll(5000)
        daemon._busy = True  # the previous pass found several readings
        later = threading.Timer(0.01, push.send, [P.encode_reading("b", [1.0, 2.0], seq=1)])
        later.start()
        assert daemon._intake_pass() == rows
        later.join()
    finally:
        push.close(linger=0)
        daemon.ingest.close(linger=0)
        ctx.term()


def test_a_pass_over_the_engine_call_size_finds_known_streams_by_their_ids(tmp_path, monkeypatch):
    model = Model.random("lstm", 3, 8, output_size=2)
    daemon = in_process_daemon(tmp_path, model, "batch")
    streams = [f"pump-{i}" for i in range(1000)]
    frames = [P.encode_batch(streams, np.ones((1000, 3)), seq=[k + 1] * 1000) for k in range(6)]
    passes = [P.decode_frames(*P._laid_out(frames[:1]), 3)[0]]  # admits the streams
    passes.append(P.decode_frames(*P._laid_out(frames[1:]), 3)[0])
    assert len(passes[1]) > daemon_module._ENGINE_ROWS and passes[1].ids is not None
    daemon._process(passes[0])

    def by_strings(*_args):
        raise AssertionError("known streams were looked up by their strings")

    monkeypatch.setattr(StreamEngine, "_slots_admitting", by_strings)
    daemon._process(passes[1])
    assert daemon.metrics.predictions_out == 6000 and daemon.metrics.duplicates == 0


@pytest.mark.parametrize("scoring", [False, True])
def test_a_pass_whose_ends_shrink_the_slabs_publishes_what_a_daemon_that_never_shrinks_does(
    tmp_path, scoring
):
    # Streams that end mid-pass shrink the slabs, which renumbers every slot; the rows after
    # them in the same pass are found by their ids in the rebuilt index.
    model = load_default_model() if scoring else Model.random("lstm", 3, 8, output_size=2)
    n_in = model.input_size
    daemons = []
    for name, capacity in (("shrinks", 8), ("never", 4096)):
        daemon = in_process_daemon(tmp_path / name, model, "each")
        daemon.engine = StreamEngine(model, capacity=capacity)
        daemons.append(daemon)
    streams = [f"pump-{i}" for i in range(300)]
    rng = np.random.default_rng(1)
    first = P.encode_batch(streams, rng.standard_normal((300, n_in)), seq=[1] * 300)
    frames = [first]
    for i, stream in enumerate(streams):
        frames.append(P.encode_reading(stream, rng.standard_normal(n_in), end=i % 20 > 0))
        if i % 7 == 0:  # the survivors, mid-pass
            frames.append(P.encode_batch(streams[:200:20], np.ones((10, n_in)), seq=[3 + i] * 10))
    passes = [P.decode_frames(*P._laid_out(part), n_in)[0] for part in (frames[:1], frames[1:])]
    assert passes[1].ids is not None
    for daemon in daemons:
        for batch in passes:
            daemon._process(batch)

    shrinks, never = daemons
    assert shrinks.engine.stats()["capacity"] < 64 <= never.engine.stats()["capacity"]
    assert shrinks.engine.streams() == never.engine.streams() == streams[::20]
    assert shrinks.publisher.messages == never.publisher.messages
    assert shrinks.metrics.rejects == never.metrics.rejects == {}
