"""The daemon's cheaper publication and timestamp paths send and compute what the plain ones do.

These run the daemon's methods in-process on a fake publisher; the end-to-end behaviour over real
sockets is covered by tests/test_daemon.py.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import zmq

from engine import protocol as P
from engine.config import ServeConfig
from engine.daemon import Daemon, _fast_send, _stamps
from engine.default_model import load_default_model
from engine.model import Model
from engine.protocol import Readings
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


def in_process_daemon(tmp_path, model: Model, publish_mode: str) -> Daemon:
    config = ServeConfig(state_dir=str(tmp_path), publish_mode=publish_mode, checkpoint_every=0)
    daemon = Daemon(config, logging.getLogger("test"))
    daemon.model = model
    daemon.engine = StreamEngine(model)
    daemon.publisher = RecordingSocket()
    return daemon


def readings(model: Model, streams: list[str], seed: int = 0) -> Readings:
    rng = np.random.default_rng(seed)
    n = len(streams)
    return Readings(
        list(streams),
        rng.standard_normal((n, model.input_size)).astype(np.float32),
        [i + 2 if i % 3 else None for i in range(n)],
        [1.7e9 + i if i % 4 else None for i in range(n)],
        [False] * n,
        [False] * n,
    )


def expected_predictions(batch: Readings, result) -> list[list[bytes]]:
    """One `[topic, payload]` per row, built with the per-row encoder."""
    return [
        [
            P.prediction_topic(batch.streams[i]),
            P.encode_prediction(
                batch.streams[i],
                batch.seq[i],
                batch.ts[i],
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
    stamps = _stamps(batch.ts)
    result = daemon.engine.process(batch.streams, batch.values, stamps)
    daemon._publish(batch, result, stamps)
    preds = [m for m in daemon.publisher.messages if m[0].startswith(P.PREDICTION_PREFIX)]
    assert preds == expected_predictions(batch, result)
    assert daemon.metrics.predictions_out == 5 and daemon.metrics.readings_in == 5


def test_both_publication_sends_the_rows_then_one_batch_message(tmp_path):
    model = Model.random("gru", 2, 8, output_size=3)
    daemon = in_process_daemon(tmp_path, model, "both")
    batch = readings(model, ["x", "y", "z"])
    stamps = _stamps(batch.ts)
    result = daemon.engine.process(batch.streams, batch.values, stamps)
    daemon._publish(batch, result, stamps)
    messages = daemon.publisher.messages
    assert messages[:3] == expected_predictions(batch, result)
    assert messages[3] == [
        P.BATCH_TOPIC,
        P.encode_prediction_batch(batch.streams, batch.seq, batch.ts, result.outputs, None),
    ]
    assert len(messages) == 4


def test_fast_send_delivers_multipart_messages_on_a_real_socket():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        pull.rcvtimeo = 5000
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        send = _fast_send(push)
        assert send.__func__ is zmq.backend.Socket.send
        send(b"pred.a", zmq.SNDMORE)
        send(b"payload")
        assert pull.recv_multipart() == [b"pred.a", b"payload"]
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def test_fast_send_of_something_else_is_its_own_send():
    sock = RecordingSocket()
    assert _fast_send(sock) == sock.send


def test_stamps_are_float64_with_nan_where_no_ts_was_given():
    ts = [1.5, None, 1_700_000_000.25, None, -3.0]
    got = _stamps(ts)
    assert got.dtype == np.float64
    assert [None if math.isnan(v) else v for v in got.tolist()] == ts
    assert _stamps([]).shape == (0,)
    assert np.isnan(_stamps([None, None])).all()


def test_seq_table_is_pruned_to_live_streams_when_evictions_leave_it_too_large(tmp_path):
    from engine.daemon import _SEQ_SLACK

    model = Model.random("gru", 2, 4, seed=0)
    daemon = in_process_daemon(tmp_path, model, "batch")
    daemon.engine = StreamEngine(model, max_streams=100)
    rng = np.random.default_rng(0)
    for k in range(-(-(_SEQ_SLACK + 400) // 100)):
        streams = [f"s{k}-{i}" for i in range(100)]
        X = rng.standard_normal((100, model.input_size)).astype(np.float32)
        daemon._process(Readings(streams, X, [5] * 100, [None] * 100, [False] * 100, [False] * 100))
    assert len(daemon.engine) == 100 and len(daemon._last_seq) > 2 * 100 + _SEQ_SLACK
    live = dict(daemon._last_seq)
    daemon._forget_departed_streams()
    assert daemon._last_seq == {s: q for s, q in live.items() if s in daemon.engine}
    assert len(daemon._last_seq) == 100
    # a live stream's next reading is still checked against its last seq: 5 again is a duplicate
    stream = daemon.engine.streams()[0]
    X = np.zeros((1, model.input_size), np.float32)
    daemon._process(Readings([stream], X, [5], [None], [False], [False]))
    assert daemon.metrics.duplicates == 1
