"""The jitted single-reading decoder (`fastpaths.wire`) against row-by-row validation.

`decode_ingest_many` takes the jitted path when every frame of a pass is a plain single reading;
each test here checks that it did (or did not) and that the result equals `reference_decode`,
the per-row rules of PROTOCOL.md. Frames are also built by hand in every msgpack width a
producer's packer may choose (uint64 for a small int, float32, map16, str16, ...).
"""

from __future__ import annotations

import math
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol as P
from engine.fastpaths import wire
from engine.protocol import split_frames
from tests.test_protocol_fastpaths import (
    GOOD_IDS,
    N_INPUTS,
    PLAIN_SINGLES,
    _good_id,
    _good_value,
    assert_same_as_reference,
    pack,
    single,
    single_reading,
)


def jitted(frames: list[bytes], max_frame_bytes: int = P.DEFAULT_MAX_FRAME_BYTES):
    return P._plain_readings(*P._laid_out(frames), N_INPUTS, max_frame_bytes)


def assert_jitted_and_right(frames: list[bytes]) -> P.Readings:
    assert jitted(frames) is not None, "plain single readings should take the jitted path"
    return assert_same_as_reference(frames)


def assert_turned_down(frames: list[bytes]) -> None:
    """The whole pass goes to the Python decoder (tested in test_protocol_fastpaths.py)."""
    assert jitted(frames) is None


# ----------------------------------------------------------------------- msgpack by hand


def m_int(v: int, code: int) -> bytes:
    """v in the given msgpack int format (0 = fixint)."""
    if code == 0:
        return struct.pack(">b", v) if v < 0 else bytes([v])
    fmt = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
           0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}[code]  # fmt: skip
    return bytes([code]) + struct.pack(fmt, v)


def int_codes(v: int) -> list[int]:
    """Every msgpack format that can hold v."""
    codes = [0] if -32 <= v <= 127 else []
    for code, lo, hi in ((0xCC, 0, 255), (0xCD, 0, 65535), (0xCE, 0, 2**32 - 1),
                         (0xCF, 0, 2**64 - 1), (0xD0, -128, 127), (0xD1, -(2**15), 2**15 - 1),
                         (0xD2, -(2**31), 2**31 - 1), (0xD3, -(2**63), 2**63 - 1)):  # fmt: skip
        if lo <= v <= hi:
            codes.append(code)
    return codes


def m_float(v: float, single_precision: bool) -> bytes:
    return b"\xca" + struct.pack(">f", v) if single_precision else b"\xcb" + struct.pack(">d", v)


def m_str(s: str, code: int) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    if code == 0:
        return bytes([0xA0 | len(raw)]) + raw
    return (
        bytes([code])
        + (struct.pack(">B", len(raw)) if code == 0xD9 else struct.pack(">H", len(raw)))
        + raw
    )


def str_codes(s: str) -> list[int]:
    n = len(s.encode("utf-8", "surrogatepass"))
    return ([0] if n < 32 else []) + ([0xD9] if n < 256 else []) + [0xDA]


def _container(n: int, fix: int, code16: int, width: int) -> bytes:
    """The header of a map or array of n in the given width (0: fix, 16 or 32 bits)."""
    if width == 0:
        return bytes([fix | n])
    return (
        bytes([code16]) + struct.pack(">H", n)
        if width == 16
        else bytes([code16 + 1]) + struct.pack(">I", n)
    )


def m_array(items: list[bytes], width: int) -> bytes:
    return _container(len(items), 0x90, 0xDC, width) + b"".join(items)


def m_map(pairs: list[tuple[bytes, bytes]], width: int) -> bytes:
    return _container(len(pairs), 0x80, 0xDE, width) + b"".join(k + v for k, v in pairs)


def m_bin(data: bytes, code: int) -> bytes:
    size = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}[code]
    return bytes([code]) + struct.pack(size, len(data)) + data


_widths = st.sampled_from([0, 16, 32])


def key(name: str) -> bytes:
    return m_str(name, 0)


# ----------------------------------------------------------------------------- examples


def test_what_producers_send_takes_the_jitted_path():
    frames = [P.encode_reading(s, [1.5, -2.0, 3e5], seq=i + 1, ts=1.7e9 + i) for i, s in
              enumerate(GOOD_IDS)]  # fmt: skip
    frames.append(P.encode_reading("bare", [0.0, 1.0, 2.0]))
    readings = assert_jitted_and_right(frames)
    assert readings.streams == [*GOOD_IDS, "bare"]


def _rows(n: int, nan_at: int | None = None) -> bytes:
    values = np.arange(n * N_INPUTS, dtype="<f4")
    if nan_at is not None:
        values[nan_at] = np.nan
    return values.tobytes()


def test_what_producers_send_in_batches_takes_the_jitted_path():
    frames = [
        P.encode_batch(["a", "b", "a"], np.ones((3, N_INPUTS)), seq=[1, 2, 3], ts=1.7e9),
        P.encode_reading("c", [1.0, 2.0, 3.0], seq=4, ts=1.7e9 + 1),
        P.encode_batch(
            ["d"] * 2,
            np.zeros((2, N_INPUTS)),
            seq=[5, None],
            ts=[1.5, None],
            reset=[True, False],
            end=[False, True],
        ),  # fmt: skip
        P.encode_batch([], np.zeros((0, N_INPUTS))),
        P.encode_batch(GOOD_IDS, np.ones((len(GOOD_IDS), N_INPUTS))),
    ]
    readings = assert_jitted_and_right(frames)
    assert readings.streams == ["a", "b", "a", "c", "d", "d", *GOOD_IDS]


def ids_of(streams: list[str]) -> bytes:
    return b"".join(s.encode("utf-8") + b"\0" for s in streams)


@pytest.mark.parametrize("rows", [slice(0, 3), slice(2, 7), slice(5, None), slice(0, 100)])
def test_a_run_of_rows_keeps_its_ids(rows):
    streams = ["a", *GOOD_IDS, "b"]
    frames = [P.encode_batch(streams, np.ones((len(streams), N_INPUTS)))]
    readings = assert_jitted_and_right(frames)
    run = readings.take(rows)
    assert run.streams == streams[rows]
    assert run.ids.tobytes() == ids_of(streams[rows])


def test_stream_ids_read_as_the_list_of_their_strings():
    streams = ["a", "é-7", "𝄞", "pump-70"]
    ids = np.frombuffer(bytearray(ids_of(streams)), np.uint8)
    lazy = P.StreamIds(ids, len(streams))
    assert len(lazy) == 4 and lazy == streams and streams == lazy
    assert lazy[1] == "é-7" and lazy[-1] == "pump-70" and lazy[1:3] == ["é-7", "𝄞"]
    assert list(lazy) == streams and "𝄞" in lazy and repr(lazy) == repr(streams)
    assert lazy == P.StreamIds(ids, len(streams)) and lazy != streams[:3]
    assert P.StreamIds(np.zeros(0, np.uint8), 0) == []


def test_rows_picked_out_of_order_or_none_have_no_ids():
    frames = [P.encode_batch(["a", "b", "c"], np.ones((3, N_INPUTS)))]
    readings = assert_jitted_and_right(frames)
    assert readings.take(np.array([0, 2])).ids is None
    assert readings.take(slice(0, 3, 2)).ids is None
    assert readings.take(slice(2, 2)).ids is None


def test_an_empty_batch_alone_gives_no_readings():
    frames = [P.encode_batch([], np.zeros((0, N_INPUTS)))]
    assert len(assert_jitted_and_right(frames)) == 0


def test_plain_fields_in_every_form_match_the_reference():
    frames = [
        *PLAIN_SINGLES,
        single("z" * 256, ts=None, seq=None, reset=None, end=None),
        single("e", [-(2**63), 2**64 - 1, -33], seq=P.MAX_SEQ, ts=-(2**63)),
        single("f", later_version_field=3, note=None, flag=True, weight=0.5),  # ignored keys
        pack({"streams": ["a", "b"], "values": _rows(2), "seq": None, "ts": 5, "reset": True}),
        pack({"streams": ["a", "b"], "values": _rows(2), "end": [None, True], "x": 1}),
    ]
    assert_jitted_and_right(frames)


@pytest.mark.parametrize(
    "odd",
    [
        single("nul\x00inside"),  # valid, but 0 separates the jitted path's ids
        single("a", extra=[1, 2]),  # an ignored key with a non-scalar value
        single("a", extra="text"),
        pack({"stream": "a", "values": [1, 2, 3], "é": 1}),  # a non-ASCII key
        single("a") + b"\xc0",  # trailing bytes
        b"\x82" + key("stream") + m_str("a", 0) + key("stream") + m_str("b", 0),  # duplicate
        b"\x82" + key("stream") + m_str("a", 0) + key("values") + b"\x93\x01\x02\xc3",  # a bool
        b"\x82" + key("stream") + b"\xa2\xc3\x28" + key("values") + b"\x93\x01\x02\x03",  # UTF-8
        pack({"streams": ["a", "b"], "values": _rows(2), "seq": 1}),  # one seq for a batch
        pack({"streams": ["a", "b"], "values": _rows(2), "seq": [1]}),  # a list too short
        pack({"streams": ["a", "b"], "values": _rows(2), "end": [True, False, True]}),
        pack({"streams": ["a", "b"], "values": _rows(1)}),
        pack({"streams": ["a", "b"], "values": _rows(2, nan_at=4)}),
        pack({"streams": ["a", ""], "values": _rows(2)}),
        pack({"streams": ["a", "nul\x00inside"], "values": _rows(2)}),
        pack({"streams": ["a", 7], "values": _rows(2)}),
        pack({"streams": "a", "values": _rows(1)}),
        pack({"streams": ["a"], "stream": "a", "values": _rows(1)}),  # both kinds at once
        single("a", seq=[1]),  # a list where one value belongs
        single("a", ts=[1.5]),
        single("a", np.arange(2 * N_INPUTS, dtype="<f4").tobytes()),  # two rows for one
        single("a", [1.0, 2.0]),  # wrong length
        single("a", [1.0, 2.0, math.nan]),
        single("a", seq=-1),
        single("a", ts=math.inf),
        single("", seq=1),
        single("y" * 257),
        single(7),
        single("a", reset=1),
        pack({"values": [1, 2, 3]}),
        pack([1, 2, 3]),
        b"\xc1",
        pack({"streams": ["a"], "values": [[1, 2, 3]]}),
        msgpack.packb({"stream": "a", "values": [1, 2, 3], "when": msgpack.ExtType(1, b"x")}),
    ],
)
def test_anything_else_is_left_to_the_python_decoder(odd):
    assert_turned_down([single("ok", seq=1), odd, single("ok", seq=2)])


def test_a_frame_over_the_size_limit_is_left_to_the_python_decoder():
    frame = single("a")
    assert jitted([frame], len(frame)) is not None
    assert jitted([frame], len(frame) - 1) is None


# ----------------------------------------------------------------------------- fuzzing


@st.composite
def hand_encoded(draw):
    """A valid single reading, each field in a msgpack format drawn from those that hold it."""
    stream = draw(_good_id.filter(lambda s: "\x00" not in s))
    pairs = [(key("stream"), m_str(stream, draw(st.sampled_from(str_codes(stream)))))]
    if draw(st.booleans()):
        items = []
        for _ in range(N_INPUTS):
            v = draw(_good_value)
            if type(v) is int:
                items.append(m_int(v, draw(st.sampled_from(int_codes(v)))))
            else:
                single_precision = draw(st.booleans()) and abs(v) < 3e38
                items.append(m_float(v, single_precision))
        values = m_array(items, draw(_widths))
    else:
        row = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                            min_size=N_INPUTS, max_size=N_INPUTS))  # fmt: skip
        values = m_bin(np.array(row, "<f4").tobytes(), draw(st.sampled_from([0xC4, 0xC5, 0xC6])))
    pairs.append((key("values"), values))
    if draw(st.booleans()):
        seq = draw(st.integers(0, P.MAX_SEQ))
        pairs.append((key("seq"), m_int(seq, draw(st.sampled_from(int_codes(seq))))))
    if draw(st.booleans()):
        ts = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                            st.integers(-(2**63), 2**64 - 1)))  # fmt: skip
        if type(ts) is int:
            pairs.append((key("ts"), m_int(ts, draw(st.sampled_from(int_codes(ts))))))
        else:
            pairs.append((key("ts"), m_float(ts, draw(st.booleans()) and abs(ts) < 3e38)))
    for name in ("reset", "end"):
        if draw(st.booleans()):
            pairs.append((key(name), draw(st.sampled_from([b"\xc0", b"\xc2", b"\xc3"]))))
    if draw(st.booleans()):
        pairs.append(
            (
                key("unknown"),
                draw(st.sampled_from([b"\xc0", b"\xc3", b"\x05", m_float(0.5, False)])),
            )
        )
    order = draw(st.permutations(range(len(pairs))))
    return m_map([pairs[i] for i in order], draw(_widths))


def _any_int(draw, v: int) -> bytes:
    return m_int(v, draw(st.sampled_from(int_codes(v))))


def _any_number(draw, v: int | float) -> bytes:
    if type(v) is int:
        return _any_int(draw, v)
    return m_float(v, draw(st.booleans()) and abs(v) < 3e38)


@st.composite
def hand_encoded_batch(draw):
    """A valid columnar batch, each part in a msgpack format drawn from those that hold it."""
    n = draw(st.integers(0, 6))
    streams = [draw(_good_id.filter(lambda s: "\x00" not in s)) for _ in range(n)]
    ids = [m_str(s, draw(st.sampled_from(str_codes(s)))) for s in streams]
    rows = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                         min_size=n * N_INPUTS, max_size=n * N_INPUTS))  # fmt: skip
    bin_code = draw(st.sampled_from([0xC4, 0xC5, 0xC6]))
    pairs = [
        (key("streams"), m_array(ids, draw(_widths))),
        (key("values"), m_bin(np.array(rows, "<f4").tobytes(), bin_code)),
    ]
    nil_or = lambda strategy: st.one_of(st.none(), strategy)  # noqa: E731
    columns = {
        "seq": (st.integers(0, P.MAX_SEQ), False),
        "ts": (
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1)
            ),
            True,
        ),  # fmt: skip
        "reset": (st.booleans(), True),
        "end": (st.booleans(), True),
    }
    for name, (strategy, one_for_all) in columns.items():
        form = draw(st.sampled_from(["absent", "nil", "one", "list"] if one_for_all else
                                    ["absent", "nil", "list"]))  # fmt: skip
        if form == "nil":
            pairs.append((key(name), b"\xc0"))
        elif form == "one" or form == "list":
            entries = (
                [draw(strategy)] if form == "one" else [draw(nil_or(strategy)) for _ in range(n)]
            )
            encoded = [
                b"\xc0" if v is None else b"\xc3" if v is True else b"\xc2" if v is False
                else _any_number(draw, v)
                for v in entries
            ]  # fmt: skip
            pairs.append(
                (key(name), encoded[0] if form == "one" else m_array(encoded, draw(_widths)))
            )
    order = draw(st.permutations(range(len(pairs))))
    return m_map([pairs[i] for i in order], draw(_widths))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(hand_encoded(), hand_encoded_batch()), min_size=1, max_size=6))
def test_every_encoding_of_valid_batches_and_readings_decodes_like_the_reference(frames):
    assert_jitted_and_right(frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hand_encoded(), min_size=1, max_size=8))
def test_every_encoding_of_a_valid_reading_decodes_like_the_reference(frames):
    assert_jitted_and_right(frames)


@st.composite
def single_frames(draw):
    """Single readings as `msgpack.packb` writes them, a share of them with bad fields."""
    rate = draw(st.sampled_from([0.0, 0.0, 0.02, 0.3]))
    return [single_reading(draw, rate) for _ in range(draw(st.integers(1, 8)))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(single_frames())
def test_single_readings_good_and_bad_decode_like_the_reference(frames):
    assert_same_as_reference(frames)


# ----------------------------------------------------------------------------- publication

_SEQS = [P.NO_SEQ, 0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, P.MAX_SEQ]


@st.composite
def prediction_columns(draw):
    n = draw(st.integers(1, 6))
    n_outputs = draw(st.sampled_from([1, 3, 15, 16, 20]))
    streams = [draw(_good_id.filter(lambda s: "\x00" not in s)) for _ in range(n)]
    seq = np.array([draw(st.one_of(st.sampled_from(_SEQS), st.integers(0, P.MAX_SEQ)))
                    for _ in range(n)], np.int64)  # fmt: skip
    ts = np.array([draw(st.one_of(st.just(math.nan), st.floats(allow_nan=False)))
                   for _ in range(n)], np.float64)  # fmt: skip
    outputs = np.array(
        draw(st.lists(st.floats(width=32), min_size=n * n_outputs, max_size=n * n_outputs)),
        np.float32,
    ).reshape(n, n_outputs)
    scores = None
    if draw(st.booleans()):
        scores = np.array([draw(st.one_of(st.just(math.nan), st.floats(0, 1)))
                           for _ in range(n)], np.float64)  # fmt: skip
    return streams, seq, ts, outputs, scores


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prediction_columns())
def test_jitted_prediction_messages_are_byte_identical_to_encode_prediction(columns):
    streams, seq, ts, outputs, scores = columns
    assert P._packed_predictions(streams, seq, ts, outputs, scores) is not None
    got = list(P.prediction_messages(streams, seq, ts, outputs, scores))
    want = []
    for i, stream in enumerate(streams):
        score = None if scores is None or math.isnan(scores[i]) else float(scores[i])
        payload = P.encode_prediction(
            stream,
            None if seq[i] == P.NO_SEQ else int(seq[i]),
            None if math.isnan(ts[i]) else float(ts[i]),
            outputs[i],
            score,
        )
        want.append((P.prediction_topic(stream), payload))
    assert got == want


def test_an_id_holding_a_nul_is_published_by_the_python_packer():
    streams = ["a", "nul\x00inside"]
    columns = (np.array([1, 2]), np.array([1.5, math.nan]), np.zeros((2, 2), np.float32), None)
    assert P._packed_predictions(streams, *columns) is None
    got = list(P.prediction_messages(streams, *columns))
    assert got[1][0] == b"pred.nul\x00inside"
    assert P.decode_publication(*got[1])[1]["stream"] == "nul\x00inside"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prediction_columns(), st.integers(0, 40), st.one_of(st.none(), st.floats(allow_nan=False)))
def test_batch_payload_with_jitted_columns_is_byte_identical(columns, extra_rows, shared_ts):
    streams, seq, ts, outputs, scores = columns
    # more rows than a fixarray holds, too
    streams = streams + [f"s{i}" for i in range(extra_rows)]
    seq = np.concatenate([seq, np.arange(extra_rows, dtype=np.int64) * 99_991])
    ts = np.resize(ts, len(streams)) if shared_ts is None else np.full(len(streams), shared_ts)
    outputs = np.resize(outputs, (len(streams), outputs.shape[1]))
    scores = None if scores is None else np.resize(scores, len(streams))
    score_bytes = np.full(len(streams), np.nan, "<f4") if scores is None else scores.astype("<f4")
    assert P._packed_prediction_batch(streams, seq, ts, outputs, score_bytes, None) is not None
    # one ts when every row has the same (but 0.0, published as a list)
    one_ts = float(ts[0]) if len(set(ts.tolist())) == 1 and not math.isnan(ts[0]) else None
    want = msgpack.packb(
        {
            "streams": streams,
            "seq": [None if s == P.NO_SEQ else int(s) for s in seq],
            "ts": one_ts or [None if math.isnan(t) else float(t) for t in ts],
            "prediction": outputs.astype("<f4").tobytes(),
            "n_outputs": outputs.shape[1],
            "score": score_bytes.tobytes(),
        },
        use_bin_type=True,
    )
    assert P.encode_prediction_batch(streams, seq, ts, outputs, scores) == want
    ids = np.frombuffer(bytearray(ids_of(streams)), np.uint8)  # as the decoder gives them
    assert P.encode_prediction_batch(streams, seq, ts, outputs, scores, ids) == want


def test_compiling_the_jitted_paths_ahead_runs_each_of_them():
    P.compile_jitted_paths(N_INPUTS)
    P.compile_jitted_paths(1)


# ------------------------------------------------------------ reading predictions back


def stamps(frames: list[bytes], skip: str = "__probe__", capacity: int = 100):
    """read_prediction_stamps over [topic, payload] frames: (frame reached, seqs, ts)."""
    buf, starts = P._laid_out(frames)
    seq = np.empty(capacity, np.int64)
    ts = np.empty(capacity, np.float64)
    prefix = np.frombuffer(P.PREDICTION_PREFIX, np.uint8)
    skip_id = np.frombuffer(skip.encode(), np.uint8)
    stop, count = wire.read_prediction_stamps(
        buf, starts, 0, len(frames), prefix, skip_id, seq, ts, 0
    )
    return stop, seq[:count].tolist(), ts[:count].tolist()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prediction_columns())
def test_prediction_stamps_are_the_seq_and_ts_msgpack_reads(columns):
    frames = [f for message in P.prediction_messages(*columns) for f in message]
    stop, seqs, times = stamps(frames)
    want = [msgpack.unpackb(payload) for payload in frames[1::2]]
    assert stop == len(frames)
    assert seqs == [P.NO_SEQ if m["seq"] is None else m["seq"] for m in want]
    assert times == pytest.approx(
        [math.nan if m["ts"] is None else m["ts"] for m in want], nan_ok=True, rel=0, abs=0
    )


def test_prediction_stamps_stop_at_anything_else_for_the_caller():
    outputs = np.zeros((1, 2), np.float32)

    def prediction(stream: str, seq: int) -> list[bytes]:
        [message] = P.prediction_messages([stream], np.array([seq]), np.array([1.5]), outputs, None)
        return list(message)

    batch = [P.BATCH_TOPIC, b"\x80"]
    error = [P.ERROR_TOPIC, P.encode_error(P.Rejection(P.RejectReason.NOT_MSGPACK, "x"))]
    not_ours = [b"pred.a", msgpack.packb({"ts": 1.5, "seq": 3, "stream": "a"})]
    for odd in (batch, error, not_ours, prediction("__probe__", 1)):
        frames = prediction("a", 1) + prediction("é" * 40, 2) + odd + prediction("b", 3)
        assert stamps(frames) == (4, [1, 2], [1.5, 1.5])
    # a full column stops it too, and a topic without its payload is left alone
    assert stamps(prediction("a", 1) + prediction("b", 2), capacity=1) == (2, [1], [1.5])
    assert stamps(prediction("a", 1) + [b"pred.b"]) == (2, [1], [1.5])


# ------------------------------------------------------------ packing single readings


def _encodable(stream: str) -> bool:
    try:
        return len(stream.encode("utf-8")) <= P.MAX_STREAM_ID_BYTES
    except UnicodeEncodeError:  # a lone surrogate
        return False


@st.composite
def reading_turns(draw):
    ids = draw(st.lists(_good_id.filter(_encodable), min_size=1, max_size=6, unique=True))
    n_inputs = draw(st.sampled_from([1, 8, 15, 16, 20]))
    n_rows = draw(st.integers(1, 5))
    pool = np.array(
        draw(st.lists(st.floats(width=32), min_size=n_rows * n_inputs, max_size=n_rows * n_inputs)),
        np.float32,
    ).reshape(n_rows, n_inputs)
    last_seq = np.array([draw(st.one_of(st.sampled_from(_SEQS[1:]), st.integers(0, P.MAX_SEQ)))
                         for _ in ids], np.int64) - 1  # fmt: skip
    last_seq = np.maximum(last_seq, 0)
    cursor = draw(st.integers(0, len(ids) - 1))
    first = draw(st.integers(0, 100))
    n = draw(st.integers(0, len(ids)))
    ts = draw(st.floats(allow_nan=False))
    return ids, pool, last_seq, cursor, first, n, ts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading_turns())
def test_packed_readings_are_byte_identical_to_encode_reading(turns):
    ids, pool, last_seq, cursor, first, n, ts = turns
    encoded = [s.encode("utf-8") for s in ids]
    id_bytes = np.frombuffer(b"".join(encoded), np.uint8)
    id_starts = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
    room = n * (max(map(len, encoded)) + wire.READING_BYTES_BEYOND_ID_AND_VALUES)
    room += n * 9 * pool.shape[1]
    out = np.full(room, 0xEE, np.uint8)
    bounds = np.empty(n + 1, np.int64)
    before = last_seq.copy()
    used, seq_sum = wire.pack_readings(
        id_bytes, id_starts, last_seq, cursor, pool, first, ts, n, out, bounds
    )
    assert used == bounds[n] <= room
    turn = [(cursor + i) % len(ids) for i in range(n)]
    want = [
        P.encode_reading(
            ids[k],
            [float(v) for v in pool[(first + i) % len(pool)]],
            seq=int(before[k]) + 1,
            ts=ts,
        )
        for i, k in enumerate(turn)
    ]
    assert split_frames(out, bounds) == want
    # (an int64 sum: seqs near MAX_SEQ wrap around)
    assert seq_sum % 2**64 == sum(int(before[k]) + 1 for k in turn) % 2**64
    assert (last_seq - before).tolist() == [int(k in turn) for k in range(len(ids))]
