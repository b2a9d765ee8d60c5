"""Wire format v1: round trips, every malformed intake case, fuzzing."""

from __future__ import annotations

import math
import sys

import msgpack
import numpy as np
import pytest
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol as P
from engine.protocol import RejectReason as R


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def single_rejection(frame: bytes, n_inputs: int = 2) -> P.Rejection:
    readings, rejections = P.decode_ingest(frame, n_inputs)
    assert len(readings) == 0
    assert readings.values.shape == (0, n_inputs)
    assert len(rejections) == 1, rejections
    return rejections[0]


# ----------------------------------------------------------------------------- round trips


def test_protocol_module_does_not_import_numba_or_the_model():
    import subprocess

    code = (
        "import sys, engine.protocol; print('numba' in sys.modules, 'engine.model' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_single_reading_round_trips_with_all_fields():
    frame = P.encode_reading("pump-7", [1.5, -2], seq=3, ts=1700000000.25, reset=True, end=True)
    readings, rejections = P.decode_ingest(frame, 2)
    assert rejections == []
    assert readings.streams == ["pump-7"]
    assert readings.values.dtype == np.float32 and readings.values.flags.c_contiguous
    np.testing.assert_array_equal(readings.values, [[1.5, -2.0]])
    assert readings.seq_list() == [3]
    assert readings.ts_list() == [1700000000.25]
    assert readings.reset.tolist() == [True] and readings.end.tolist() == [True]


def test_single_reading_without_optional_fields_gets_defaults():
    readings, rejections = P.decode_ingest(pack({"stream": "a", "values": [1]}), 1)
    assert rejections == []
    assert readings.seq_list() == [None] and readings.ts_list() == [None]
    assert readings.reset.tolist() == [False] and readings.end.tolist() == [False]


def test_single_reading_accepts_numpy_values_and_float32_bytes():
    frame = P.encode_reading("a", np.array([0.5, 2.0], np.float32), seq=1)
    assert P.decode_ingest(frame, 2)[0].values.tolist() == [[0.5, 2.0]]
    raw = np.array([0.5, 2.0], "<f4").tobytes()
    readings, rejections = P.decode_ingest(pack({"stream": "a", "values": raw}), 2)
    assert rejections == [] and readings.values.tolist() == [[0.5, 2.0]]


def test_unknown_keys_are_ignored():
    frame = pack({"stream": "a", "values": [1.0], "future_field": {"x": [1, 2]}, "v": 2})
    readings, rejections = P.decode_ingest(frame, 1)
    assert rejections == [] and readings.streams == ["a"]


def test_nil_streams_means_not_given_and_the_map_is_a_single_reading():
    frame = pack({"streams": None, "stream": "a", "values": [1, 2]})
    readings, rejections = P.decode_ingest(frame, 2)
    assert rejections == [] and readings.streams == ["a"]
    np.testing.assert_array_equal(readings.values, [[1.0, 2.0]])


def test_batch_round_trips_with_per_row_columns():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    streams = ["a", "b", "a", "c", "d"]
    frame = P.encode_batch(
        streams,
        x,
        seq=[1, 1, 2, None, 9],
        ts=[1.0, 2.0, 3, None, 5.5],
        reset=[False, True, False, False, False],
        end=[False, False, False, False, True],
    )
    readings, rejections = P.decode_ingest(frame, 3)
    assert rejections == []
    assert readings.streams == streams
    np.testing.assert_array_equal(readings.values, x)
    assert readings.values.flags.c_contiguous and readings.values.flags.writeable
    assert readings.seq_list() == [1, 1, 2, None, 9]
    assert readings.ts_list() == [1.0, 2.0, 3.0, None, 5.5]
    assert all(type(t) is float for t in readings.ts_list() if t is not None)
    assert readings.reset.tolist() == [False, True, False, False, False]
    assert readings.end.tolist() == [False, False, False, False, True]


def test_batch_scalar_ts_and_flags_apply_to_every_row():
    frame = pack({"streams": ["a", "b"], "values": [[1.0], [2.0]], "ts": 7, "reset": True})
    readings, rejections = P.decode_ingest(frame, 1)
    assert rejections == []
    assert readings.ts_list() == [7.0, 7.0] and readings.reset.tolist() == [True, True]
    assert readings.end.tolist() == [False, False] and readings.seq_list() == [None, None]


def test_batch_values_as_list_of_rows_decode_like_bytes():
    x = [[1.0, 2.0], [3, 4.5]]
    a, _ = P.decode_ingest(pack({"streams": ["a", "b"], "values": x}), 2)
    b, _ = P.decode_ingest(P.encode_batch(["a", "b"], np.array(x)), 2)
    np.testing.assert_array_equal(a.values, b.values)


def test_empty_batch_decodes_to_no_readings_and_no_rejections():
    readings, rejections = P.decode_ingest(P.encode_batch([], np.zeros((0, 4))), 4)
    assert len(readings) == 0 and readings.values.shape == (0, 4) and rejections == []


def test_large_bytes_batch_decodes_every_row():
    n = 1024
    x = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    streams = [f"s{i}" for i in range(n)]
    frame = P.encode_batch(streams, x, seq=list(range(1, n + 1)), ts=1.5)
    readings, rejections = P.decode_ingest(frame, 8)
    assert rejections == [] and len(readings) == n
    np.testing.assert_array_equal(readings.values, x)
    assert readings.seq_list()[-1] == n and readings.ts_list()[0] == 1.5


def test_prediction_round_trips_and_nan_score_becomes_none():
    payload = P.encode_prediction("pump-7", 4, 12.5, np.array([0.25, 1.5], np.float32), 0.75)
    kind, msg = P.decode_publication(P.prediction_topic("pump-7"), payload)
    assert kind == "pred"
    assert msg == {
        "stream": "pump-7",
        "seq": 4,
        "ts": 12.5,
        "prediction": [0.25, 1.5],
        "score": 0.75,
    }
    payload = P.encode_prediction("x", None, None, [1.0], float("nan"))
    assert P.decode_publication(b"pred.x", payload)[1]["score"] is None


def test_prediction_batch_round_trips_to_numpy_arrays():
    pred = np.arange(6, dtype=np.float32).reshape(3, 2)
    scores = np.array([0.1, np.nan, 0.9], np.float32)
    payload = P.encode_prediction_batch(["a", "b", "c"], [1, 2, 3], [1.0, 2.0, 3.0], pred, scores)
    kind, msg = P.decode_publication(P.BATCH_TOPIC, payload)
    assert kind == "batch"
    assert msg["streams"] == ["a", "b", "c"] and msg["seq"] == [1, 2, 3] and msg["n_outputs"] == 2
    np.testing.assert_array_equal(msg["prediction"], pred)
    np.testing.assert_array_equal(msg["score"], scores)
    rows = list(P.batch_rows(msg))
    assert rows[1] == {"stream": "b", "seq": 2, "ts": 2.0, "prediction": [2.0, 3.0], "score": None}
    assert rows[2]["score"] == pytest.approx(0.9)


def test_prediction_batch_without_scores_publishes_nan_scores():
    payload = P.encode_prediction_batch(["a"], [1], [1.0], np.ones((1, 1)), None)
    _, msg = P.decode_publication(P.BATCH_TOPIC, payload)
    assert math.isnan(msg["score"][0])


def test_alert_round_trips_with_numpy_fields():
    alert = {
        "stream": "pump-7",
        "seq": np.int64(5),
        "ts": 3.0,
        "event": "open",
        "score": np.float32(0.5),
        "value": [1.0],
        "expected": np.array([0.5]),
        "feature": 0,
        "severity": "high",
        "extra": "kept",
    }
    kind, msg = P.decode_publication(P.alert_topic("pump-7"), P.encode_alert(alert))
    assert kind == "alert"
    assert msg["seq"] == 5 and msg["score"] == 0.5 and msg["expected"] == [0.5]
    assert msg["extra"] == "kept" and msg["event"] == "open"
    with pytest.raises(ValueError):
        P.encode_alert({"stream": "a", "event": "maybe"})


def test_error_round_trips_reason_stream_and_row():
    rej = P.Rejection(R.NON_FINITE, "values contain NaN", stream="a", row=3)
    kind, msg = P.decode_publication(P.ERROR_TOPIC, P.encode_error(rej))
    assert kind == "error"
    assert msg == {"reason": "non_finite", "detail": "values contain NaN", "stream": "a", "row": 3}
    _, msg = P.decode_publication(P.ERROR_TOPIC, P.encode_error(P.Rejection(R.NOT_A_MAP, "x")))
    assert "stream" not in msg and "row" not in msg


def test_topics_are_prefixed_utf8():
    assert P.prediction_topic("pümp") == b"pred.p\xc3\xbcmp"
    assert P.alert_topic("a") == b"alert.a"
    assert P.exact_subscription("pump-7") == b"pred.pump-7"
    assert P.exact_subscription("pump-7", "alert") == b"alert.pump-7"
    # the documented pitfall: the prefix of one stream matches another stream's topic
    assert P.prediction_topic("pump-70").startswith(P.exact_subscription("pump-7"))


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (b"stats", pack({})),
        (b"pred.a", b"\xc1"),
        (b"pred.a", pack([1, 2])),
        (b"pred.a", pack({"stream": "a"})),
        (b"alert.a", pack({"event": "open"})),
        (b"error", pack({"detail": "x"})),
        (P.BATCH_TOPIC, pack({"streams": ["a"]})),
        (
            P.BATCH_TOPIC,
            pack(
                {
                    "streams": ["a", "b"],
                    "seq": [1, 2],
                    "ts": [1.0, 2.0],
                    "prediction": b"\0" * 4,
                    "n_outputs": 1,
                    "score": b"\0" * 8,
                }
            ),
        ),
    ],
)
def test_malformed_publication_raises_protocol_error(topic, payload):
    with pytest.raises(P.ProtocolError):
        P.decode_publication(topic, payload)


def test_control_request_and_reply_round_trip():
    msg = P.decode_control(P.encode_control("snapshot", path="/tmp/x", n=2))
    assert msg == {"cmd": "snapshot", "path": "/tmp/x", "n": 2}
    assert P.decode_reply(P.encode_reply(True, streams=3)) == {"ok": True, "streams": 3}
    assert P.decode_reply(P.encode_reply(False, error="no such stream")) == {
        "ok": False,
        "error": "no such stream",
    }


@pytest.mark.parametrize("frame", [b"\xc1", pack([1]), pack({"x": 1}), pack({"cmd": 3})])
def test_bad_control_request_raises_protocol_error_which_is_a_value_error(frame):
    with pytest.raises(P.ProtocolError):
        P.decode_control(frame)
    assert issubclass(P.ProtocolError, ValueError)


def test_curve_key_reads_z85_text_and_certificate_files(tmp_path):
    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "server")
    public, secret = zmq.auth.load_certificate(secret_file)
    assert P.curve_key(public_file) == public
    assert P.curve_key(secret_file, secret=True) == secret
    assert P.curve_key(public.decode()) == public
    with pytest.raises(ValueError):
        P.curve_key(public_file, secret=True)
    with pytest.raises(ValueError):
        P.curve_key(tmp_path / "missing")


# ----------------------------------------------------------------------------- malformed intake

BAD_SINGLE = [
    (b"\xc1\xc1", R.NOT_MSGPACK),
    (pack({"stream": "a", "values": [1.0, 2.0]}) + b"\x00", R.NOT_MSGPACK),  # trailing bytes
    (b"\xd7\xff" + b"\0" * 8, R.NOT_MSGPACK),  # msgpack timestamp ext
    (b"\xc7\x01\x05\x00", R.NOT_MSGPACK),  # arbitrary ext type
    (b"\x91" * 5000, R.NOT_MSGPACK),  # nesting deeper than the unpacker's stack
    (pack({1: "a"}), R.NOT_MSGPACK),  # non-str map keys
    (pack([1, 2]), R.NOT_A_MAP),
    (pack("stream"), R.NOT_A_MAP),
    (pack(None), R.NOT_A_MAP),
    (pack({"values": [1.0, 2.0]}), R.BAD_STREAM),
    (pack({"stream": 7, "values": [1.0, 2.0]}), R.BAD_STREAM),
    (pack({"stream": b"a", "values": [1.0, 2.0]}), R.BAD_STREAM),
    (pack({"stream": "", "values": [1.0, 2.0]}), R.BAD_STREAM),
    (pack({"stream": "a" * 257, "values": [1.0, 2.0]}), R.STREAM_TOO_LONG),
    (pack({"stream": "é" * 129, "values": [1.0, 2.0]}), R.STREAM_TOO_LONG),  # 258 bytes
    (pack({"stream": "a"}), R.BAD_VALUES),
    (pack({"stream": "a", "values": 1.0}), R.BAD_VALUES),
    (pack({"stream": "a", "values": {"x": 1}}), R.BAD_VALUES),
    (pack({"stream": "a", "values": [1.0]}), R.WRONG_LENGTH),
    (pack({"stream": "a", "values": [1.0, 2.0, 3.0]}), R.WRONG_LENGTH),
    (pack({"stream": "a", "values": []}), R.WRONG_LENGTH),
    (pack({"stream": "a", "values": b"\0" * 12}), R.WRONG_LENGTH),
    (pack({"stream": "a", "values": [1.0, "2"]}), R.BAD_VALUES),
    (pack({"stream": "a", "values": [1.0, None]}), R.BAD_VALUES),
    (pack({"stream": "a", "values": [True, 1.0]}), R.BAD_VALUES),
    (pack({"stream": "a", "values": [[1.0], 2.0]}), R.BAD_VALUES),
    (pack({"stream": "a", "values": [1.0, float("nan")]}), R.NON_FINITE),
    (pack({"stream": "a", "values": [float("inf"), 1.0]}), R.NON_FINITE),
    (pack({"stream": "a", "values": [1e300, 1.0]}), R.NON_FINITE),  # overflows float32
    (pack({"stream": "a", "values": np.array([1, np.nan], "<f4").tobytes()}), R.NON_FINITE),
    (pack({"stream": "a", "values": [1.0, 2.0], "seq": "1"}), R.BAD_SEQ),
    (pack({"stream": "a", "values": [1.0, 2.0], "seq": 1.0}), R.BAD_SEQ),
    (pack({"stream": "a", "values": [1.0, 2.0], "seq": -1}), R.BAD_SEQ),
    (pack({"stream": "a", "values": [1.0, 2.0], "seq": True}), R.BAD_SEQ),
    (pack({"stream": "a", "values": [1.0, 2.0], "ts": "now"}), R.BAD_TS),
    (pack({"stream": "a", "values": [1.0, 2.0], "ts": float("nan")}), R.BAD_TS),
    (pack({"stream": "a", "values": [1.0, 2.0], "ts": False}), R.BAD_TS),
    (pack({"stream": "a", "values": [1.0, 2.0], "reset": 1}), R.BAD_FLAG),
    (pack({"stream": "a", "values": [1.0, 2.0], "end": "yes"}), R.BAD_FLAG),
    (pack({"streams": "a", "values": [[1.0, 2.0]]}), R.BAD_STREAM),
    (pack({"streams": ["a"], "values": b"\0" * 4}), R.WRONG_LENGTH),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]] * 2}), R.WRONG_LENGTH),
    (pack({"streams": ["a"], "values": 3}), R.BAD_VALUES),
    (pack({"streams": ["a"]}), R.BAD_VALUES),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "seq": [1, 2]}), R.BAD_SEQ),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "seq": 1}), R.BAD_SEQ),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "ts": "x"}), R.BAD_TS),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "ts": [1.0, 2.0]}), R.BAD_TS),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "reset": "x"}), R.BAD_FLAG),
    (pack({"streams": ["a"], "values": [[1.0, 2.0]], "end": [True, True]}), R.BAD_FLAG),
]


@pytest.mark.parametrize(("frame", "reason"), BAD_SINGLE)
def test_malformed_message_is_rejected_with_its_reason(frame, reason):
    rejection = single_rejection(frame)
    assert rejection.reason is reason, rejection
    assert rejection.detail


@pytest.mark.parametrize(
    "frame",
    [
        pack({"stream": "a", "values": ["x" * 100_000, 1.0]}),  # a str where a number belongs
        pack({"stream": "a", "values": [{"k": "v" * 100_000}, 1.0]}),
        pack({"stream": "a", "values": [1.0, 2.0], "seq": [1] * 100_000}),  # 1 byte -> "1, "
        pack({"stream": "a", "values": [1.0, 2.0], "seq": "\x00" * 100_000}),  # 1 -> 4 chars
        pack({"streams": ["a"], "values": [[1.0, 2.0]], "seq": [b"\x00" * 100_000]}),
    ],
)
def test_a_rejection_quotes_a_few_characters_of_what_was_sent_not_all_of_it(frame):
    # Quoted whole, a 16 MiB frame made an error publication and a log line of up to 64 MiB.
    (rejection,) = P.decode_ingest(frame, 2)[1]
    assert 0 < len(rejection.detail) <= 200, rejection.detail[:300]


def test_rejection_of_a_single_reading_names_its_stream():
    rejection = single_rejection(pack({"stream": "pump-7", "values": [1.0]}))
    assert rejection.stream == "pump-7" and rejection.row is None


def test_frame_over_the_size_limit_is_too_large_without_decoding():
    frame = P.encode_batch(["a"] * 100, np.zeros((100, 2)))
    assert P.decode_ingest(frame, 2, max_frame_bytes=1000)[1][0].reason is R.TOO_LARGE
    assert P.decode_ingest(frame, 2, max_frame_bytes=len(frame))[1] == []


def test_batch_with_bad_rows_keeps_the_good_rows_in_order():
    msg = {
        "streams": ["ok0", 5, "", "x" * 300, "ok4", "nan", "short", "seq", "ts", "flag", "ok10"],
        "values": [
            [0.0, 0.0],
            [1.0, 1.0],
            [2.0, 2.0],
            [3.0, 3.0],
            [4.0, 4.0],
            [float("nan"), 5.0],
            [6.0],
            [7.0, 7.0],
            [8.0, 8.0],
            [9.0, 9.0],
            [10.0, 10.0],
        ],
        "seq": [1, 2, 3, 4, 5, 6, 7, -8, 9, 10, 11],
        "ts": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, "t", 9.0, 10.0],
        "reset": [False] * 9 + [None, False],
        "end": [False] * 9 + ["no", True],
    }
    readings, rejections = P.decode_ingest(pack(msg), 2)
    assert readings.streams == ["ok0", "ok4", "ok10"]
    np.testing.assert_array_equal(readings.values, [[0, 0], [4, 4], [10, 10]])
    assert readings.seq_list() == [1, 5, 11] and readings.ts_list() == [0.0, 4.0, 10.0]
    assert readings.end.tolist() == [False, False, True]
    got = [(r.row, r.reason) for r in rejections]
    assert got == [
        (1, R.BAD_STREAM),
        (2, R.BAD_STREAM),
        (3, R.STREAM_TOO_LONG),
        (5, R.NON_FINITE),
        (6, R.WRONG_LENGTH),
        (7, R.BAD_SEQ),
        (8, R.BAD_TS),
        (9, R.BAD_FLAG),
    ]
    assert rejections[3].stream == "nan" and rejections[0].stream is None


def test_bytes_batch_drops_only_the_non_finite_rows():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[1, 2] = np.inf
    x[3, 0] = np.nan
    readings, rejections = P.decode_ingest(P.encode_batch(list("abcd"), x, seq=[1, 2, 3, 4]), 3)
    assert readings.streams == ["a", "c"] and readings.seq_list() == [1, 3]
    np.testing.assert_array_equal(readings.values, x[[0, 2]])
    assert [(r.row, r.reason, r.stream) for r in rejections] == [
        (1, R.NON_FINITE, "b"),
        (3, R.NON_FINITE, "d"),
    ]


def test_stream_id_of_exactly_the_byte_limit_is_accepted():
    stream = "é" * 128  # 256 UTF-8 bytes
    readings, rejections = P.decode_ingest(P.encode_reading(stream, [1.0]), 1)
    assert rejections == [] and readings.streams == [stream]


# ----------------------------------------------------------------------------- fuzzing


def _check_consistent(readings: P.Readings, rejections: list, n_inputs: int) -> None:
    n = len(readings.streams)
    assert readings.values.shape == (n, n_inputs)
    assert readings.values.dtype == np.float32 and readings.values.flags.c_contiguous
    assert np.isfinite(readings.values).all()
    for column in (readings.seq, readings.ts, readings.reset, readings.end):
        assert column.shape == (n,)
    assert readings.seq.dtype == np.int64 and readings.ts.dtype == np.float64
    assert all(type(s) is str and s for s in readings.streams)
    assert all(s is None or (type(s) is int and s >= 0) for s in readings.seq_list())
    assert all(t is None or (type(t) is float and math.isfinite(t)) for t in readings.ts_list())
    assert all(type(f) is bool for f in readings.reset.tolist() + readings.end.tolist())
    assert all(isinstance(r.reason, P.RejectReason) for r in rejections)
    assert R.INTERNAL not in [r.reason for r in rejections]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 4))
def test_decode_ingest_never_raises_on_arbitrary_bytes(frame, n_inputs):
    readings, rejections = P.decode_ingest(frame, n_inputs)
    _check_consistent(readings, rejections, n_inputs)


msgpack_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=16)
)
msgpack_obj = st.recursive(
    msgpack_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=12,
)
field_values = {
    "stream": st.text(max_size=3) | msgpack_obj,
    "streams": st.lists(st.text(min_size=1, max_size=3), max_size=4) | msgpack_obj,
    "values": st.lists(st.floats(width=32) | st.integers(-5, 5), max_size=3)
    | st.lists(st.lists(st.floats(width=32), min_size=2, max_size=2), max_size=4)
    | st.binary(max_size=32)
    | msgpack_obj,
    "seq": st.integers(-2, 5) | st.lists(st.integers(-1, 5) | st.none(), max_size=4) | msgpack_obj,
    "ts": st.floats() | st.lists(st.floats() | st.none(), max_size=4) | msgpack_obj,
    "reset": st.booleans() | st.lists(st.booleans(), max_size=4) | msgpack_obj,
    "end": st.booleans() | st.lists(st.booleans(), max_size=4) | msgpack_obj,
}
protocolish = st.fixed_dictionaries({}, optional=field_values)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgpack_obj | protocolish, st.integers(1, 3))
def test_decode_ingest_never_raises_on_arbitrary_msgpack_objects(obj, n_inputs):
    frame = pack(obj)
    readings, rejections = P.decode_ingest(frame, n_inputs)
    _check_consistent(readings, rejections, n_inputs)
    if not isinstance(obj, dict):
        assert [r.reason for r in rejections] == [R.NOT_A_MAP]
    if isinstance(obj, dict) and isinstance(obj.get("streams"), list):
        # every batch row is either kept or rejected, never both or neither
        kept_plus_rejected = len(readings) + len(rejections)
        assert kept_plus_rejected == len(obj["streams"]) or (
            len(readings) == 0 and len(rejections) == 1
        )


@pytest.mark.parametrize(
    ("seq", "bad_rows"),
    [([0, 3], []), ([2, True], [1]), ([False, 9], [0]), ([5, 1.0], [1]), ([4, 2**63 - 1], [1])],
)
def test_batch_seq_columns_refuse_bools_floats_and_overflow_row_by_row(seq, bad_rows):
    frame = pack({"streams": ["a", "b"], "values": [[1.0], [2.0]], "seq": seq})
    readings, rejections = P.decode_ingest(frame, 1)
    assert [r.row for r in rejections] == bad_rows
    assert all(r.reason == R.BAD_SEQ for r in rejections)
    assert readings.seq_list() == [s for i, s in enumerate(seq) if i not in bad_rows]


@pytest.mark.parametrize(
    ("ts", "packed"),
    [
        ([7.5, 7.5, 7.5], 7.5),
        ([7.5, 8.0, 7.5], [7.5, 8.0, 7.5]),
        ([np.nan, np.nan, np.nan], [None, None, None]),
        ([7.5, np.nan, 7.5], [7.5, None, 7.5]),
    ],
)
def test_batch_publication_sends_a_shared_ts_once_and_decodes_it_per_row(ts, packed):
    payload = P.encode_prediction_batch(
        ["a", "b", "c"], np.array([1, 2, 3]), np.array(ts), np.zeros((3, 1), np.float32), None
    )
    assert msgpack.unpackb(payload)["ts"] == packed
    _, msg = P.decode_publication(P.BATCH_TOPIC, payload)
    assert msg["ts"] == [None if t != t else t for t in ts]


@pytest.mark.parametrize(
    "row",
    [
        {"stream": 5, "values": [math.nan, 0.0]},
        {"stream": "", "values": [1.0]},
        {"stream": "x" * 300, "values": [1.0, 2.0], "seq": -1},
        {"stream": "ok", "values": [math.nan, 0.0], "seq": -1, "ts": "t"},
        {"stream": "ok", "values": [1.0, 2.0], "seq": -1, "ts": "t"},
        {"stream": "ok", "values": [1.0, 2.0], "ts": "t", "end": "no"},
    ],
)
def test_a_batch_row_gets_the_rejection_the_same_single_reading_gets(row):
    single = single_rejection(pack(row))
    batch = {"streams": [row["stream"], "good"], "values": [row["values"], [1.0, 2.0]]}
    batch.update({key: [row[key], None] for key in ("seq", "ts", "end") if key in row})
    readings, rejections = P.decode_ingest(pack(batch), 2)
    assert readings.streams == ["good"] and len(rejections) == 1
    assert (rejections[0].reason, rejections[0].stream) == (single.reason, single.stream)
