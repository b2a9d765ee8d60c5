"""`rnnstream serve` end to end: a real daemon process, real sockets, real clients.

One daemon serves the whole module (tests use their own stream ids, and compare counters as
differences); tests that change the model or may crash the daemon start their own.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from daemon_harness import (
    RECV_TIMEOUT,
    DaemonProcess,
    pack,
    predictions_by_stream,
    recv_until,
    reference_outputs,
    save_model,
    scrape,
)
from prometheus_client.parser import text_string_to_metric_families
from zmq.utils.monitor import recv_monitor_message

import engine
from engine import protocol
from engine.model import Model
from engine.stream import StreamEngine

N_IN = 3
N_OUT = 2
MAX_MESSAGE_BYTES = 8192


def make_model(seed: int = 3, hidden: int = 8) -> Model:
    return Model.random("lstm", N_IN, hidden, num_layers=2, output_size=N_OUT, seed=seed)


@pytest.fixture(scope="module")
def model() -> Model:
    return make_model()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("daemon")
    proc = DaemonProcess(
        save_model(model, folder),
        folder / "state",
        args=[
            "--max-message-bytes",
            str(MAX_MESSAGE_BYTES),
            "--checkpoint-every",
            "0",
        ],
        metrics=True,
    )
    with proc.start():
        yield proc


@pytest.fixture(scope="module")
def batch_daemon(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("batch-daemon")
    proc = DaemonProcess(
        save_model(model, folder),
        folder / "state",
        args=["--publish-mode", "batch", "--checkpoint-every", "0"],
    )
    with proc.start():
        yield proc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def reading(stream: object, values: object, **fields: object) -> bytes:
    return pack({"stream": stream, "values": values, **fields})


def kinds(items: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [payload for k, payload in items if k == kind]


def assert_predictions(got: list[dict], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    np.testing.assert_allclose(
        np.array([p["prediction"] for p in got], np.float64),
        np.array(expected, np.float64),
        rtol=0,
        atol=1e-5,
    )


def reject_delta(before: dict, after: dict) -> Counter:
    delta = Counter(after["rejects"])
    delta.subtract(before["rejects"])
    return +delta


# ----------------------------------------------------------------------------- round trips


def test_interleaved_singles_and_batches_round_trip_like_the_in_process_engine(daemon, model):
    rng = np.random.default_rng(1)
    streams = [unique("rt-a"), unique("rt-b"), unique("rt-c"), unique("rt-é")]
    next_seq = Counter()
    sent: list[tuple[str, np.ndarray, int, float]] = []  # arrival order

    def rows(n: int) -> tuple[list[str], np.ndarray, list[int], list[float]]:
        names = [streams[i] for i in rng.integers(0, len(streams), n)]
        X = rng.normal(0, 2, (n, N_IN)).astype(np.float32)
        seqs = []
        for s in names:
            next_seq[s] += 1
            seqs.append(next_seq[s])
        stamps = [1.7e9 + len(sent) + i + 0.25 for i in range(n)]
        sent.extend(zip(names, X, seqs, stamps, strict=True))
        return names, X, seqs, stamps

    frames = []
    for i in range(16):
        shape = i % 4
        if shape == 0:  # single reading, values as a list
            (s,), X, (q,), (t,) = rows(1)
            frames.append(reading(s, X[0].tolist(), seq=q, ts=t))
        elif shape == 1:  # single reading, values as float32 bytes
            (s,), X, (q,), (t,) = rows(1)
            frames.append(reading(s, X[0].astype("<f4").tobytes(), seq=q, ts=t))
        elif shape == 2:  # columnar batch, values as bytes (streams repeat inside)
            names, X, seqs, stamps = rows(9)
            frames.append(protocol.encode_batch(names, X, seq=seqs, ts=stamps))
        else:  # columnar batch, values as a list of rows
            names, X, seqs, stamps = rows(5)
            frames.append(pack({"streams": names, "values": X.tolist(), "seq": seqs, "ts": stamps}))
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    for frame in frames:
        push.send(frame)
    got = daemon.until_fence(sub, push)

    assert kinds(got, "error") == []
    by_stream = predictions_by_stream(got)
    assert sorted(by_stream) == sorted({s for s, *_ in sent})
    expected = reference_outputs(model, [(s, x) for s, x, _, _ in sent])
    for stream, payloads in by_stream.items():
        mine = [i for i, row in enumerate(sent) if row[0] == stream]
        assert [p["seq"] for p in payloads] == [sent[i][2] for i in mine]
        assert [p["ts"] for p in payloads] == [sent[i][3] for i in mine]
        assert all(p["stream"] == stream and p["score"] is None for p in payloads)
        assert_predictions(payloads, [expected[i] for i in mine])


def test_producer_readings_come_back_with_their_seq_and_ts(daemon, model):
    a, b = unique("prod-a"), unique("prod-b")
    sub = daemon.subscriber(("pred.",))
    producer = daemon.producer()
    X = np.arange(7 * N_IN, dtype=np.float32).reshape(7, N_IN) / 10
    producer.send(a, X[0], ts=100.0)
    producer.send(b, X[1].tolist(), ts=101.0)
    producer.send_many([a, b, a], X[2:5], ts=[102.0, 103.0, 104.0])
    producer.send_many([b, a], X[5:7], ts=105.0)
    got = predictions_by_stream(daemon.until_fence(sub, producer))

    assert [(p["seq"], p["ts"]) for p in got[a]] == [(1, 100.0), (2, 102.0), (3, 104.0), (4, 105.0)]
    assert [(p["seq"], p["ts"]) for p in got[b]] == [(1, 101.0), (2, 103.0), (3, 105.0)]
    order = [a, b, a, b, a, b, a]
    expected = reference_outputs(model, zip(order, X, strict=True))
    assert_predictions(got[a], [e for s, e in zip(order, expected, strict=True) if s == a])
    assert_predictions(got[b], [e for s, e in zip(order, expected, strict=True) if s == b])


def test_batch_publish_mode_sends_one_batch_message_per_processed_batch(batch_daemon, model):
    streams = [unique("bm-a"), unique("bm-b"), unique("bm-c")]
    rng = np.random.default_rng(2)
    sent: list[tuple[str, np.ndarray]] = []
    frames = []
    for i in range(10):
        n = 1 + i % 4
        names = [streams[j] for j in rng.integers(0, 3, n)]
        X = rng.normal(0, 1, (n, N_IN)).astype(np.float32)
        sent.extend(zip(names, X, strict=True))
        frames.append(protocol.encode_batch(names, X, ts=float(i)))
    sub = batch_daemon.subscriber(("",))  # everything: no pred.* may show up
    push = batch_daemon.push()
    before = batch_daemon.stats()
    for frame in frames:
        push.send(frame)
    fence = batch_daemon.fence(push)
    raw = recv_until(sub, lambda k, p: k == "batch" and fence in p["streams"], daemon=batch_daemon)
    after = batch_daemon.stats()

    assert {k for k, _ in raw} == {"batch"}
    processed = after["batch_size"]["count"] - before["batch_size"]["count"]
    assert len(raw) == processed
    assert 1 <= len(raw) <= len(frames) + 1
    for _, payload in raw:
        assert payload["prediction"].shape == (len(payload["streams"]), N_OUT)
        assert np.isnan(payload["score"]).all()
    got = predictions_by_stream([(k, p) for k, p in raw])
    expected = reference_outputs(model, sent)
    for stream in streams:
        mine = [i for i, (s, _) in enumerate(sent) if s == stream]
        assert [p["seq"] for p in got[stream]] == [None] * len(mine)
        assert_predictions(got[stream], [expected[i] for i in mine])
    assert sum(len(p["streams"]) for _, p in raw) == len(sent) + 1  # + the fence


def test_prefix_subscription_also_matches_longer_ids_but_exact_streams_do_not(daemon):
    tag = uuid.uuid4().hex[:6]
    short, longer, fence = f"pump-{tag}-7", f"pump-{tag}-70", f"pump-{tag}-7-fence"
    prefix_sub = daemon.subscriber((protocol.prediction_topic(short),))
    exact_sub = daemon.subscriber(("pred.",), exact_streams=[short, fence])
    push = daemon.push()
    push.send(protocol.encode_reading(short, [1.0, 2.0, 3.0]))
    push.send(protocol.encode_reading(longer, [1.0, 2.0, 3.0]))
    push.send(protocol.encode_reading(short, [3.0, 2.0, 1.0]))
    fence = daemon.fence(push, fence)
    prefix_got = recv_until(prefix_sub, lambda k, p: p["stream"] == fence, daemon=daemon)
    exact_got = recv_until(exact_sub, lambda k, p: p["stream"] == fence, daemon=daemon)

    assert [p["stream"] for _, p in prefix_got] == [short, longer, short, fence]
    assert [p["stream"] for _, p in exact_got] == [short, short, fence]
    assert exact_sub.subscriptions == sorted(protocol.prediction_topic(s) for s in (short, fence))


# ----------------------------------------------------------------------------- bad input

GOOD = [0.5, -1.0, 2.0]
MALFORMED = {
    "not_msgpack": (b"\xc1\xc1 not msgpack", "not_msgpack"),
    "empty_frame": (b"", "not_msgpack"),
    "trailing_bytes": (reading("x", GOOD) + b"\x00", "not_msgpack"),
    "ext_type": (b"\xd4\x01\x00", "not_msgpack"),
    "timestamp_ext": (reading("x", GOOD, ts=msgpack.Timestamp(1)), "not_msgpack"),
    "too_deep": (b"\x91" * 5000 + b"\xc0", "not_msgpack"),
    "not_a_map": (pack([1, 2, 3]), "not_a_map"),
    "string": (pack("stream"), "not_a_map"),
    "missing_stream": (pack({"values": GOOD}), "bad_stream"),
    "bytes_keys": (pack({b"stream": b"x", b"values": GOOD}), "bad_stream"),
    "int_stream": (reading(7, GOOD), "bad_stream"),
    "bytes_stream": (reading(b"pump", GOOD), "bad_stream"),
    "empty_stream": (reading("", GOOD), "bad_stream"),
    "id_257_bytes": (reading("x" * 257, GOOD), "stream_too_long"),
    "id_258_utf8_bytes": (reading("é" * 129, GOOD), "stream_too_long"),
    "missing_values": (pack({"stream": "x"}), "bad_values"),
    "two_values": (reading("x", [1.0, 2.0]), "wrong_length"),
    "four_values": (reading("x", [1.0, 2.0, 3.0, 4.0]), "wrong_length"),
    "string_value": (reading("x", [1.0, "2", 3.0]), "bad_values"),
    "bool_value": (reading("x", [1.0, True, 3.0]), "bad_values"),
    "nested_value": (reading("x", [1.0, [2.0], 3.0]), "bad_values"),
    "values_map": (reading("x", {"a": 1}), "bad_values"),
    "nan": (reading("x", [1.0, math.nan, 3.0]), "non_finite"),
    "inf": (reading("x", [1.0, 2.0, -math.inf]), "non_finite"),
    "beyond_float32": (reading("x", [1e39, 2.0, 3.0]), "non_finite"),
    "nan_bytes": (reading("x", np.array([1, np.nan, 3], "<f4").tobytes()), "non_finite"),
    "bytes_too_short": (reading("x", np.zeros(2, "<f4").tobytes()), "wrong_length"),
    "bytes_not_float32": (reading("x", b"\x00" * 11), "wrong_length"),
    "negative_seq": (reading("x", GOOD, seq=-1), "bad_seq"),
    "float_seq": (reading("x", GOOD, seq=1.5), "bad_seq"),
    "string_ts": (reading("x", GOOD, ts="now"), "bad_ts"),
    "nan_ts": (reading("x", GOOD, ts=math.nan), "bad_ts"),
    "int_reset": (reading("x", GOOD, reset=1), "bad_flag"),
    "batch_streams_not_list": (pack({"streams": "abc", "values": [GOOD]}), "bad_stream"),
    "batch_bytes_wrong_size": (
        pack({"streams": ["a", "b"], "values": np.zeros(5, "<f4").tobytes()}),
        "wrong_length",
    ),
    "batch_rows_mismatch": (pack({"streams": ["a", "b"], "values": [GOOD]}), "wrong_length"),
    "batch_seq_mismatch": (pack({"streams": ["a"], "values": [GOOD], "seq": [1, 2]}), "bad_seq"),
}


@pytest.mark.parametrize("frame, reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_rejected_with_its_reason_and_the_next_reading_served(
    daemon, model, frame, reason
):
    good = unique("after-bad")
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    before = daemon.stats()
    push.send(frame)
    push.send(reading(good, GOOD, seq=1))
    got = daemon.until_fence(sub, push)
    after = daemon.stats()

    errors = kinds(got, "error")
    assert [e["reason"] for e in errors] == [reason], errors
    assert isinstance(errors[0]["detail"], str) and errors[0]["detail"]
    (pred,) = kinds(got, "pred")
    assert pred["stream"] == good and pred["seq"] == 1
    assert_predictions([pred], reference_outputs(model, [(good, GOOD)]))
    assert reject_delta(before, after) == Counter({reason: 1})
    assert after["readings_in"] - before["readings_in"] == 2  # the good one and the fence


def test_text_sent_instead_of_msgpack_is_named_as_text_in_the_error(daemon):
    # msgpack's own words for these frames were "" and "unpack(b) received extra data."
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    push.send_json({"stream": "pump-7", "values": GOOD})
    push.send(b"pred.pump-7")  # a topic frame: one frame per message, not [topic, reading]
    push.send(b"\xc1\xc1")
    errors = kinds(daemon.until_fence(sub, push), "error")

    assert [e["reason"] for e in errors] == ["not_msgpack"] * 3, errors
    text = "the frame is text (JSON? a topic frame?), not msgpack: send one msgpack map per frame"
    assert errors[0]["detail"].startswith(text) and errors[1]["detail"].startswith(text), errors
    assert errors[2]["detail"] == "not valid msgpack (FormatError)", errors


def test_batch_with_bad_rows_serves_the_good_rows_and_reports_each_bad_one(daemon, model):
    a, b = unique("rows-a"), unique("rows-b")
    streams = [a, "", b, 7, a, b, "x" * 300, a, b]
    values = [
        [1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0],  # bad stream
        [1.0, math.nan, 3.0],
        [1.0, 2.0, 3.0],  # int stream
        [4.0, 5.0, 6.0],
        [1.0, 2.0],
        [1.0, 2.0, 3.0],  # id too long
        [0.0, "zero", 0.0],
        [-1.0, -2.0, -3.0],
    ]
    seq = [1, 1, 1, 1, 2, 2, 1, 3, 3]
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    before = daemon.stats()
    push.send(pack({"streams": streams, "values": values, "seq": seq}))
    push.send(reading(a, GOOD, seq=4))
    got = daemon.until_fence(sub, push)
    after = daemon.stats()

    errors = kinds(got, "error")
    assert [(e["row"], e["reason"]) for e in errors] == [
        (1, "bad_stream"),
        (2, "non_finite"),
        (3, "bad_stream"),
        (5, "wrong_length"),
        (6, "stream_too_long"),
        (7, "bad_values"),
    ]
    assert [e.get("stream") for e in errors if e["row"] in (2, 5, 7)] == [b, b, a]
    preds = predictions_by_stream(got)
    assert [p["seq"] for p in preds[a]] == [1, 2, 4]
    assert [p["seq"] for p in preds[b]] == [3]
    expected = reference_outputs(model, [(a, values[0]), (a, values[4]), (a, GOOD), (b, values[8])])
    assert_predictions(preds[a] + preds[b], expected)
    assert reject_delta(before, after) == Counter(
        {"bad_stream": 2, "non_finite": 1, "wrong_length": 1, "stream_too_long": 1, "bad_values": 1}
    )


def test_bytes_batch_with_a_non_finite_row_serves_the_other_rows(daemon, model):
    a = unique("nf")
    X = np.array([[1, 2, 3], [np.inf, 0, 0], [3, 2, 1]], np.float32)
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    push.send(protocol.encode_batch([a, a, a], X, seq=[1, 2, 3]))
    got = daemon.until_fence(sub, push)

    assert [(e["row"], e["reason"], e["stream"]) for e in kinds(got, "error")] == [
        (1, "non_finite", a)
    ]
    preds = kinds(got, "pred")
    assert [p["seq"] for p in preds] == [1, 3]
    assert_predictions(preds, reference_outputs(model, [(a, X[0]), (a, X[2])]))


def test_oversized_frame_is_dropped_by_zeromq_and_the_daemon_keeps_serving(daemon, model):
    """ZMQ_MAXMSGSIZE makes ZeroMQ drop the message and the connection before the daemon sees it.

    So it is neither counted as a frame nor as a reject; the sender's socket reconnects and what it
    sends after that is served, as is everything from other connections.
    """
    good = unique("after-big")
    sub = daemon.subscriber(("pred.", "error"))
    big = daemon.push(connect=False)
    monitor = big.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    monitor.rcvtimeo = int(RECV_TIMEOUT * 1000)
    big.connect(daemon.ingest)
    try:
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECTED
        before = daemon.stats()
        big.send(reading(good, [1.0] * (MAX_MESSAGE_BYTES // 8)))  # > MAX_MESSAGE_BYTES
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECTED
        big.send(reading(good, GOOD, seq=1))
        got_same = daemon.until_fence(sub, big)
        other = daemon.push()
        other.send(reading(good, GOOD, seq=2))
        got_other = daemon.until_fence(sub, other)
        after = daemon.stats()
    finally:
        big.disable_monitor()
        monitor.close(linger=0)

    assert kinds(got_same + got_other, "error") == []
    preds = kinds(got_same + got_other, "pred")
    assert [p["seq"] for p in preds] == [1, 2]
    assert_predictions(preds, reference_outputs(model, [(good, GOOD), (good, GOOD)]))
    assert reject_delta(before, after) == Counter()
    assert after["frames_in"] - before["frames_in"] == 4  # two readings, two fences
    assert daemon.control("health")["status"] == "ready"


# ----------------------------------------------------------------------------- seq, reset, end


def test_duplicate_and_old_seq_are_dropped_and_counted(daemon, model):
    s = unique("dup")
    rows = [
        (1, [1.0, 0, 0]),
        (2, [2.0, 0, 0]),
        (2, [9.0, 9, 9]),
        (3, [3.0, 0, 0]),
        (0, [8.0, 8, 8]),
    ]
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    before = daemon.stats()
    for seq, values in rows:
        push.send(reading(s, values, seq=seq))
    push.send(protocol.encode_batch([s, s, s], np.ones((3, N_IN)), seq=[4, 4, 5]))
    got = daemon.until_fence(sub, push)
    after = daemon.stats()

    preds = kinds(got, "pred")
    assert [p["seq"] for p in preds] == [1, 2, 3, 4, 5]
    accepted = [[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert_predictions(preds, reference_outputs(model, [(s, v) for v in accepted]))
    errors = kinds(got, "error")
    assert [(e["reason"], e["stream"]) for e in errors] == [("duplicate", s)] * 3
    assert after["duplicates"] - before["duplicates"] == 3
    assert reject_delta(before, after) == Counter({"duplicate": 3})


def test_seq_1_always_starts_afresh_and_an_older_seq_is_a_duplicate(daemon, model):
    # seq 1 after seq 1 too: a program sending one reading a run sends nothing else
    s = unique("restart")
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    for seq in (1, 1, 2, 3, 2, 1, 2):
        push.send(reading(s, GOOD, seq=seq))
    got = daemon.until_fence(sub, push)

    assert [p["seq"] for p in kinds(got, "pred")] == [1, 1, 2, 3, 1, 2]
    assert [(e["reason"], e["stream"]) for e in kinds(got, "error")] == [("duplicate", s)]


def test_seq_gaps_are_served_and_counted(daemon, model):
    s = unique("gap")
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    before = daemon.stats()
    for seq in (1, 2, 5, 6, 10):
        push.send(reading(s, GOOD, seq=seq))
    got = daemon.until_fence(sub, push)
    after = daemon.stats()

    assert [p["seq"] for p in kinds(got, "pred")] == [1, 2, 5, 6, 10]
    assert kinds(got, "error") == []
    assert after["gaps"] - before["gaps"] == 2
    assert after["duplicates"] == before["duplicates"]


def test_reset_zeroes_the_state_before_the_step_and_end_drops_the_stream(daemon, model):
    s, t = unique("flags-s"), unique("flags-t")
    rng = np.random.default_rng(4)
    X = rng.normal(0, 1, (12, N_IN)).astype(np.float32)
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    push.send(reading(s, X[0].tolist(), seq=1))
    push.send(reading(s, X[1].tolist(), seq=2))
    push.send(reading(s, X[2].tolist(), seq=1, reset=True))  # reset may restart seq
    push.send(reading(s, X[3].tolist(), seq=2))
    # In one batch: reset and end rows among ordinary rows of two streams.
    push.send(
        protocol.encode_batch(
            [s, t, s, t, s, t],
            X[4:10],
            seq=[3, 1, 4, 2, 5, 3],
            reset=[False, False, True, False, False, False],
            end=[False, False, False, True, False, False],
        )
    )
    got_first = daemon.until_fence(sub, push)
    listed = daemon.control("streams", limit=100000)["streams"]
    push.send(reading(s, X[10].tolist(), seq=6, end=True))
    got_second = daemon.until_fence(sub, push)
    streams_after = daemon.control("streams", limit=100000)["streams"]

    engine = StreamEngine(model)
    expected = {s: [], t: []}
    for stream, x, reset, end in [
        (s, X[0], False, False),
        (s, X[1], False, False),
        (s, X[2], True, False),
        (s, X[3], False, False),
        (s, X[4], False, False),
        (t, X[5], False, False),
        (s, X[6], True, False),
        (t, X[7], False, True),
        (s, X[8], False, False),
        (t, X[9], False, False),  # t starts afresh after its end
        (s, X[10], False, True),
    ]:
        if reset:
            engine.reset(stream)
        expected[stream].append(engine.step(stream, x))
        if end:
            engine.drop(stream)
    preds = predictions_by_stream(got_first + got_second)
    assert kinds(got_first + got_second, "error") == []
    assert [p["seq"] for p in preds[s]] == [1, 2, 1, 2, 3, 4, 5, 6]
    assert [p["seq"] for p in preds[t]] == [1, 2, 3]  # seq 3 after end is not a duplicate
    assert_predictions(preds[s], expected[s])
    assert_predictions(preds[t], expected[t])
    for i, x in ((2, X[2]), (5, X[6])):  # a reset reading is a fresh stream's first reading
        fresh = reference_outputs(model, [("fresh", x)])[0]
        np.testing.assert_allclose(preds[s][i]["prediction"], fresh, atol=1e-5, rtol=0)
    assert s in listed and t in listed
    assert s not in streams_after and t in streams_after


# ----------------------------------------------------------------------------- control


def test_health_reports_ready_with_the_model_fingerprint(daemon, model):
    reply = daemon.control("health")
    assert reply["ok"] is True
    assert reply["status"] == "ready"
    assert reply["model"] == model.fingerprint
    assert reply["pid"] == daemon.proc.pid
    assert reply["uptime"] > 0


def test_stats_count_readings_frames_and_predictions(daemon):
    s = unique("stats")
    sub = daemon.subscriber(("pred.",))
    producer = daemon.producer()
    before = daemon.stats()
    producer.send_many([s] * 4, np.ones((4, N_IN)))
    producer.send(s, GOOD)
    daemon.until_fence(sub, producer)
    after = daemon.stats()

    assert after["status"] == "ready"
    assert after["readings_in"] - before["readings_in"] == 6  # + fence
    assert after["predictions_out"] - before["predictions_out"] == 6
    assert after["frames_in"] - before["frames_in"] == 3
    assert after["model_fingerprint"] == before["model_fingerprint"]
    assert after["latency_seconds"]["count"] > before["latency_seconds"]["count"]


def test_streams_lists_live_streams_up_to_the_limit(daemon):
    names = [unique("list") for _ in range(3)]
    sub = daemon.subscriber(("pred.",))
    producer = daemon.producer()
    producer.send_many(names, np.zeros((3, N_IN)))
    daemon.until_fence(sub, producer)
    reply = daemon.control("streams", limit=100000)
    limited = daemon.control("streams", limit=1)
    defaulted = daemon.control("streams", limit=None)  # nil is "not given": the default 1000

    assert set(names) <= set(reply["streams"])
    assert defaulted["ok"] and defaulted["streams"] == reply["streams"][:1000]
    assert reply["count"] == len(reply["streams"]) == daemon.control("health")["streams"]
    assert limited["count"] == reply["count"] and len(limited["streams"]) == 1


def test_control_reset_and_drop_start_a_stream_afresh(daemon, model):
    s, d = unique("ctl-reset"), unique("ctl-drop")
    sub = daemon.subscriber(("pred.", "error"))
    producer = daemon.producer()
    producer.send_many([s, s, d, d], np.full((4, N_IN), 0.5))
    daemon.until_fence(sub, producer)

    assert daemon.control("reset", stream=s) == {"ok": True, "existed": True}
    assert daemon.control("drop", stream=d) == {"ok": True, "existed": True}
    assert daemon.control("drop", stream=d) == {"ok": True, "existed": False}
    assert daemon.control("reset", stream=unique("never")) == {"ok": True, "existed": False}
    assert d not in daemon.control("streams", limit=100000)["streams"]
    producer.send(s, GOOD)  # seq 3: the Producer keeps counting
    producer.send(d, GOOD)
    got = daemon.until_fence(sub, producer)

    assert kinds(got, "error") == []
    fresh = reference_outputs(model, [("fresh", GOOD)])[0]
    for payload in kinds(got, "pred"):
        np.testing.assert_allclose(payload["prediction"], fresh, atol=1e-5, rtol=0)
    assert [p["stream"] for p in kinds(got, "pred")] == [s, d]


@pytest.mark.parametrize("cmd", ["reset", "drop"])
def test_reset_or_drop_without_a_stream_is_refused(daemon, cmd):
    reply = daemon.control(cmd)
    assert reply["ok"] is False and "stream" in reply["error"]
    assert daemon.control(cmd, stream=5)["ok"] is False


def test_snapshot_command_writes_a_restorable_state_file(daemon, model):
    s = unique("snap")
    X = np.random.default_rng(5).normal(0, 1, (4, N_IN)).astype(np.float32)
    sub = daemon.subscriber(("pred.",))
    producer = daemon.producer()
    producer.send_many([s, s, s], X[:3])
    daemon.until_fence(sub, producer)
    reply = daemon.control("snapshot")

    assert reply["ok"] is True
    assert reply["path"] == str(daemon.state_path)
    assert daemon.state_path.is_file()
    restored = StreamEngine.restore(daemon.state_path, model)
    assert s in restored.streams() and reply["streams"] == len(restored)
    expected = reference_outputs(model, [(s, x) for x in X])[-1]
    np.testing.assert_allclose(restored.step(s, X[3]), expected, atol=1e-5, rtol=0)


def test_unknown_command_is_refused_and_named(daemon):
    reply = daemon.control("launch-rockets")
    assert reply["ok"] is False
    assert "launch-rockets" in reply["error"]


BAD_CONTROL = {
    "not_msgpack": b"\xc1\xc1",
    "empty": b"",
    "a_list": pack(["health"]),
    "no_cmd": pack({"command": "health"}),
    "int_cmd": pack({"cmd": 3}),
    "empty_cmd": pack({"cmd": ""}),
}


@pytest.mark.parametrize("frame", BAD_CONTROL.values(), ids=BAD_CONTROL.keys())
def test_malformed_control_frame_gets_ok_false_and_the_daemon_keeps_serving(daemon, model, frame):
    reply = protocol.decode_reply(daemon.control_raw([frame]))
    assert reply["ok"] is False and reply["error"]

    s = unique("after-bad-ctl")
    sub = daemon.subscriber(("pred.",))
    push = daemon.push()
    push.send(reading(s, GOOD))
    (pred,) = kinds(daemon.until_fence(sub, push), "pred")
    assert_predictions([pred], reference_outputs(model, [(s, GOOD)]))
    assert daemon.control("health")["status"] == "ready"


def test_multipart_control_request_gets_ok_false_and_the_daemon_keeps_serving(tmp_path, model):
    with DaemonProcess(save_model(model, tmp_path), tmp_path / "state") as own:
        own.start()
        reply = protocol.decode_reply(
            own.control_raw([protocol.encode_control("health"), b"extra"], timeout=5)
        )
        assert reply["ok"] is False
        assert own.control("health")["status"] == "ready"


# ----------------------------------------------------------------------------- reload


def test_reload_keeps_states_for_same_shapes_and_needs_reset_for_another_hidden_size(tmp_path):
    first, same_shape, bigger = make_model(seed=3), make_model(seed=11), make_model(hidden=12)
    first_path = save_model(first, tmp_path, "first.npz")
    same_path = save_model(same_shape, tmp_path, "same.npz")
    bigger_path = save_model(bigger, tmp_path, "bigger.npz")
    X = np.random.default_rng(6).normal(0, 1, (6, N_IN)).astype(np.float32)
    with DaemonProcess(first_path, tmp_path / "state") as own:
        own.start()
        sub = own.subscriber(("pred.", "error"))
        producer = own.producer()
        producer.send_many(["r", "r"], X[:2])
        own.until_fence(sub, producer)

        reply = own.control("reload", path=str(same_path))
        assert reply["ok"] is True and reply["model"] == same_shape.fingerprint
        assert own.control("health")["model"] == same_shape.fingerprint
        producer.send("r", X[2])
        kept = kinds(own.until_fence(sub, producer), "pred")

        refused = own.control("reload", path=str(bigger_path))
        assert refused["ok"] is False and "reset" in refused["error"]
        missing = own.control("reload", path=str(tmp_path / "missing.npz"))
        assert missing["ok"] is False and "does not exist" in missing["error"]
        not_a_path = own.control("reload", path=123)
        assert not_a_path == {"ok": False, "error": not_a_path["error"]}
        assert "'path' must be a non-empty string" in not_a_path["error"]
        not_a_bool = own.control("reload", path=str(bigger_path), reset="yes")
        assert not_a_bool["ok"] is False and "'reset' must be a bool" in not_a_bool["error"]
        nil_reset = own.control("reload", path=str(bigger_path), reset=None)  # as not given
        assert nil_reset["ok"] is False and "--reset" in nil_reset["error"]
        producer.send("r", X[3])
        still = kinds(own.until_fence(sub, producer), "pred")

        forced = own.control("reload", path=str(bigger_path), reset=True)
        assert forced["ok"] is True and forced["model"] == bigger.fingerprint
        assert forced["streams"] == 0
        producer.send("r", X[4])
        fresh = kinds(own.until_fence(sub, producer), "pred")

    engine = StreamEngine(first)
    reference_outputs(first, [("r", X[0]), ("r", X[1])], engine=engine)
    engine.swap_model(same_shape)
    expected = reference_outputs(same_shape, [("r", X[2]), ("r", X[3])], engine=engine)
    assert_predictions(kept + still, expected)
    assert_predictions(fresh, reference_outputs(bigger, [("r", X[4])]))


@pytest.mark.parametrize("path", ["", 0, False, []], ids=["empty", "zero", "false", "list"])
def test_reload_with_a_path_that_is_not_a_non_empty_string_is_refused(daemon, path):
    # These read as "no path": the daemon swapped to its --model file, even after a reload to
    # another model, and with reset: true forgot every stream.
    before = daemon.control("health")["model"]
    reply = daemon.control("reload", path=path, reset=True)
    assert reply == {"ok": False, "error": reply.get("error")}
    assert "'path' must be a non-empty string" in reply["error"]
    assert daemon.control("health")["model"] == before


# ----------------------------------------------------------------------------- metrics


def test_metrics_endpoint_serves_prometheus_counters(daemon):
    s = unique("metrics")
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    push.send(reading(s, GOOD))
    push.send(reading(s, [math.nan, 0.0, 0.0]))
    daemon.until_fence(sub, push)
    stats = daemon.stats()
    port = daemon.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=RECV_TIMEOUT) as r:
        assert r.status == 200
        text = r.read().decode()

    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples["rnnstream_readings_in_total"] == stats["readings_in"]
    assert samples["rnnstream_predictions_out_total"] == stats["predictions_out"]
    assert samples["rnnstream_frames_in_total"] == stats["frames_in"]
    for reason, count in stats["rejects"].items():
        assert samples[f'rnnstream_rejects_total{{reason="{reason}"}}'] == count
    assert samples['rnnstream_rejects_total{reason="non_finite"}'] >= 1
    assert samples["rnnstream_ready"] == 1.0
    assert samples["rnnstream_batch_size_count"] == stats["batch_size"]["count"]


def test_the_ready_line_says_where_the_metrics_are_served(daemon):
    (ready,) = [r for r in daemon.log_records() if r.get("msg") == "ready"]
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    assert ready["metrics"] == url
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as r:
        assert r.status == 200


def test_metrics_say_which_process_version_and_model_are_serving(daemon):
    # An operator running for weeks needs the start time (restarts), memory and descriptors,
    # and which build and model answer, all from the one scrape.
    stats = daemon.stats()
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as r:
        text = r.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    started = samples[("process_start_time_seconds", ())]
    assert time.time() - 600 < started <= time.time()
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("process_open_fds", ())] > 0
    assert any(name == "python_info" for name, _ in samples)
    assert samples[("rnnstream_build_info", (("version", engine.__version__),))] == 1
    model = (("fingerprint", stats["model_fingerprint"]),)
    assert samples[("rnnstream_model_info", model)] == 1


def test_failed_snapshots_periodic_or_requested_are_counted(tmp_path, model):
    proc = DaemonProcess(
        save_model(model, tmp_path),
        tmp_path / "state",
        args=["--checkpoint-every", "1"],
        metrics=True,
    )
    with proc.start():
        proc.state_path.mkdir()  # a file cannot be renamed over it: every write fails
        try:
            proc.wait_for_log(lambda r: r.get("msg") == "snapshot failed", what="a failure")
            assert not proc.control("snapshot")["ok"]
            stats = proc.stats()
            url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as r:
                text = r.read().decode()
        finally:
            proc.state_path.rmdir()
    served = re.search(r"^rnnstream_snapshot_failures_total (\S+)$", text, re.M)
    assert served is not None and float(served.group(1)) == stats["snapshot_failures"] >= 2
    assert stats["snapshots"] == stats["snapshot_seconds"]["count"]


def counted(stats: dict) -> dict:
    """`stats` with the request that asked for it counted, as a later reply would show it with
    nothing else happening: a reply's counts are those from before its own request."""
    commands = {cmd: dict(outcomes) for cmd, outcomes in stats["control_commands"].items()}
    own = commands.setdefault("stats", {})
    own["ok"] = own.get("ok", 0) + 1
    return {**stats, "control_commands": commands}


def stats_and_page(proc: DaemonProcess) -> tuple[dict, dict]:
    """`stats` and a scrape of one moment: both between two `stats` replies that differ only by
    the first request, counted."""
    for _ in range(20):
        before = counted(proc.stats())
        page = scrape(proc.metrics_port)
        if proc.stats() == before:
            return before, page
    raise AssertionError("the daemon's counters never held still")


def command_counts(stats: dict) -> Counter:
    """The `stats` reply's control_commands: {(cmd, outcome): count}."""
    return Counter(
        {
            (cmd, outcome): n
            for cmd, outcomes in stats["control_commands"].items()
            for outcome, n in outcomes.items()
        }
    )


def control_counts(page: dict) -> dict[tuple[str, str], float]:
    """The page's rnnstream_control_commands_total: {(cmd, outcome): value}."""
    return {
        (dict(labels)["cmd"], dict(labels)["outcome"]): value
        for (name, labels), value in page.items()
        if name == "rnnstream_control_commands_total"
    }


def assert_page_matches_stats(page: dict, stats: dict) -> None:
    names = {"gaps": "seq_gaps"}
    for key in (
        "readings_in",
        "predictions_out",
        "frames_in",
        "duplicates",
        "gaps",
        "snapshots",
        "snapshot_failures",
        "latency_unmeasured",
    ):
        assert page[(f"rnnstream_{names.get(key, key)}_total", ())] == stats[key], key
    for family, counts in (("rejects", stats["rejects"]), ("alerts", stats["alerts"])):
        served = {
            labels[0][1]: value
            for (name, labels), value in page.items()
            if name == f"rnnstream_{family}_total"
        }
        assert {k: v for k, v in served.items() if v} == counts and served.keys() >= counts.keys()
    served = control_counts(page)
    assert {k: v for k, v in served.items() if v} == command_counts(stats)
    known = {(cmd, outcome) for cmd in protocol.CONTROL_COMMANDS for outcome in ("ok", "error")}
    assert served.keys() == known | {("invalid", "error")}  # whatever names clients sent
    for key in ("batch_size", "step_seconds", "latency_seconds", "snapshot_seconds"):
        h = stats[key]
        assert page[(f"rnnstream_{key}_count", ())] == h["count"], key
        assert page[(f"rnnstream_{key}_sum", ())] == pytest.approx(h["sum"], rel=1e-12), key
        for bound, count in h["buckets"]:
            assert page[(f"rnnstream_{key}_bucket", (("le", repr(float(bound))),))] == count
        assert page[(f"rnnstream_{key}_bucket", (("le", "+Inf"),))] == h["count"]
    assert page[("rnnstream_live_streams", ())] == stats["streams"]
    assert page[("rnnstream_open_alerts", ())] == stats["open_alerts"]
    for cause in ("idle", "lru", "reload"):
        assert page[("rnnstream_evictions_total", (("cause", cause),))] == stats[f"evicted_{cause}"]
    assert page[("rnnstream_model_info", (("fingerprint", stats["model_fingerprint"]),))] == 1
    # Bounded labels only: never a stream id, which would make a series per stream.
    labels = {name for (sample, ls) in page if sample.startswith("rnnstream_") for name, _ in ls}
    assert labels <= {"reason", "event", "cmd", "outcome", "cause", "le", "fingerprint", "version"}


def test_stats_and_the_metrics_page_agree_and_no_counter_goes_down_across_commands(tmp_path, model):
    proc = DaemonProcess(
        save_model(model, tmp_path),
        tmp_path / "state",
        args=["--max-streams", "4", "--idle-timeout", "1", "--checkpoint-every", "0"],
        metrics=True,
    )
    with proc.start():
        sub = proc.subscriber(("pred.", "error"))
        push = proc.push()
        streams = [unique("agree") for _ in range(6)]  # over --max-streams: LRU evictions
        for i, s in enumerate(streams):
            push.send(reading(s, GOOD, seq=2, ts=time.time()))
            push.send(reading(s, GOOD, seq=4 if i % 2 else 2, ts=time.time()))  # a gap, a dup
        push.send(reading(streams[0], [math.nan, 0.0, 0.0]))
        push.send(b"\xc1 not msgpack")
        proc.until_fence(sub, push)
        first, page = stats_and_page(proc)
        assert_page_matches_stats(page, first)
        assert first["duplicates"] and first["gaps"] and first["evicted_lru"]

        before = first
        for cmd, fields in (
            ("reset", {"stream": streams[-1]}),
            ("drop", {"stream": streams[-2]}),
            ("reload", {}),
            ("reload", {"reset": True}),
            ("snapshot", {}),
        ):
            assert proc.control(cmd, **fields)["ok"], cmd
            stats, later = stats_and_page(proc)
            assert_page_matches_stats(later, stats)
            for sample, value in page.items():
                name = sample[0]
                if name.startswith("rnnstream_") and name.endswith(("_total", "_count", "_bucket")):
                    assert later[sample] >= value, (cmd, sample)
            if fields.get("reset"):  # every live stream forgotten, each counted by some cause
                assert stats["streams"] == 0
                assert stats["evictions"] - before["evictions"] == before["streams"]
                assert stats["evicted_reload"] > before["evicted_reload"]
            page, before = later, stats
        push.send(reading(unique("idle"), GOOD))  # reload with reset forgot every stream
        proc.until_fence(sub, push)
        deadline = time.monotonic() + RECV_TIMEOUT  # the idle sweep, once a second
        while proc.stats()["evicted_idle"] == 0:
            assert time.monotonic() < deadline, "no idle eviction"
            time.sleep(0.2)
        stats, last = stats_and_page(proc)
        assert_page_matches_stats(last, stats)
        assert stats["evictions"] == sum(
            stats[f"evicted_{cause}"] for cause in ("idle", "lru", "reload")
        )
        assert stats["control_commands"]["reload"] == {"ok": 2}


def test_control_requests_are_counted_by_command_and_outcome_and_unknown_ones_as_invalid(daemon):
    before = daemon.stats()
    assert daemon.control("health")["ok"]
    assert not daemon.control("streams", limit=-1)["ok"]
    assert not daemon.control("threshold", level=0.5)["ok"]  # the model does not score
    assert not daemon.control("launch-rockets")["ok"]
    for frame in BAD_CONTROL.values():
        assert not protocol.decode_reply(daemon.control_raw([frame]))["ok"]
    multipart = [protocol.encode_control("health"), b"extra"]
    assert not protocol.decode_reply(daemon.control_raw(multipart))["ok"]
    after = daemon.stats()
    page = scrape(daemon.metrics_port)

    delta = command_counts(after)
    delta.subtract(command_counts(before))
    assert +delta == {
        ("stats", "ok"): 1,  # `before`: a reply counts the requests before its own
        ("health", "ok"): 1,
        ("streams", "error"): 1,
        ("threshold", "error"): 1,
        ("invalid", "error"): 1 + len(BAD_CONTROL) + 1,  # the unknown name, frames, multipart
    }
    assert_page_matches_stats(page, counted(after))  # the page: `after` counted too
    assert "launch-rockets" not in {cmd for cmd, _ in control_counts(page)}


def test_engine_time_is_measured_when_a_batch_is_stepped_one_reading_at_a_time(tmp_path, model):
    # More new streams in one batch than --max-streams: the daemon steps them one by one, its
    # slowest path, whose engine calls step_seconds must see as batch_size does.
    proc = DaemonProcess(
        save_model(model, tmp_path), tmp_path / "state", args=["--max-streams", "4"]
    )
    with proc.start():
        sub = proc.subscriber(("pred.",))
        push = proc.push()
        names = [unique("many") for _ in range(8)]
        push.send(protocol.encode_batch(names, np.ones((8, N_IN), np.float32)))
        assert len(kinds(proc.until_fence(sub, push), "pred")) == 8
        stats = proc.stats()
    assert stats["evicted_lru"] > 0  # the batch did not fit
    assert stats["step_seconds"]["count"] == stats["batch_size"]["count"] >= 9  # and the fence
    assert stats["step_seconds"]["sum"] > 0


def test_the_operations_guide_lists_exactly_the_metrics_the_daemon_serves(daemon):
    port = daemon.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=RECV_TIMEOUT) as r:
        text = r.read().decode()
    served = set()
    for line in text.splitlines():
        if line.startswith("# TYPE rnnstream_"):
            _, _, name, kind = line.split()
            served.add((name, kind))
    guide = (Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md").read_text()
    listed = {
        (m.group(1), m.group(2))
        for m in re.finditer(r"^\| `(rnnstream_\w+)(?:\{[\w,]+\})?` \| (\w+) \|", guide, re.M)
    }
    assert listed == served


def test_seq_may_restart_after_end_even_within_one_batch(daemon, model):
    s = unique("end-restart")
    X = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    push.send(protocol.encode_batch([s, s, s], X, seq=[1, 2, 1], end=[False, True, False]))
    got = daemon.until_fence(sub, push)

    assert kinds(got, "error") == []
    preds = kinds(got, "pred")
    assert [p["seq"] for p in preds] == [1, 2, 1]
    assert_predictions(preds[2:], reference_outputs(model, [(s, X[2])]))


@pytest.mark.parametrize("as_batch", [False, True], ids=["singles", "batch"])
def test_a_duplicate_with_end_is_dropped_whole_and_leaves_its_stream_alive(daemon, model, as_batch):
    s = unique("dup-end")
    X = np.array([[1, 0, 0], [0, 1, 0], [9, 9, 9], [0, 0, 1], [0, 0, 0]], np.float32)
    seqs, ends = [1, 2, 2, 3, 2], [False, False, True, False, False]
    sub = daemon.subscriber(("pred.", "error"))
    push = daemon.push()
    if as_batch:
        push.send(protocol.encode_batch([s] * 5, X, seq=seqs, end=ends))
    else:
        for x, seq, end in zip(X, seqs, ends, strict=True):
            push.send(reading(s, x.tolist(), seq=seq, end=end))
    got = daemon.until_fence(sub, push)

    # The stream kept its state and its last seq: seq 3 continues from 1 and 2, and the
    # re-sent 2 after it is a duplicate too.
    preds = kinds(got, "pred")
    assert [p["seq"] for p in preds] == [1, 2, 3]
    assert [e["reason"] for e in kinds(got, "error")] == ["duplicate", "duplicate"]
    assert_predictions(preds, reference_outputs(model, [(s, X[0]), (s, X[1]), (s, X[3])]))


def test_a_reading_stamped_long_ago_is_counted_apart_from_the_latency(daemon, model):
    # A replay of recorded data sends the data's own times: not a latency of the daemon's.
    s = unique("replayed")
    sub = daemon.subscriber(("pred.",))
    push = daemon.push()
    before = daemon.stats()
    push.send(reading(s, GOOD, ts=1.4e9))  # 2014
    push.send(reading(s, GOOD, ts=time.time()))
    got = daemon.until_fence(sub, push)
    after = daemon.stats()

    assert [p["ts"] for p in kinds(got, "pred")][0] == 1.4e9  # echoed all the same
    assert after["latency_unmeasured"] - before["latency_unmeasured"] == 1
    assert after["latency_seconds"]["count"] - before["latency_seconds"]["count"] >= 1
    assert after["latency_seconds"]["p99"] is not None and after["latency_seconds"]["p99"] < 5
