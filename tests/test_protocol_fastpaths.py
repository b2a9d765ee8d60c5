"""Intake decoding's fast paths give exactly what row-by-row validation gives.

`reference_decode` applies the per-row rules of PROTOCOL.md with the single-value helpers
(`_stream_problem`, `_row_values`, `_seq_problem`, ...) and no whole-column shortcut; every test
compares `decode_ingest_many` with it: rows, values, columns and each rejection's reason, detail,
stream and row index, in order.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol as P
from engine.protocol import RejectReason as R

N_INPUTS = 3


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _reference_batch(msg: dict, n_inputs: int) -> tuple[list[tuple], list[P.Rejection]]:
    streams = msg["streams"]
    if type(streams) is not list:
        return [], [P.Rejection(R.BAD_STREAM, "'streams' must be a list of stream ids")]
    n = len(streams)
    columns = {}
    for key, reason, scalar_check in (
        ("seq", R.BAD_SEQ, None),
        ("ts", R.BAD_TS, P._ts_problem),
        ("reset", R.BAD_FLAG, lambda f: P._flag_problem("reset", f)),
        ("end", R.BAD_FLAG, lambda f: P._flag_problem("end", f)),
    ):
        columns[key], problem = P._column(msg, key, n, reason, scalar_check)
        if problem is not None:
            return [], [problem]
    raw = msg.get("values")
    if type(raw) is bytes:
        if len(raw) != 4 * n * n_inputs:
            return [], [P.Rejection(R.WRONG_LENGTH, "whole message")]
        rows = list(np.frombuffer(raw, "<f4").reshape(n, n_inputs))
    elif type(raw) is list:
        if len(raw) != n:
            return [], [P.Rejection(R.WRONG_LENGTH, "whole message")]
        rows = raw
    else:
        return [], [P.Rejection(R.BAD_VALUES, "whole message")]
    good, bad = [], []
    for i in range(n):
        seq, ts, reset, end = (
            None if columns[k] is None else columns[k][i] for k in ("seq", "ts", "reset", "end")
        )
        if type(raw) is bytes:
            value_problem = (
                None
                if np.isfinite(rows[i]).all()
                else P.Rejection(R.NON_FINITE, "values contain NaN or infinity")
            )
        else:
            _, value_problem = P._row_values(rows[i], n_inputs)
        problem = P._stream_problem(streams[i]) or value_problem  # a single reading's order
        for text, reason in (
            (P._seq_problem(seq), R.BAD_SEQ),
            (P._ts_problem(ts), R.BAD_TS),
            (P._flag_problem("reset", reset), R.BAD_FLAG),
            (P._flag_problem("end", end), R.BAD_FLAG),
        ):
            if problem is None and text is not None:
                problem = P.Rejection(reason, text)
        if problem is None:
            values = np.asarray(rows[i], np.float32)
            ts = None if ts is None else float(ts)
            good.append((streams[i], values, seq, ts, reset is True, end is True))
        else:
            problem.row = i
            if problem.stream is None and P._stream_problem(streams[i]) is None:
                problem.stream = streams[i]
            bad.append(problem)
    return good, bad


def reference_decode(frames: list[bytes], n_inputs: int = N_INPUTS):
    """Return (rows, rejections) decoded one row at a time, as PROTOCOL.md states the rules."""
    rows, rejections = [], []
    for frame in frames:
        msg = P._decode_frame(frame, P.DEFAULT_MAX_FRAME_BYTES)
        if type(msg) is P.Rejection:
            rejections.append(msg)
        elif msg.get("streams") is not None:
            good, bad = _reference_batch(msg, n_inputs)
            rows += good
            rejections += bad
        else:
            row = P._decode_single(msg, n_inputs)
            if type(row) is P.Rejection:
                rejections.append(row)
            else:
                rows.append(row)
    return rows, rejections


def assert_same_as_reference(frames: list[bytes], n_inputs: int = N_INPUTS) -> P.Readings:
    readings, rejections = P.decode_ingest_many(frames, n_inputs)
    rows, expected = reference_decode(frames, n_inputs)
    assert [(r.reason, r.detail, r.stream, r.row) for r in rejections] == [
        (r.reason, r.detail, r.stream, r.row) for r in expected
    ]
    assert readings.streams == [r[0] for r in rows]
    assert readings.values.dtype == np.float32 and readings.values.flags.c_contiguous
    assert readings.values.shape == (len(rows), n_inputs)
    want = np.array([np.asarray(r[1], np.float32) for r in rows], np.float32)
    assert np.array_equal(readings.values, want.reshape(len(rows), n_inputs))
    assert readings.seq_list() == [r[2] for r in rows]
    assert [type(t) for t in readings.ts_list()] == [type(r[3]) for r in rows]
    assert readings.ts_list() == [r[3] for r in rows]
    assert readings.reset.tolist() == [r[4] for r in rows]
    assert readings.end.tolist() == [r[5] for r in rows]
    return readings


# ----------------------------------------------------------------------------- examples

GOOD_IDS = ["pump-7", "sensor-00001", "é" * 64, "x" * 64, "a", "𝄞" * 64]
BAD_IDS = ["", None, 7, True, b"bytes", ["x"], "y" * 257, "é" * 129]
# Valid but not short enough to skip the byte count, or holding the join's separator.
ODD_GOOD_IDS = ["z" * 65, "z" * 256, "é" * 128, "nul\x00inside", "\x00"]


def batch(streams, values=None, **columns) -> bytes:
    if values is None:
        values = np.arange(len(streams) * N_INPUTS, dtype="<f4").tobytes()
    return pack({"streams": streams, "values": values, **columns})


def single(stream, values=None, **fields) -> bytes:
    return pack(
        {"stream": stream, "values": [1.5, -2, 3e5] if values is None else values, **fields}
    )


def test_all_valid_batch_takes_the_fast_path_and_matches_the_reference():
    streams = [f"sensor-{i:05d}" for i in range(1024)]
    assert P._ids_surely_valid(streams)
    readings = assert_same_as_reference(
        [batch(streams, seq=list(range(2, 1026)), ts=[1.0e9 + i for i in range(1024)])]
    )
    assert len(readings) == 1024


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_stream_id_in_a_batch_is_reported_like_the_row_checks_do(bad):
    streams = ["a", "b", bad, "c", "b"]
    assert not P._ids_surely_valid(streams)
    readings = assert_same_as_reference([batch(streams, seq=[3, 4, 5, 6, 7])])
    assert readings.streams == ["a", "b", "c", "b"]


@pytest.mark.parametrize("odd", ODD_GOOD_IDS)
def test_long_and_nul_holding_ids_fall_back_and_are_accepted(odd):
    streams = ["a", odd, "b"]
    assert not P._ids_surely_valid(streams)
    readings = assert_same_as_reference([batch(streams)])
    assert readings.streams == streams


def test_empty_batch_and_single_id_batches_match_the_reference():
    assert_same_as_reference([batch([]), batch(["only"]), batch([""]), batch(["\x00"])])


def test_non_finite_rows_of_a_bytes_batch_are_the_ones_dropped():
    values = np.ones((5, N_INPUTS), "<f4")
    values[1, 2] = np.nan
    values[3, 0] = -np.inf
    readings = assert_same_as_reference([batch(["a", "b", "c", "d", "e"], values.tobytes())])
    assert readings.streams == ["a", "c", "e"]


# Single readings with every optional field in its plain forms (tests/test_wire.py adds more).
PLAIN_SINGLES = [
    single("a", seq=1, ts=1.5),
    single("b", [0, 1, 2], seq=2, ts=7),  # int values and an int ts
    single("a", seq=2, reset=True, end=False),
    single("c", [3.4028234663852886e38, -1.0, 0.0]),  # float32's largest is accepted
    single("d", np.arange(N_INPUTS, dtype="<f4").tobytes(), seq=0),  # float32 bytes
    single("z" * 65, ts=None, seq=None),
]


def test_single_readings_with_plain_fields_match_the_reference():
    readings = assert_same_as_reference(PLAIN_SINGLES)
    assert readings.streams == ["a", "b", "a", "c", "d", "z" * 65]


BAD_VALUES = [
    [1.0, 2.0],  # wrong length
    [1.0, True, 2.0],  # a bool is not a number
    [1.0, None, 2.0],
    [1.0, "2", 3.0],
    [1.0, [2.0], 3.0],
    [math.nan, 1.0, 2.0],
    [1.0, math.inf, 2.0],
    [1.0, 2.0, -1e39],  # finite in float64, beyond float32
    [1.0, 2.0, 3.4028235677973366e38],  # rounds to float32's largest, yet above it
    "not a list",
]


@pytest.mark.parametrize("values", BAD_VALUES)
def test_a_single_reading_with_bad_values_among_good_ones_is_the_only_one_dropped(values):
    frames = [
        single("a", seq=1),
        single("b", values, seq=1),
        batch(["c", "d"], seq=[1, 2]),
        single("e", seq=1),
        single("f", values),
    ]
    readings = assert_same_as_reference(frames)
    assert readings.streams == ["a", "c", "d", "e"]


@pytest.mark.parametrize(
    "fields",
    [{"seq": -1}, {"seq": 1.0}, {"seq": True}, {"ts": math.nan}, {"ts": "now"}, {"ts": True},
     {"reset": 1}, {"end": "yes"}, {"reset": None, "end": None, "seq": None, "ts": None}],
)  # fmt: skip
def test_single_reading_fields_outside_the_quick_checks_match_the_reference(fields):
    assert_same_as_reference([single("a", **fields), single("b", seq=3), single(None)])


# ----------------------------------------------------------------------------- fuzzing

_good_value = st.one_of(st.floats(-1e30, 1e30, allow_nan=False), st.integers(-(2**63), 2**64 - 1))
_bad_value = st.sampled_from([math.nan, math.inf, -1e39, True, None, "1", [1.0]])
_good_id = st.one_of(st.sampled_from(GOOD_IDS), st.text(min_size=1, max_size=64))
_bad_id = st.sampled_from(BAD_IDS + ODD_GOOD_IDS)
_good_seq = st.one_of(st.integers(0, 2**64 - 1), st.none())
_bad_seq = st.sampled_from([-1, 1.0, True, "1"])
_good_ts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63), st.none()
)
_bad_ts = st.sampled_from([math.nan, math.inf, True, "t", [1.0]])
_good_flag = st.sampled_from([True, False, None])
_bad_flag = st.sampled_from([1, 0, "yes", 1.0])


def _maybe_bad(draw, good, bad, rate):
    return draw(bad) if draw(st.floats(0, 1)) < rate else draw(good)


# optional fields of a reading: (key, strategy of good values, strategy of bad ones)
OPTIONAL_FIELDS = (
    ("seq", _good_seq, _bad_seq),
    ("ts", _good_ts, _bad_ts),
    ("reset", _good_flag, _bad_flag),
    ("end", _good_flag, _bad_flag),
)


def single_reading(draw, rate: float) -> bytes:
    """A single-reading frame whose fields are each bad with probability `rate`."""
    fields = {
        "stream": _maybe_bad(draw, _good_id, _bad_id, rate),
        "values": [_maybe_bad(draw, _good_value, _bad_value, rate) for _ in range(N_INPUTS)],
    }
    for key, good, bad in OPTIONAL_FIELDS:
        if draw(st.booleans()):
            fields[key] = _maybe_bad(draw, good, bad, rate)
    return pack(fields)


@st.composite
def frames(draw):
    rate = draw(st.sampled_from([0.0, 0.0, 0.02, 0.3]))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            out.append(single_reading(draw, rate))
            continue
        n = draw(st.integers(0, 12))
        msg = {"streams": [_maybe_bad(draw, _good_id, _bad_id, rate) for _ in range(n)]}
        if draw(st.booleans()):
            values = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                                   min_size=n * N_INPUTS, max_size=n * N_INPUTS))  # fmt: skip
            if values and rate and draw(st.booleans()):
                values[draw(st.integers(0, len(values) - 1))] = math.nan
            msg["values"] = np.array(values, "<f4").tobytes()
        else:
            msg["values"] = [
                [_maybe_bad(draw, _good_value, _bad_value, rate) for _ in range(N_INPUTS)]
                for _ in range(n)
            ]
        for key, good, bad in OPTIONAL_FIELDS:
            if draw(st.booleans()):
                msg[key] = [_maybe_bad(draw, good, bad, rate) for _ in range(n)]
        out.append(pack(msg))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_decode_ingest_many_matches_row_by_row_validation(frame_list):
    assert_same_as_reference(frame_list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_good_id, _bad_id), max_size=20))
def test_ids_surely_valid_never_passes_an_invalid_id(streams):
    if P._ids_surely_valid(streams):
        assert streams and all(P._stream_problem(s) is None for s in streams)
    elif streams and all(type(s) is str and 0 < len(s) <= 64 and "\x00" not in s for s in streams):
        pytest.fail("a batch of short valid ids should take the fast path")


# ----------------------------------------------------------------------------- publication


@pytest.mark.parametrize("with_scores", [True, False])
def test_prediction_messages_are_byte_identical_to_one_encode_prediction_per_row(with_scores):
    rng = np.random.default_rng(3)
    streams = ["a", "pump-7", "é-unicode", "a", "𝄞"]
    seq = [1, None, 2**64 - 1, 7, 0]
    ts = [1.5, None, 1_700_000_000.25, 3, -0.0]  # an int ts is published as a float
    outputs = rng.standard_normal((5, 2)).astype(np.float32)
    scores = np.array([0.5, np.nan, 0.0, 1.0, np.nan], np.float32) if with_scores else None
    got = list(P.prediction_messages(streams, seq, ts, outputs, scores))
    want = [
        (
            P.prediction_topic(streams[i]),
            P.encode_prediction(
                streams[i], seq[i], ts[i], outputs[i], None if scores is None else scores[i]
            ),
        )
        for i in range(5)
    ]
    assert got == want
    kind, payload = P.decode_publication(*got[1])
    assert kind == "pred" and payload["score"] is None and payload["ts"] is None
    assert P.decode_publication(*got[3])[1]["ts"] == 3.0


def test_prediction_messages_of_no_rows_is_empty():
    assert list(P.prediction_messages([], [], [], np.empty((0, 2), np.float32), None)) == []


@pytest.mark.parametrize("rows", [0, 2, 4])
def test_packing_predictions_of_another_row_count_than_streams_raises(rows):
    # Readings columns and float32 outputs take the jitted packer, which would read past the
    # outputs: the mismatch must be refused, not published from stray memory.
    seq = np.array([1, 2, 3], np.int64)
    ts = np.array([1.0, 2.0, 3.0])
    outputs = np.ones((rows, 2), np.float32)
    with pytest.raises(ValueError):
        P.pack_prediction_messages(["a", "b", "c"], seq, ts, outputs, None)
