"""Jitted msgpack for the daemon's hot paths: intake of single readings, their predictions.

A daemon fed single readings spends more time decoding msgpack maps in Python (~2.7 us a frame on
the 2-core machine of bench/README.md) than stepping them. `parse_single_readings` reads the
frames of a whole pass in one call, but only frames in the shape producers send: a map of at most
15 keys, keys as short strings, "stream" a non-empty string of at most 256 bytes without a NUL,
"values" n_inputs ints and floats (or float32 bytes) within float32 range, "seq" a non-negative
int, "ts" a finite number, "reset" / "end" bools, nil for any optional field, and other keys with
scalar values (ignored). Any other frame, valid or not, stops the call: the Python decoder then
handles the pass and gives the same readings, or says what is wrong (`engine.protocol`). So this
kernel accepts a subset of what the Python decoder accepts and never rejects anything itself.

msgpack is big-endian; floats are rebuilt through `scratch` (8 bytes) and its float64 and
float32 views, since a kernel cannot reinterpret bits any other way without allocating.
"""

from __future__ import annotations

import numpy as np

from engine.kernels._jit import inline_kernel, kernel

MAX_SEQ = 2**63 - 2  # engine.protocol.MAX_SEQ
MAX_ID_BYTES = 256  # engine.protocol.MAX_STREAM_ID_BYTES
FLOAT32_MAX = float(np.finfo(np.float32).max)
NOT_PLAIN = -1

# The fields, in the order of their bits in a frame's `seen` mask; _OTHER: any other key.
_STREAM, _VALUES, _SEQ, _TS, _RESET, _END, _OTHER = 0, 1, 2, 3, 4, 5, 6
_KEY_BYTES = np.frombuffer(b"streamvaluesseqtsresetend", np.uint8)
_KEY_STARTS = np.array([0, 6, 12, 15, 17, 22, 25], np.int64)  # field f: bytes [f, f + 1)
# A prediction's keys as msgpack fixstr: stream, seq, ts, prediction, score.
_PREDICTION_KEYS = np.frombuffer(b"\xa6stream\xa3seq\xa2ts\xaaprediction\xa5score", np.uint8)
_PREDICTION_KEY_ENDS = np.array([7, 11, 14, 25, 31], np.int64)


@inline_kernel
def _big_endian(buf, p, n):
    """The n-byte unsigned big-endian integer at buf[p:p + n], as uint64."""
    v = np.uint64(0)
    for k in range(n):
        v = (v << np.uint64(8)) | np.uint64(buf[p + k])
    return v


@inline_kernel
def _key(buf, p, n):
    """Which field the n-byte ASCII key at buf[p] names (_OTHER if none, -1 if not ASCII)."""
    for k in range(n):
        if buf[p + k] >= 0x80:
            return -1  # valid UTF-8 or not, the Python decoder decides
    for field in range(_KEY_STARTS.size - 1):
        first = _KEY_STARTS[field]
        if _KEY_STARTS[field + 1] - first == n:
            k = 0
            while k < n and buf[p + k] == _KEY_BYTES[first + k]:
                k += 1
            if k == n:
                return field
    return _OTHER


@inline_kernel
def _number(buf, p, end, scratch, as_f64, as_f32):
    """Decode the int or float at buf[p]: (value as float64, bytes used, is_int); 0 bytes if
    it is not a number (or runs past `end`)."""
    b = np.int64(buf[p])
    if b <= 0x7F:
        return float(b), 1, True
    if b >= 0xE0:
        return float(b - 256), 1, True
    if b == 0xCB or b == 0xCA:
        size = 8 if b == 0xCB else 4
        if p + 1 + size > end:
            return 0.0, 0, False
        for k in range(size):
            scratch[k] = buf[p + size - k]  # big-endian to the host's little-endian
        return (as_f64[0] if size == 8 else float(as_f32[0])), 1 + size, False
    if 0xCC <= b <= 0xCF:  # uint 8/16/32/64
        size = np.int64(1) << (b - 0xCC)
        if p + 1 + size > end:
            return 0.0, 0, False
        return float(_big_endian(buf, p + 1, size)), 1 + size, True
    if 0xD0 <= b <= 0xD3:  # int 8/16/32/64
        size = np.int64(1) << (b - 0xD0)
        if p + 1 + size > end:
            return 0.0, 0, False
        u = _big_endian(buf, p + 1, size)
        bits = 8 * size
        if bits < 64 and u >= (np.uint64(1) << np.uint64(bits - 1)):
            return float(np.int64(u) - (np.int64(1) << np.int64(bits))), 1 + size, True
        return float(np.int64(u)), 1 + size, True
    return 0.0, 0, False


@inline_kernel
def _seq(buf, p, end):
    """Decode a seq at buf[p]: (seq, bytes used); 0 bytes if not an int in 0..MAX_SEQ."""
    b = np.int64(buf[p])
    if b <= 0x7F:
        return b, 1
    if 0xCC <= b <= 0xCF or 0xD0 <= b <= 0xD3:
        signed = b >= 0xD0
        size = np.int64(1) << (b - (0xD0 if signed else 0xCC))
        if p + 1 + size > end:
            return np.int64(0), 0
        u = _big_endian(buf, p + 1, size)
        if signed and u >= (np.uint64(1) << np.uint64(8 * size - 1)):
            return np.int64(0), 0  # negative
        if u > np.uint64(MAX_SEQ):
            return np.int64(0), 0
        return np.int64(u), 1 + size
    return np.int64(0), 0


@kernel
def parse_single_readings(
    buf, starts, max_frame_bytes, values, seq, ts, reset, end, ids, scratch, as_f64, as_f32
):
    """Decode frame i = buf[starts[i]:starts[i + 1]] into row i of values, seq, ts, reset, end.

    Stream ids go to `ids` in frame order, each followed by a 0 byte. Return the bytes of `ids`
    used, or NOT_PLAIN as soon as a frame is not a plain single reading (module docstring).
    seq is -1 and ts NaN where a reading has none.
    """
    n_inputs = values.shape[1]
    used = 0
    for i in range(starts.shape[0] - 1):
        p = starts[i]
        stop = starts[i + 1]
        if stop - p > max_frame_bytes or stop <= p:
            return NOT_PLAIN
        b = np.int64(buf[p])
        if 0x80 <= b <= 0x8F:
            n_keys = b & 0x0F
            p += 1
        elif b == 0xDE and p + 3 <= stop:
            n_keys = np.int64(_big_endian(buf, p + 1, 2))
            p += 3
            if n_keys > 15:
                return NOT_PLAIN
        else:
            return NOT_PLAIN
        seen = 0
        id_len = 0
        seq[i] = -1
        ts[i] = np.nan
        reset[i] = False
        end[i] = False
        for _ in range(n_keys):
            if p >= stop or buf[p] & 0xE0 != 0xA0:  # keys: fixstr only
                return NOT_PLAIN
            key_len = np.int64(buf[p]) & 0x1F
            p += 1
            if p + key_len >= stop:  # the value needs at least one byte
                return NOT_PLAIN
            field = _key(buf, p, key_len)
            if field < 0 or (field != _OTHER and seen & (1 << field)):
                return NOT_PLAIN  # duplicate keys: msgpack keeps the last, the slow path too
            seen |= 1 << field
            p += key_len
            b = np.int64(buf[p])
            if b == 0xC0 and field != _STREAM and field != _VALUES:
                p += 1  # nil: the field's default
            elif field == _STREAM:
                if 0xA0 <= b <= 0xBF:
                    n, head = b & 0x1F, 1
                elif b == 0xD9 and p + 2 <= stop:
                    n, head = np.int64(buf[p + 1]), 2
                elif b == 0xDA and p + 3 <= stop:
                    n, head = np.int64(_big_endian(buf, p + 1, 2)), 3
                else:
                    return NOT_PLAIN
                p += head
                if n == 0 or n > MAX_ID_BYTES or p + n > stop:
                    return NOT_PLAIN
                for k in range(n):
                    c = buf[p + k]
                    if c == 0:
                        return NOT_PLAIN  # 0 separates ids in `ids`
                    ids[used + k] = c
                id_len = n
                p += n
            elif field == _VALUES:
                if 0x90 <= b <= 0x9F:
                    n, head = b & 0x0F, 1
                elif b == 0xDC and p + 3 <= stop:
                    n, head = np.int64(_big_endian(buf, p + 1, 2)), 3
                elif b == 0xC4 and p + 2 <= stop:  # bin 8: little-endian float32 bytes
                    if np.int64(buf[p + 1]) != 4 * n_inputs or p + 2 + 4 * n_inputs > stop:
                        return NOT_PLAIN
                    p += 2
                    for j in range(n_inputs):
                        for k in range(4):
                            scratch[k] = buf[p + 4 * j + k]
                        v = as_f32[0]
                        if not np.isfinite(v):
                            return NOT_PLAIN
                        values[i, j] = v
                    p += 4 * n_inputs
                    continue
                else:
                    return NOT_PLAIN
                if n != n_inputs:
                    return NOT_PLAIN
                p += head
                for j in range(n_inputs):
                    if p >= stop:
                        return NOT_PLAIN
                    v, size, _ = _number(buf, p, stop, scratch, as_f64, as_f32)
                    if size == 0 or not abs(v) <= FLOAT32_MAX:  # also refuses NaN
                        return NOT_PLAIN
                    values[i, j] = np.float32(v)
                    p += size
            elif field == _SEQ:
                s, size = _seq(buf, p, stop)
                if size == 0:
                    return NOT_PLAIN
                seq[i] = s
                p += size
            elif field == _TS:
                v, size, _ = _number(buf, p, stop, scratch, as_f64, as_f32)
                if size == 0 or not np.isfinite(v):
                    return NOT_PLAIN
                ts[i] = v
                p += size
            elif field == _RESET or field == _END:
                if b != 0xC2 and b != 0xC3:
                    return NOT_PLAIN
                if field == _RESET:
                    reset[i] = b == 0xC3
                else:
                    end[i] = b == 0xC3
                p += 1
            else:  # another key: skipped when its value is a scalar
                if b == 0xC2 or b == 0xC3:
                    p += 1
                else:
                    _, size, _ = _number(buf, p, stop, scratch, as_f64, as_f32)
                    if size == 0:
                        return NOT_PLAIN
                    p += size
        if p != stop or seen & 3 != 3:  # trailing bytes, or no stream or values
            return NOT_PLAIN
        ids[used + id_len] = 0
        used += id_len + 1
    return used


@inline_kernel
def _put_big_endian(out, q, v, n):
    """Write the n low bytes of the uint64 v at out[q], big-endian; return q + n."""
    for k in range(n):
        out[q + k] = np.uint8((v >> np.uint64(8 * (n - 1 - k))) & np.uint64(0xFF))
    return q + n


@inline_kernel
def _put_float(out, q, v, scratch, as_f64):
    """Write v as msgpack float64 (what msgpack-python makes of a Python float)."""
    as_f64[0] = v
    out[q] = 0xCB
    for k in range(8):
        out[q + 1 + k] = scratch[7 - k]
    return q + 9


@inline_kernel
def _put_float_or_nil(out, q, v, scratch, as_f64):
    if np.isnan(v):
        out[q] = 0xC0
        return q + 1
    return _put_float(out, q, v, scratch, as_f64)


@inline_kernel
def _put_bytes(out, q, src, first, n):
    """Copy src[first:first + n] to out[q]; return q + n."""
    for k in range(n):
        out[q + k] = src[first + k]
    return q + n


@inline_kernel
def _put_key(out, q, field):
    first = _PREDICTION_KEY_ENDS[field - 1]
    return _put_bytes(out, q, _PREDICTION_KEYS, first, _PREDICTION_KEY_ENDS[field] - first)


@kernel
def pack_predictions(ids, seq, ts, outputs, scores, scored, prefix, out, bounds, scratch, as_f64):
    """Write each row's prediction topic and payload into `out`, as `protocol.encode_prediction`.

    Row i's stream id is the i-th run of `ids` between 0 bytes (one after each id), seq[i] is
    its seq (-1: nil), ts[i] its ts (NaN: nil), outputs[i] its prediction and, when `scored`,
    scores[i] its score (NaN: nil). Topic i (`prefix` + id) is out[bounds[2i]:bounds[2i + 1]],
    its payload out[bounds[2i + 1]:bounds[2i + 2]]. Return the bytes used; `out` must hold
    2 * len(ids) + rows * (len(prefix) + 80 + 9 * n_outputs).
    """
    n, n_outputs = outputs.shape
    q = 0
    first = 0
    for i in range(n):
        n_id = 0
        while ids[first + n_id] != 0:
            n_id += 1
        bounds[2 * i] = q
        q = _put_bytes(out, q, prefix, 0, prefix.shape[0])
        q = _put_bytes(out, q, ids, first, n_id)
        bounds[2 * i + 1] = q
        out[q] = 0x85  # a map of 5, keys in encode_prediction's order
        q = _put_bytes(out, q + 1, _PREDICTION_KEYS, 0, _PREDICTION_KEY_ENDS[0])
        if n_id < 32:
            out[q] = 0xA0 | n_id
            q += 1
        elif n_id < 256:
            out[q] = 0xD9
            q = _put_big_endian(out, q + 1, np.uint64(n_id), 1)
        else:
            out[q] = 0xDA
            q = _put_big_endian(out, q + 1, np.uint64(n_id), 2)
        q = _put_bytes(out, q, ids, first, n_id)
        first += n_id + 1

        q = _put_key(out, q, 1)
        s = seq[i]
        if s < 0:
            out[q] = 0xC0
            q += 1
        elif s < 128:
            out[q] = s
            q += 1
        else:  # msgpack-python's choice: the narrowest unsigned int
            size = 1 if s < 256 else 2 if s < 65536 else 4 if s < 4294967296 else 8
            out[q] = 0xCC if size == 1 else 0xCD if size == 2 else 0xCE if size == 4 else 0xCF
            q = _put_big_endian(out, q + 1, np.uint64(s), size)

        q = _put_key(out, q, 2)
        q = _put_float_or_nil(out, q, ts[i], scratch, as_f64)

        q = _put_key(out, q, 3)
        if n_outputs < 16:
            out[q] = 0x90 | n_outputs
            q += 1
        else:
            out[q] = 0xDC
            q = _put_big_endian(out, q + 1, np.uint64(n_outputs), 2)
        for j in range(n_outputs):
            q = _put_float(out, q, np.float64(outputs[i, j]), scratch, as_f64)

        q = _put_key(out, q, 4)
        q = _put_float_or_nil(out, q, scores[i] if scored else np.nan, scratch, as_f64)
    bounds[2 * n] = q
    return q
