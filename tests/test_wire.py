"""The jitted single-reading decoder (`kernels.wire`) against row-by-row validation.

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
from tests.test_protocol_fastpaths import (
    GOOD_IDS,
    N_INPUTS,
    OPTIONAL_FIELDS,
    _good_id,
    _good_value,
    _maybe_bad,
    assert_same_as_reference,
    pack,
    single,
)


def jitted(frames: list[bytes]) -> P.Readings | None:
    return P._plain_single_readings(frames, N_INPUTS, P.DEFAULT_MAX_FRAME_BYTES)


def assert_jitted_and_right(frames: list[bytes]) -> P.Readings:
    assert jitted(frames) is not None, "plain single readings should take the jitted path"
    return assert_same_as_reference(frames)


def assert_turned_down_and_right(frames: list[bytes]) -> None:
    assert jitted(frames) is None
    assert_same_as_reference(frames)


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


def m_array(items: list[bytes], wide: bool) -> bytes:
    head = b"\xdc" + struct.pack(">H", len(items)) if wide else bytes([0x90 | len(items)])
    return head + b"".join(items)


def m_map(pairs: list[tuple[bytes, bytes]], wide: bool) -> bytes:
    head = b"\xde" + struct.pack(">H", len(pairs)) if wide else bytes([0x80 | len(pairs)])
    return head + b"".join(k + v for k, v in pairs)


def key(name: str) -> bytes:
    return m_str(name, 0)


# ----------------------------------------------------------------------------- examples


def test_what_producers_send_takes_the_jitted_path():
    frames = [P.encode_reading(s, [1.5, -2.0, 3e5], seq=i + 1, ts=1.7e9 + i) for i, s in
              enumerate(GOOD_IDS)]  # fmt: skip
    frames.append(P.encode_reading("bare", [0.0, 1.0, 2.0]))
    readings = assert_jitted_and_right(frames)
    assert readings.streams == [*GOOD_IDS, "bare"]


def test_plain_fields_in_every_form_match_the_reference():
    frames = [
        single("a", seq=1, ts=1.5),
        single("b", [0, 1, 2], seq=2, ts=7),  # int values and an int ts
        single("a", seq=2, reset=True, end=False),
        single("c", [3.4028234663852886e38, -1.0, 0.0]),  # float32's largest is accepted
        single("d", np.arange(N_INPUTS, dtype="<f4").tobytes(), seq=0),  # float32 bytes
        single("z" * 256, ts=None, seq=None, reset=None, end=None),
        single("e", [-(2**63), 2**64 - 1, -33], seq=P.MAX_SEQ, ts=-(2**63)),
        single("f", later_version_field=3, note=None, flag=True, weight=0.5),  # ignored keys
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
        b"\xdf\x00\x00\x00\x02"
        + key("stream")
        + m_str("a", 0)
        + key("values")
        + b"\x93\x01\x02\x03",
        b"\x82"
        + key("stream")
        + m_str("a", 0)
        + key("values")
        + b"\xdd\x00\x00\x00\x03\x01\x02\x03",
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
    assert_turned_down_and_right([single("ok", seq=1), odd, single("ok", seq=2)])


def test_a_frame_over_the_size_limit_is_left_to_the_python_decoder():
    frame = single("a")
    assert P._plain_single_readings([frame], N_INPUTS, len(frame)) is not None
    assert P._plain_single_readings([frame], N_INPUTS, len(frame) - 1) is None


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
        values = m_array(items, wide=draw(st.booleans()))
    else:
        row = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                            min_size=N_INPUTS, max_size=N_INPUTS))  # fmt: skip
        values = b"\xc4" + bytes([4 * N_INPUTS]) + np.array(row, "<f4").tobytes()
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
    return m_map([pairs[i] for i in order], wide=draw(st.booleans()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hand_encoded(), min_size=1, max_size=8))
def test_every_encoding_of_a_valid_reading_decodes_like_the_reference(frames):
    assert_jitted_and_right(frames)


@st.composite
def single_frames(draw):
    """Single readings as `msgpack.packb` writes them, a share of them with bad fields."""
    rate = draw(st.sampled_from([0.0, 0.0, 0.02, 0.3]))
    from tests.test_protocol_fastpaths import _bad_id, _bad_value

    out = []
    for _ in range(draw(st.integers(1, 8))):
        fields = {
            "stream": _maybe_bad(draw, _good_id, _bad_id, rate),
            "values": [_maybe_bad(draw, _good_value, _bad_value, rate) for _ in range(N_INPUTS)],
        }
        for name, good, bad in OPTIONAL_FIELDS:
            if draw(st.booleans()):
                fields[name] = _maybe_bad(draw, good, bad, rate)
        out.append(pack(fields))
    return out


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
