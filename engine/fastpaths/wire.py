"""Jitted msgpack for the daemon's hot paths: intake, and the predictions it publishes.

Decoding msgpack maps in Python cost a daemon fed single readings ~2.7 us a frame on the 2-core
machine of bench/README.md, more than stepping them, and a 1024-row batch ~140 us.
`parse_readings` reads the frames of a whole pass in one call, but only frames in the shape
producers send ("plain"): a map with string keys of at most 31 bytes; either one reading
("stream": a string, "values": n_inputs ints and floats within float32 range, or their float32
bytes; "seq" an int from 0 to MAX_SEQ, "ts" a finite number, "reset" / "end" bools) or a batch
("streams": a list of strings, "values": float32 bytes of a row per stream, "seq" a list, "ts",
"reset" and "end" one value or a list, lists of one entry per stream, nil entries for none).
Stream ids are 1 to 256 bytes without a NUL; nil stands for a missing optional field; other
keys with scalar values are ignored. Any other frame, valid or not, stops the call: the Python
decoder then handles the pass and gives the same readings, or says what is wrong
(`engine.protocol`). So this kernel accepts a subset of what the Python decoder accepts and
never rejects anything itself.

`pack_predictions` writes the topic and payload of every prediction of a pass, and
`pack_seq_array` a batch publication's seq column, byte for byte as msgpack-python would;
`pack_readings` single-reading frames, as a load generator sends them.
msgpack is big-endian; floats are read and written as their bits (a scalar `.view`)."""

from __future__ import annotations

import numpy as np

from engine.fastpaths._bytes import matches
from engine.kernels._jit import inline_kernel, kernel
from engine.protocol import MAX_SEQ, MAX_STREAM_ID_BYTES

FLOAT32_MAX = float(np.finfo(np.float32).max)
NOT_PLAIN = -1

# The fields, in the order of their bits in a frame's `seen` mask; _OTHER: any other key.
_STREAM, _VALUES, _SEQ, _TS, _RESET, _END, _STREAMS, _OTHER = 0, 1, 2, 3, 4, 5, 6, 7
_ABSENT, _ONE_VALUE = -1, -2  # how a frame gave seq, ts, reset or end, besides a list's length
_KEY_BYTES = np.frombuffer(b"streamvaluesseqtsresetendstreams", np.uint8)
_KEY_STARTS = np.array([0, 6, 12, 15, 17, 22, 25, 32], np.int64)  # field f: [f, f + 1)
# A prediction's keys as msgpack fixstr: stream, seq, ts, prediction, score.
_PREDICTION_KEYS = np.frombuffer(b"\xa6stream\xa3seq\xa2ts\xaaprediction\xa5score", np.uint8)
_PREDICTION_KEY_ENDS = np.array([7, 11, 14, 25, 31], np.int64)
# A single reading's keys, in `protocol.encode_reading`'s order: stream, values, seq, ts.
_READING_KEYS = np.frombuffer(b"\xa6stream\xa6values\xa3seq\xa2ts", np.uint8)
_READING_KEY_ENDS = np.array([7, 14, 18, 21], np.int64)
READING_BYTES_BEYOND_ID_AND_VALUES = 46  # map, keys, str and array headers, seq and ts


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
def _number(buf, p, end):
    """Decode the int or float at buf[p]: (value as float64, bytes used); 0 bytes if it is not
    a number (or runs past `end`)."""
    b = np.int64(buf[p])
    if b <= 0x7F:
        return float(b), 1
    if b >= 0xE0:
        return float(b - 256), 1
    if b == 0xCB:
        if p + 9 > end:
            return 0.0, 0
        return np.uint64(_big_endian(buf, p + 1, 8)).view(np.float64), 9
    if b == 0xCA:
        if p + 5 > end:
            return 0.0, 0
        return float(np.uint32(_big_endian(buf, p + 1, 4)).view(np.float32)), 5
    if 0xCC <= b <= 0xCF:  # uint 8/16/32/64
        size = np.int64(1) << (b - 0xCC)
        if p + 1 + size > end:
            return 0.0, 0
        return float(_big_endian(buf, p + 1, size)), 1 + size
    if 0xD0 <= b <= 0xD3:  # int 8/16/32/64
        size = np.int64(1) << (b - 0xD0)
        if p + 1 + size > end:
            return 0.0, 0
        u = _big_endian(buf, p + 1, size)
        bits = 8 * size
        if bits < 64 and u >= (np.uint64(1) << np.uint64(bits - 1)):
            return float(np.int64(u) - (np.int64(1) << np.int64(bits))), 1 + size
        return float(np.int64(u)), 1 + size
    return 0.0, 0


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


@inline_kernel
def _container(buf, p, stop, fix, fix_mask, code16):
    """Length and header size of the fix*, *16 or *32 container at buf[p] (0 size: not one)."""
    b = np.int64(buf[p])
    if fix <= b <= fix + fix_mask:
        return b & fix_mask, 1
    if b == code16 and p + 3 <= stop:
        return np.int64(_big_endian(buf, p + 1, 2)), 3
    if b == code16 + 1 and p + 5 <= stop:
        return np.int64(_big_endian(buf, p + 1, 4)), 5
    return 0, 0


@inline_kernel
def _str_header(buf, p, stop):
    """Length and header size of the fixstr, str 8 or str 16 at buf[p] (0 header: not one)."""
    b = np.int64(buf[p])
    if 0xA0 <= b <= 0xBF:
        return b & 0x1F, 1
    if b == 0xD9 and p + 2 <= stop:
        return np.int64(buf[p + 1]), 2
    if b == 0xDA and p + 3 <= stop:
        return np.int64(_big_endian(buf, p + 1, 2)), 3
    return np.int64(0), 0


@inline_kernel
def _stream_id(buf, p, stop, ids, used):
    """Copy the plain stream id at buf[p] to ids[used:] with its 0; (new p, new used) or -1."""
    n, head = _str_header(buf, p, stop)
    if head == 0:
        return -1, used
    p += head
    if n == 0 or n > MAX_STREAM_ID_BYTES or p + n > stop:
        return -1, used
    for k in range(n):
        c = buf[p + k]
        if c == 0:
            return -1, used  # 0 separates ids in `ids`
        ids[used + k] = c
    ids[used + n] = 0
    return p + n, used + n + 1


@inline_kernel
def _float32_rows(buf, p, stop, row0, values):
    """Copy the bin of whole little-endian float32 rows at buf[p] to values[row0:], all finite.

    Return (new p, rows) or (-1, 0).
    """
    b = np.int64(buf[p])
    if not 0xC4 <= b <= 0xC6:
        return -1, 0
    head = 1 + (1 << (b - 0xC4))
    if p + head > stop:
        return -1, 0
    n = np.int64(_big_endian(buf, p + 1, head - 1))
    p += head
    n_inputs = values.shape[1]
    width = 4 * n_inputs
    rows = n // width
    if p + n > stop or rows * width != n or row0 + rows > values.shape[0]:
        return -1, 0
    for r in range(rows):
        for j in range(n_inputs):
            little_endian = np.uint64(buf[p]) | np.uint64(buf[p + 1]) << np.uint64(8)
            little_endian |= np.uint64(buf[p + 2]) << np.uint64(16)
            little_endian |= np.uint64(buf[p + 3]) << np.uint64(24)
            v = np.uint32(little_endian).view(np.float32)
            if not np.isfinite(v):
                return -1, 0
            values[row0 + r, j] = v
            p += 4
    return p, rows


@inline_kernel
def _entry(field, buf, p, stop):
    """One non-nil seq, ts, reset or end value at buf[p]: (bytes, seq, ts, flag); 0 bytes if
    it is not a plain one."""
    if field == _SEQ:
        s, size = _seq(buf, p, stop)
        return size, s, np.nan, False
    if field == _TS:
        v, size = _number(buf, p, stop)
        if not np.isfinite(v):
            size = 0
        return size, np.int64(-1), v, False
    b = buf[p]
    return (1 if b == 0xC2 or b == 0xC3 else 0), np.int64(-1), np.nan, b == 0xC3


@inline_kernel
def _set_row(field, r, s, v, flag, seq, ts, reset, end):
    """Write one row's seq, ts, reset or end (whichever `field` is)."""
    if field == _SEQ:
        seq[r] = s
    elif field == _TS:
        ts[r] = v
    elif field == _RESET:
        reset[r] = flag
    else:
        end[r] = flag


@kernel
def parse_readings(buf, starts, max_frame_bytes, values, seq, ts, reset, end, ids):
    """Decode the readings of frame i = buf[starts[i]:starts[i + 1]], in frame and row order.

    Rows go to values, seq (-1: none), ts (NaN: none), reset and end, stream ids to `ids`,
    each followed by a 0 byte. Return (rows, bytes of `ids` used), or (NOT_PLAIN, 0) as soon
    as a frame is not plain (module docstring) or its rows would not fit the arrays.
    """
    n_inputs = values.shape[1]
    capacity = values.shape[0]
    rows = 0
    used = 0
    for i in range(starts.shape[0] - 1):
        p = starts[i]
        stop = starts[i + 1]
        if stop - p > max_frame_bytes or stop <= p:
            return NOT_PLAIN, 0
        n_keys, head = _container(buf, p, stop, 0x80, 0x0F, 0xDE)
        if head == 0:
            return NOT_PLAIN, 0
        p += head
        seen = 0
        n_rows = -1  # 1 for "stream", the list's length for "streams"
        n_values = -1
        values_are_bytes = False
        # Per column: a list's length, _ONE_VALUE (in the frame's first row) or _ABSENT.
        seq_list = ts_list = reset_list = end_list = _ABSENT
        for _ in range(n_keys):
            if p >= stop or buf[p] & 0xE0 != 0xA0:  # keys: fixstr only
                return NOT_PLAIN, 0
            key_len = np.int64(buf[p]) & 0x1F
            p += 1
            if p + key_len >= stop:  # the value needs at least one byte
                return NOT_PLAIN, 0
            field = _key(buf, p, key_len)
            if field < 0:
                return NOT_PLAIN, 0
            if field != _OTHER:
                if seen & (1 << field):
                    return NOT_PLAIN, 0  # msgpack keeps a repeated key's last value
                seen |= 1 << field
            p += key_len
            b = np.int64(buf[p])
            if field == _OTHER:  # ignored; skipped when its value is a scalar
                if b == 0xC0 or b == 0xC2 or b == 0xC3:
                    p += 1
                    continue
                _, size = _number(buf, p, stop)
                if size == 0:
                    return NOT_PLAIN, 0
                p += size
            elif field == _STREAM:
                p, used = _stream_id(buf, p, stop, ids, used)
                if p < 0:
                    return NOT_PLAIN, 0
                n_rows = 1
            elif field == _STREAMS:
                n_rows, head = _container(buf, p, stop, 0x90, 0x0F, 0xDC)
                if head == 0 or rows + n_rows > capacity:
                    return NOT_PLAIN, 0
                p += head
                for _ in range(n_rows):
                    if p >= stop:
                        return NOT_PLAIN, 0
                    p, used = _stream_id(buf, p, stop, ids, used)
                    if p < 0:
                        return NOT_PLAIN, 0
            elif field == _VALUES:
                if 0xC4 <= b <= 0xC6:
                    p, n_values = _float32_rows(buf, p, stop, rows, values)
                    if p < 0:
                        return NOT_PLAIN, 0
                    values_are_bytes = True
                    continue
                # One reading's numbers (a batch's list of rows is left to the slow path).
                n, head = _container(buf, p, stop, 0x90, 0x0F, 0xDC)
                if head == 0 or n != n_inputs or rows >= capacity:
                    return NOT_PLAIN, 0
                p += head
                for j in range(n_inputs):
                    if p >= stop:
                        return NOT_PLAIN, 0
                    v, size = _number(buf, p, stop)
                    if size == 0 or not abs(v) <= FLOAT32_MAX:  # also refuses NaN
                        return NOT_PLAIN, 0
                    values[rows, j] = np.float32(v)
                    p += size
                n_values = 1
            elif b == 0xC0:  # seq, ts, reset or end given as nil: the default
                p += 1
            else:  # one value, or a list with an entry per row (nil: that row has none)
                n, head = _container(buf, p, stop, 0x90, 0x0F, 0xDC)
                count = n if head > 0 else 1
                if rows + count > capacity:
                    return NOT_PLAIN, 0
                p += head
                for r in range(rows, rows + count):
                    if p >= stop:
                        return NOT_PLAIN, 0
                    if head > 0 and buf[p] == 0xC0:
                        size, s, v, flag = 1, np.int64(-1), np.nan, False
                    else:
                        size, s, v, flag = _entry(field, buf, p, stop)
                        if size == 0:
                            return NOT_PLAIN, 0
                    p += size
                    _set_row(field, r, s, v, flag, seq, ts, reset, end)
                length = n if head > 0 else _ONE_VALUE
                if field == _SEQ:
                    seq_list = length
                elif field == _TS:
                    ts_list = length
                elif field == _RESET:
                    reset_list = length
                else:
                    end_list = length
        if p != stop or n_rows < 0 or n_values != n_rows or rows + n_rows > capacity:
            return NOT_PLAIN, 0  # trailing bytes, no stream(s), or not one values row per row
        if seen & (1 << _STREAMS):
            # A batch: float32 bytes, its seqs as a list (a ts or flag may be one for all),
            # and every list as long as "streams". Both "stream" and "streams": slow path.
            if seen & (1 << _STREAM) or not values_are_bytes or seq_list == _ONE_VALUE:
                return NOT_PLAIN, 0
            for length in (seq_list, ts_list, reset_list, end_list):
                if length >= 0 and length != n_rows:
                    return NOT_PLAIN, 0
        elif seq_list >= 0 or ts_list >= 0 or reset_list >= 0 or end_list >= 0:
            return NOT_PLAIN, 0  # one reading with a list where a value belongs
        for r in range(rows, rows + n_rows):  # defaults, and one value for every row
            if seq_list < 0:
                seq[r] = -1 if seq_list == _ABSENT else seq[rows]
            if ts_list < 0:
                ts[r] = np.nan if ts_list == _ABSENT else ts[rows]
            if reset_list < 0:
                reset[r] = False if reset_list == _ABSENT else reset[rows]
            if end_list < 0:
                end[r] = False if end_list == _ABSENT else end[rows]
        rows += n_rows
    return rows, used


@inline_kernel
def _put_big_endian(out, q, v, n):
    """Write the n low bytes of the uint64 v at out[q], big-endian; return q + n."""
    for k in range(n):
        out[q + k] = np.uint8((v >> np.uint64(8 * (n - 1 - k))) & np.uint64(0xFF))
    return q + n


@inline_kernel
def _put_float(out, q, v):
    """Write v as msgpack float64 (what msgpack-python makes of a Python float)."""
    out[q] = 0xCB
    return _put_big_endian(out, q + 1, np.float64(v).view(np.uint64), 8)


@inline_kernel
def _put_float_or_nil(out, q, v):
    if np.isnan(v):
        out[q] = 0xC0
        return q + 1
    return _put_float(out, q, v)


@inline_kernel
def _put_bytes(out, q, src, first, n):
    """Copy src[first:first + n] to out[q]; return q + n."""
    for k in range(n):
        out[q + k] = src[first + k]
    return q + n


@inline_kernel
def _put_key(out, q, keys, key_ends, field):
    """Copy key number `field` of `keys` (msgpack fixstr, key i ending at key_ends[i])."""
    first = 0 if field == 0 else key_ends[field - 1]
    return _put_bytes(out, q, keys, first, key_ends[field] - first)


@kernel
def pack_predictions(ids, seq, ts, outputs, scores, scored, prefix, out, bounds):
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
        n_id = _id_length(ids, first)
        bounds[2 * i] = q
        q = _put_bytes(out, q, prefix, 0, prefix.shape[0])
        q = _put_bytes(out, q, ids, first, n_id)
        bounds[2 * i + 1] = q
        out[q] = 0x85  # a map of 5, keys in encode_prediction's order
        q = _put_key(out, q + 1, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS, 0)
        q = _put_str_header(out, q, n_id)
        q = _put_bytes(out, q, ids, first, n_id)
        first += n_id + 1

        q = _put_key(out, q, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS, 1)
        if seq[i] < 0:
            out[q] = 0xC0
            q += 1
        else:
            q = _put_uint(out, q, seq[i])

        q = _put_key(out, q, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS, 2)
        q = _put_float_or_nil(out, q, ts[i])

        q = _put_key(out, q, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS, 3)
        q = _put_array_header(out, q, n_outputs)
        for j in range(n_outputs):
            q = _put_float(out, q, np.float64(outputs[i, j]))

        q = _put_key(out, q, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS, 4)
        q = _put_float_or_nil(out, q, scores[i] if scored else np.nan)
    bounds[2 * n] = q
    return q


@inline_kernel
def _put_str_header(out, q, n):
    """The header of an n-byte str, in msgpack-python's choice of format."""
    if n < 32:
        out[q] = 0xA0 | n
        return q + 1
    if n < 256:
        out[q] = 0xD9
        return _put_big_endian(out, q + 1, np.uint64(n), 1)
    out[q] = 0xDA if n < 65536 else 0xDB
    return _put_big_endian(out, q + 1, np.uint64(n), 2 if n < 65536 else 4)


@inline_kernel
def _put_array_header(out, q, n):
    if n < 16:
        out[q] = 0x90 | n
        return q + 1
    out[q] = 0xDC if n < 65536 else 0xDD
    return _put_big_endian(out, q + 1, np.uint64(n), 2 if n < 65536 else 4)


@inline_kernel
def _put_uint(out, q, v):
    """Write the int v >= 0 in the narrowest msgpack format, as msgpack-python does."""
    if v < 128:
        out[q] = v
        return q + 1
    size = 1 if v < 256 else 2 if v < 65536 else 4 if v < 4294967296 else 8
    out[q] = 0xCC if size == 1 else 0xCD if size == 2 else 0xCE if size == 4 else 0xCF
    return _put_big_endian(out, q + 1, np.uint64(v), size)


@inline_kernel
def _id_length(ids, first):
    """Length of the stream id at ids[first], which ends at a 0 byte."""
    n = 0
    while ids[first + n] != 0:
        n += 1
    return n


@kernel
def pack_seq_array(seq, out):
    """Write seq (int64, -1 for nil) as a msgpack array into `out`; return the bytes used.

    Ints in the narrowest format, as msgpack-python writes them; `out` must hold
    5 + 9 * len(seq).
    """
    q = _put_array_header(out, 0, seq.shape[0])
    for i in range(seq.shape[0]):
        if seq[i] < 0:
            out[q] = 0xC0
            q += 1
        else:
            q = _put_uint(out, q, seq[i])
    return q


@kernel
def pack_str_array(ids, n, out):
    """Write the first n ids of `ids` (UTF-8, each followed by a 0 byte) as a msgpack array of
    str into `out`, as msgpack-python packs a list of str; return the bytes used. `out` must
    hold 5 + 3 * n + the ids' bytes."""
    q = _put_array_header(out, 0, n)
    first = 0
    for _ in range(n):
        length = _id_length(ids, first)
        q = _put_str_header(out, q, length)
        q = _put_bytes(out, q, ids, first, length)
        first += length + 1
    return q


@kernel
def pack_ts_array(ts, out):
    """Write ts (float64, NaN for nil) as a msgpack array of float64 into `out`; return the
    bytes used. `out` must hold 5 + 9 * len(ts)."""
    q = _put_array_header(out, 0, ts.shape[0])
    for i in range(ts.shape[0]):
        q = _put_float_or_nil(out, q, ts[i])
    return q


@kernel
def pack_readings(id_bytes, id_starts, last_seq, cursor, pool, first, ts, n, out, bounds):
    """Write the next n readings of a load generator into `out`, each one frame as
    `protocol.encode_reading` would: streams in turn from stream `cursor` (stream k's id is
    id_bytes[id_starts[k]:id_starts[k + 1]]; its seq is one past last_seq[k], which is
    updated), values the rows of `pool` in turn from row `first`, every reading stamped `ts`.
    A stream must not come twice (n <= the number of streams). Frame i is
    out[bounds[i]:bounds[i + 1]]; `out` must hold n * (the longest id +
    READING_BYTES_BEYOND_ID_AND_VALUES + 9 * n_inputs). Return (bytes used, sum of the seqs).
    """
    n_streams = last_seq.shape[0]
    n_inputs = pool.shape[1]
    seq_sum = 0
    q = 0
    for i in range(n):
        s = (cursor + i) % n_streams
        row = (first + i) % pool.shape[0]
        last_seq[s] += 1
        seq_sum += last_seq[s]
        bounds[i] = q
        out[q] = 0x84  # a map of 4
        q = _put_key(out, q + 1, _READING_KEYS, _READING_KEY_ENDS, 0)
        q = _put_str_header(out, q, id_starts[s + 1] - id_starts[s])
        q = _put_bytes(out, q, id_bytes, id_starts[s], id_starts[s + 1] - id_starts[s])
        q = _put_key(out, q, _READING_KEYS, _READING_KEY_ENDS, 1)
        q = _put_array_header(out, q, n_inputs)
        for j in range(n_inputs):
            q = _put_float(out, q, np.float64(pool[row, j]))
        q = _put_key(out, q, _READING_KEYS, _READING_KEY_ENDS, 2)
        q = _put_uint(out, q, last_seq[s])
        q = _put_key(out, q, _READING_KEYS, _READING_KEY_ENDS, 3)
        q = _put_float(out, q, ts)
    bounds[n] = q
    return q, seq_sum


@kernel
def read_prediction_stamps(buf, starts, first, n_frames, prefix, skip_id, seq, ts, count):
    """Read seq and ts of the [topic, payload] messages from frame `first` on, as a subscriber
    measuring delivery and latency needs them; return (frame index where it stopped, count).

    Message m is frames first + 2m and first + 2m + 1 of buf (bounds in `starts`). While a topic
    starts with `prefix` and its payload is laid out as `pack_predictions` writes it (a map of
    5: stream, seq an int or nil, ts a float64 or nil, ...), its seq (-1 for nil) and ts (NaN
    for nil) go to seq[count], ts[count] and count grows. It stops before any other message,
    one whose stream id equals `skip_id`, or when `seq` is full, for the caller to look at.
    """
    i = first
    n_prefix = prefix.shape[0]
    while i + 1 < n_frames and count < seq.shape[0]:
        topic, body, stop = starts[i], starts[i + 1], starts[i + 2]
        if not matches(buf, topic, body, prefix, 0, n_prefix):
            break
        p = body
        if p >= stop or buf[p] != 0x85:
            break
        p += 1
        if not matches(buf, p, stop, _PREDICTION_KEYS, 0, _PREDICTION_KEY_ENDS[0]):
            break
        p += _PREDICTION_KEY_ENDS[0]
        n_id, header = _str_header(buf, p, stop)
        if header == 0:
            break
        p += header
        if n_id == skip_id.shape[0] and matches(buf, p, stop, skip_id, 0, n_id):
            break
        p += n_id
        first_key = _PREDICTION_KEY_ENDS[0]
        if not matches(buf, p, stop, _PREDICTION_KEYS, first_key, 4):  # "\xa3seq"
            break
        p += 4
        if p < stop and buf[p] == 0xC0:
            s, used = np.int64(-1), 1
        else:
            s, used = _seq(buf, p, stop)
            if used == 0:
                break
        p += used
        if not matches(buf, p, stop, _PREDICTION_KEYS, _PREDICTION_KEY_ENDS[1], 3):  # "\xa2ts"
            break
        p += 3
        if p < stop and buf[p] == 0xC0:
            t = np.nan
        elif p + 9 <= stop and buf[p] == 0xCB:
            t = np.uint64(_big_endian(buf, p + 1, 8)).view(np.float64)
        else:
            break
        seq[count] = s
        ts[count] = t
        count += 1
        i += 2
    return i, count
