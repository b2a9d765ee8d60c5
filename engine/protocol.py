"""Wire format v1: msgpack messages between producers, the daemon and consumers.

Intake (producer PUSH -> daemon PULL), one message = one msgpack map, either a single reading::

    {"stream": str, "values": [float, ...], "seq": int?, "ts": float?, "reset": bool?, "end": bool?}

or a columnar batch of n rows::

    {"streams": [str] * n, "values": bytes | [[float, ...]] * n,
     "seq": [int] * n?, "ts": float | [float] * n?, "reset": [bool] * n?, "end": [bool] * n?}

`values` as bytes is little-endian float32, row-major, `n * n_inputs` values (the fast path); a
single reading may also carry its values as such bytes. A missing key or nil means "not given";
unknown keys are ignored so newer producers keep working with this decoder. Stream ids are non-empty
str of at most `MAX_STREAM_ID_BYTES` UTF-8 bytes. Values are finite numbers (int or float, never
bool) that fit float32. `seq` is an int >= 0, `ts` a finite number (seconds since the epoch by
convention). A batch-wide scalar `ts`, `reset` or `end` applies to every row.

Publication (daemon PUB -> consumer SUB) is multipart `[topic, payload]`:

- `pred.<stream>`: `{"stream", "seq", "ts", "prediction": [float, ...], "score": float | None}`
- `alert.<stream>`: `{"stream", "seq", "ts", "event": "open" | "close", "score", "value",
  "expected", "feature", "severity", ...}`; a close adds `"peak", "readings", "duration",
  "reason"`, and has nil reading fields when no reading closed it
- `error`: `{"reason", "detail", "stream"?, "row"?}`
- `batch.pred`: `{"streams": [...], "seq": [...], "ts": float | [...], "prediction": bytes,
  "n_outputs": int, "score": bytes}` where `prediction` is LE float32 row-major `(n, n_outputs)`
  and `score` LE float32 `(n,)` with NaN meaning "no score".

Floats in maps are encoded as msgpack float64 (the engine's float32 values widen exactly), and a NaN
score is published as nil. A SUB prefix is a prefix: `pred.pump-7` also matches `pred.pump-70`,
see `exact_subscription`.

Control (REQ -> daemon REP) is `{"cmd": str, ...}` answered by `{"ok": bool, ...}` with `"error"`
when not ok. Nothing here unpickles, and ext types (including msgpack timestamps) are refused.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from itertools import accumulate, chain, pairwise
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

NO_SEQ = -1  # Readings.seq of a reading sent without one (the engine's kernels.sequence.NO_SEQ)
MAX_SEQ = 2**63 - 2  # so seq + 1 fits int64
MAX_STREAM_ID_BYTES = 256
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

PREDICTION_PREFIX = b"pred."
_PREDICTION_PREFIX_BYTES = np.frombuffer(PREDICTION_PREFIX, np.uint8)
ALERT_PREFIX = b"alert."
ERROR_TOPIC = b"error"
BATCH_TOPIC = b"batch.pred"

_F32_LE = np.dtype("<f4")
_NUMBER_TYPES = (int, float)
_NUMBER_TYPESET = frozenset(_NUMBER_TYPES)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the engine computes in float32
_NAN = float("nan")
_INT_TYPESET = frozenset((int,))


class ProtocolError(ValueError):
    """A publication or control message that does not follow the wire format."""


class RejectReason(StrEnum):
    """Why an intake message (or one row of a batch) was dropped."""

    NOT_MSGPACK = "not_msgpack"
    NOT_A_MAP = "not_a_map"
    BAD_STREAM = "bad_stream"
    STREAM_TOO_LONG = "stream_too_long"
    BAD_VALUES = "bad_values"
    WRONG_LENGTH = "wrong_length"
    NON_FINITE = "non_finite"
    BAD_SEQ = "bad_seq"
    BAD_TS = "bad_ts"
    BAD_FLAG = "bad_flag"
    TOO_LARGE = "too_large"
    # Not produced by decode_ingest; reasons the daemon may publish for rows it drops later.
    DUPLICATE = "duplicate"  # seq not after the stream's last one
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


@dataclass
class Rejection:
    """One dropped message or batch row: why, a human-readable detail, and where."""

    reason: RejectReason
    detail: str
    stream: str | None = None
    row: int | None = None


class StreamIds(Sequence[str]):
    """The stream ids of a pass as str, made from the jitted decoder's id bytes on first use.

    The daemon finds known streams and packs predictions from the bytes, so a pass needs the
    strings only to admit a new stream or to name one in an error or alert; making them costs
    ~25 ns an id, 3% of a batch pass. The bytes must be valid UTF-8 (`_plain_readings` checks).
    """

    __slots__ = ("_ids", "_n", "_strs")

    def __init__(self, ids: np.ndarray, n: int) -> None:
        self._ids = ids  # n ids, each followed by a 0 byte
        self._n = n
        self._strs: list[str] | None = None

    def _decoded(self) -> list[str]:
        if self._strs is None:
            self._strs = self._ids[:-1].tobytes().decode("utf-8").split("\x00") if self._n else []
        return self._strs

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        return self._decoded()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        return self._decoded() == (list(other) if isinstance(other, StreamIds) else other)

    def __repr__(self) -> str:
        return repr(self._decoded())


@dataclass
class Readings:
    """Decoded intake, always columnar: row i is one reading of `streams[i]`."""

    streams: Sequence[str]  # a list, or the decoder's `StreamIds`
    values: np.ndarray  # (n, n_inputs) float32, C-contiguous
    seq: np.ndarray  # (n,) int64, NO_SEQ where the reading has none
    ts: np.ndarray  # (n,) float64, NaN where the reading has none
    reset: np.ndarray  # (n,) bool
    end: np.ndarray  # (n,) bool
    # The streams' UTF-8 ids, each followed by a 0 byte, when the jitted decoder gave them:
    # `StreamEngine.process` and the prediction packer use them instead of the strings.
    ids: np.ndarray | None = None
    _id_ends: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.streams)

    @classmethod
    def empty(cls, n_inputs: int) -> Readings:
        """Return zero readings of width `n_inputs`."""
        return cls(
            [],
            np.empty((0, n_inputs), np.float32),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.zeros(0, np.bool_),
            np.zeros(0, np.bool_),
        )

    @classmethod
    def concat(cls, parts: Sequence[Readings]) -> Readings:
        """Return the rows of `parts`, in order, as one Readings (at least one part)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            list(chain.from_iterable(p.streams for p in parts)),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.seq for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.reset for p in parts]),
            np.concatenate([p.end for p in parts]),
        )

    def take(self, rows: slice | np.ndarray) -> Readings:
        """Return rows `rows` (a slice, or row indices in order) as a new Readings.

        A run of consecutive rows keeps its ids: the daemon steps a big pass in runs of rows,
        and without them each run looked its streams up by their strings (~9% of a flat-out
        daemon's time with 1024-row batches).
        """
        ids = None
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1 and start < stop:
                ids = self._ids_of_run(start, stop)
            if ids is not None and isinstance(self.streams, StreamIds):
                streams: Sequence[str] = StreamIds(ids, stop - start)
            else:
                streams = self.streams[rows]
        else:
            streams = [self.streams[i] for i in rows.tolist()]
        return Readings(
            streams,
            np.ascontiguousarray(self.values[rows]),
            self.seq[rows],
            self.ts[rows],
            self.reset[rows],
            self.end[rows],
            ids,
        )

    def _ids_of_run(self, start: int, stop: int) -> np.ndarray | None:
        """The ids of rows start .. stop - 1 (at least one), None without ids."""
        if self.ids is None:
            return None
        if self._id_ends is None:
            self._id_ends = np.flatnonzero(self.ids == 0) + 1  # each id's end, its 0 included
        first = int(self._id_ends[start - 1]) if start else 0
        return self.ids[first : int(self._id_ends[stop - 1])]

    def seq_list(self) -> list[int | None]:
        """The seq column as sent: ints, None where a reading had none."""
        return _plain_column(self.seq, int)

    def ts_list(self) -> list[float | None]:
        """The ts column as sent: floats, None where a reading had none."""
        return _plain_column(self.ts, float)

    def seq_of(self, row: int) -> int | None:
        """Row `row`'s seq as sent: an int, or None."""
        seq = int(self.seq[row])
        return None if seq == NO_SEQ else seq

    def ts_of(self, row: int) -> float | None:
        """Row `row`'s ts as sent: a float, or None."""
        ts = float(self.ts[row])
        return None if ts != ts else ts  # NaN is not equal to itself


# --------------------------------------------------------------------------- msgpack plumbing


def _pack_default(obj: Any) -> Any:
    # numpy scalars and arrays show up in alert dicts and predictions; give msgpack plain values.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, StrEnum):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in an rnnstream message")


_local = threading.local()


def _packer() -> msgpack.Packer:
    # A Packer keeps an internal buffer, so share one per thread (daemon threads publish in
    # parallel) rather than one per module.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, default=_pack_default)
        _local.packer = packer
    return packer


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


def _unpack(frame: bytes) -> Any:
    # msgpack >= 1.0 already bounds every string, bin, array and map by the frame's own length,
    # decodes str as UTF-8 and refuses non-str map keys; ext types (msgpack's own timestamp
    # too, and so any pickled or custom object) are refused here. Passing those defaults again
    # cost ~20% of a small message's decoding.
    return msgpack.unpackb(frame, ext_hook=_refuse_ext, max_ext_len=0)


def _not_msgpack_detail(frame: bytes, exc: Exception) -> str:
    """Say why `frame` did not decode, naming the usual mistake: text sent instead of msgpack.

    msgpack's own messages are empty (FormatError) or about its internals ("unpack(b) received
    extra data." for a JSON object or a topic frame), which tells a producer nothing.
    """
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if _looks_like_text(frame):
        return (
            "the frame is text (JSON? a topic frame?), not msgpack: send one msgpack map per "
            f"frame ({why})"
        )
    return f"not valid msgpack ({why})"


def _looks_like_text(frame: bytes) -> bool:
    # The start is enough and bounds the cost; msgpack maps start with a non-ASCII byte.
    head = frame[:64]
    return (
        bool(head.strip())
        and head.isascii()
        and all(c.isprintable() or c.isspace() for c in head.decode("ascii"))
    )


# --------------------------------------------------------------------------- intake validation

# What a rejection's detail quotes of a value a producer sent: enough to recognise it. Quoted
# whole, a 16 MiB frame of one long string or list made an error publication and a log line of
# up to 64 MiB (a 1-byte int is quoted as "1, ", a NUL as "\x00").
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 40
_QUOTE.maxlist = _QUOTE.maxdict = 6


def _stream_problem(stream: Any) -> Rejection | None:
    if type(stream) is not str:
        if stream is None:
            return Rejection(RejectReason.BAD_STREAM, "missing 'stream'")
        return Rejection(
            RejectReason.BAD_STREAM, f"stream id must be a string, got {type(stream).__name__}"
        )
    if not stream:
        return Rejection(RejectReason.BAD_STREAM, "stream id is empty")
    # At most 4 UTF-8 bytes per code point, so short ids need no encoding.
    if len(stream) * 4 > MAX_STREAM_ID_BYTES:
        n_bytes = len(stream.encode("utf-8", "surrogatepass"))
        if n_bytes > MAX_STREAM_ID_BYTES:
            return Rejection(
                RejectReason.STREAM_TOO_LONG,
                f"stream id has {n_bytes} UTF-8 bytes, the limit is {MAX_STREAM_ID_BYTES}",
                stream=stream[:64] + "...",
            )
    return None


def _row_values(values: Any, n_inputs: int) -> tuple[Any, Rejection | None]:
    """Validate one row given as a list (or LE float32 bytes); return it as float32 or a reason."""
    if type(values) is bytes:
        if len(values) != 4 * n_inputs:
            return None, Rejection(
                RejectReason.WRONG_LENGTH,
                f"values bytes hold {len(values) / 4:g} float32, the model takes {n_inputs}",
            )
        row = np.frombuffer(values, _F32_LE)
        if not np.isfinite(row).all():
            return None, Rejection(RejectReason.NON_FINITE, "values contain NaN or infinity")
        return row, None
    if type(values) is not list:
        if values is None:
            return None, Rejection(RejectReason.BAD_VALUES, "missing 'values'")
        return None, Rejection(
            RejectReason.BAD_VALUES,
            f"values must be a list of numbers or float32 bytes, got {type(values).__name__}",
        )
    if len(values) != n_inputs:
        return None, Rejection(
            RejectReason.WRONG_LENGTH, f"got {len(values)} values, the model takes {n_inputs}"
        )
    for v in values:
        tv = type(v)
        if tv is float:
            if not -FLOAT32_MAX <= v <= FLOAT32_MAX:  # also false for NaN
                return None, Rejection(
                    RejectReason.NON_FINITE,
                    f"value {v!r} is not finite in float32",
                )
        elif tv is not int:
            return None, Rejection(
                RejectReason.BAD_VALUES, f"value {_QUOTE.repr(v)} is a {tv.__name__}, not a number"
            )
    return values, None


def _seq_problem(seq: Any) -> str | None:
    if seq is None or (type(seq) is int and 0 <= seq <= MAX_SEQ):
        return None
    return f"seq must be an int from 0 to 2**63 - 2, got {_QUOTE.repr(seq)}"


def _ts_problem(ts: Any) -> str | None:
    if ts is None or type(ts) is int:
        return None
    if type(ts) is float:
        return None if math.isfinite(ts) else f"ts must be finite, got {ts!r}"
    return f"ts must be a number, got {type(ts).__name__}"


def _flag_problem(name: str, flag: Any) -> str | None:
    if flag is None or type(flag) is bool:
        return None
    return f"{name} must be a bool, got {type(flag).__name__}"


def decode_ingest(
    frame: bytes, n_inputs: int, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> tuple[Readings, list[Rejection]]:
    """Decode and validate one intake frame for a model taking `n_inputs` values.

    Never raise: a bad message gives empty readings and one rejection; a batch with some bad rows
    gives the good rows, in order, and one rejection per bad row (with its `row` index).
    """
    return decode_ingest_many([frame], n_inputs, max_frame_bytes=max_frame_bytes)


def decode_ingest_many(
    frames: Sequence[bytes], n_inputs: int, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> tuple[Readings, list[Rejection]]:
    """Decode several intake frames into one `Readings`, rows in frame order.

    Same validation and the same rejections as `decode_ingest` frame by frame, but single
    readings are gathered into one array at the end: a daemon draining hundreds of small
    messages pays for one numpy array, not one per message.
    """
    return decode_frames(*_laid_out(frames), n_inputs, max_frame_bytes=max_frame_bytes)


def split_frames(buf: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """The frames laid out in one buffer, as bytes: frame k is buf[bounds[k]:bounds[k + 1]]
    (bounds[0] need not be 0: a few frames from the middle of a big buffer cost only theirs)."""
    start = int(bounds[0])
    raw = buf[start : bounds[-1]].tobytes()
    return [raw[a - start : b - start] for a, b in pairwise(bounds.tolist())]


def _laid_out(frames: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The frames in one writable uint8 array with their bounds, as `socket_io.FrameReceiver`
    gives them (frame k is buf[bounds[k]:bounds[k + 1]]).

    Numba compiles a kernel again for a read-only array (what np.frombuffer of bytes is): the
    daemon would then compile on its first readings instead of before it says ready.
    """
    bounds = np.fromiter(accumulate(map(len, frames), initial=0), np.int64, len(frames) + 1)
    return np.frombuffer(bytearray().join(frames), np.uint8), bounds


def decode_frames(
    buf: np.ndarray,
    starts: np.ndarray,
    n_inputs: int,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[Readings, list[Rejection]]:
    """`decode_ingest_many` of the frames laid out in one buffer: frame k is
    buf[starts[k]:starts[k + 1]] (uint8 and int64 arrays, as `socket_io.FrameReceiver` fills)."""
    try:
        plain = _plain_readings(buf, starts, n_inputs, max_frame_bytes)
    except Exception:  # a bug in the fast path must not stop the daemon: take the slow one
        plain = None
    if plain is not None:
        return plain, []
    frames = split_frames(buf, starts)
    # For a few frames the block check's fixed cost (~2 us) outweighs what it saves.
    decoded = _decode_many(frames, n_inputs, max_frame_bytes, quick=len(frames) >= 4)
    if decoded is None:
        # A single reading's values failed the whole-block check: decode again checking each
        # reading on its own, which drops the same readings and says what is wrong with each.
        decoded = _decode_many(frames, n_inputs, max_frame_bytes, quick=False)
    return decoded


@cache  # an import statement costs ~1 us, and a daemon pass asks two or three times
def _wire_kernels() -> Any:
    """engine.fastpaths.wire, imported on first use: clients of the wire format never load Numba."""
    from engine.fastpaths import wire

    return wire


def _readings_columns(seq: Any, ts: Any) -> bool:
    """True for a `Readings` seq and ts column (int64, float64), what the jitted packers take."""
    return (
        type(seq) is np.ndarray
        and seq.dtype == np.int64
        and type(ts) is np.ndarray
        and ts.dtype == np.float64
    )


def _plain_readings(
    buf: np.ndarray, starts: np.ndarray, n_inputs: int, max_frame_bytes: int
) -> Readings | None:
    """Decode frames that are all plain (what producers send) in one jitted call; else None.

    `fastpaths.wire` says what "plain" is: a subset of what `_decode_many` accepts, decoded to
    the same readings (tests/test_wire.py checks both ways).
    """
    n = starts.size - 1
    if n == 0:
        return None
    wire = _wire_kernels()
    buf = buf[: starts[-1]]
    # A reading takes a frame, or in a batch at least a 1-byte id with its header and its
    # float32 values: no more rows than this.
    capacity = n + buf.size // (2 + 4 * n_inputs)
    values = np.empty((capacity, n_inputs), np.float32)
    seq = np.empty(capacity, np.int64)
    ts = np.empty(capacity, np.float64)
    reset = np.empty(capacity, np.bool_)
    end = np.empty(capacity, np.bool_)
    ids = np.empty(buf.size + 1, np.uint8)
    rows, used = wire.parse_readings(buf, starts, max_frame_bytes, values, seq, ts, reset, end, ids)
    if rows == wire.NOT_PLAIN:
        return None
    if rows == 0:
        return Readings.empty(n_inputs)
    raw = ids[: used - 1].tobytes()
    if not raw.isascii():  # else any bytes are valid UTF-8: the strings can wait (StreamIds)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # the slow path says which reading it was
            return None
    return Readings(
        StreamIds(ids[:used], rows),
        values[:rows],
        seq[:rows],
        ts[:rows],
        reset[:rows],
        end[:rows],
        ids[:used],
    )


def compile_jitted_paths(n_inputs: int) -> None:
    """Compile (or load from Numba's cache) the jitted decoder and packers, so a daemon does
    it before it is ready rather than on its first readings (~8 s without a cache)."""
    frames = [
        encode_reading("\x01", [0.0] * n_inputs, seq=1, ts=0.5),
        encode_batch(["\x01"], np.zeros((1, n_inputs), np.float32), seq=[2], ts=0.75),
    ]
    readings = _plain_readings(*_laid_out(frames), n_inputs, DEFAULT_MAX_FRAME_BYTES)
    if readings is None:
        raise RuntimeError("the jitted decoder turned down plain readings")
    pack_prediction_messages(readings.streams, readings.seq, readings.ts, readings.values, None)
    encode_prediction_batch(
        readings.streams, readings.seq, readings.ts, readings.values, None, readings.ids
    )


def _decode_many(
    frames: Sequence[bytes], n_inputs: int, max_frame_bytes: int, quick: bool
) -> tuple[Readings, list[Rejection]] | None:
    """Decode frames; with `quick`, return None when a single reading needs a closer look.

    `quick` takes the common single reading (short str id, a list of n_inputs values, plain
    seq / ts / flags) with a few inline tests and checks the values of all such readings at
    once, in `_values_block`: ~2.3 -> ~1.5 us per reading. Anything else about a single
    reading, and every batch, goes through the per-message validation either way.
    """
    parts: list[Readings] = []
    rejections: list[Rejection] = []
    # Single readings since the last batch, gathered as Python lists (cheap to append to) and
    # turned into one part when a batch or the end comes.
    pending: list[Any] = []  # their values
    unchecked: list[list] = []  # the values of `pending` not checked yet
    streams: list[str] = []
    seqs: list[int] = []
    stamps: list[float] = []
    resets: list[bool] = []
    ends: list[bool] = []
    for frame in frames:
        try:
            msg = _decode_frame(frame, max_frame_bytes)
            if type(msg) is Rejection:
                rejections.append(msg)
                continue
            if msg.get("streams") is not None:  # nil: not given, as for every key
                readings, bad = _decode_batch(msg, n_inputs)
                rejections.extend(bad)
                if len(readings):
                    if pending:
                        part = _singles(
                            pending, unchecked, n_inputs, streams, seqs, stamps, resets, ends
                        )
                        if part is None:
                            return None
                        parts.append(part)
                        pending, unchecked, streams, seqs, stamps, resets, ends = (
                            [] for _ in range(7)
                        )
                    parts.append(readings)
                continue
            if quick:
                stream = msg.get("stream")
                values = msg.get("values")
                seq = msg.get("seq")
                ts = msg.get("ts")
                reset = msg.get("reset")
                end = msg.get("end")
                if (
                    type(stream) is str
                    and 0 < len(stream) * 4 <= MAX_STREAM_ID_BYTES
                    and type(values) is list
                    and len(values) == n_inputs
                    and (seq is None or (type(seq) is int and 0 <= seq <= MAX_SEQ))
                    # ts - ts is 0.0 exactly when ts is finite
                    and (ts is None or (type(ts) is float and ts - ts == 0.0) or type(ts) is int)
                    and (reset is None or reset is True or reset is False)
                    and (end is None or end is True or end is False)
                ):
                    pending.append(values)
                    unchecked.append(values)
                    streams.append(stream)
                    seqs.append(NO_SEQ if seq is None else seq)
                    stamps.append(ts if type(ts) is float else _NAN if ts is None else float(ts))
                    resets.append(reset is True)
                    ends.append(end is True)
                    continue
            row = _decode_single(msg, n_inputs)
            if type(row) is Rejection:
                rejections.append(row)
            else:
                stream, values, seq, ts, reset, end = row
                pending.append(values)
                streams.append(stream)
                seqs.append(NO_SEQ if seq is None else seq)
                stamps.append(_NAN if ts is None else ts)
                resets.append(reset)
                ends.append(end)
        except Exception as exc:  # a bug here must not stop the daemon's loop
            rejections.append(
                Rejection(RejectReason.INTERNAL, f"{type(exc).__name__}: {exc}"[:200])
            )
    if pending:
        part = _singles(pending, unchecked, n_inputs, streams, seqs, stamps, resets, ends)
        if part is None:
            return None
        parts.append(part)
    return (Readings.concat(parts) if parts else Readings.empty(n_inputs)), rejections


def _singles(
    rows: list,
    unchecked: list[list],
    n_inputs: int,
    streams: list[str],
    seqs: list[int],
    stamps: list[float],
    resets: list[bool],
    ends: list[bool],
) -> Readings | None:
    """Return single readings' columns as Readings; None if an unchecked values row is bad."""
    values = _values_block(rows, unchecked, n_inputs)
    if values is None:
        return None
    return Readings(
        streams,
        values,
        np.array(seqs, np.int64),
        np.array(stamps, np.float64),
        np.array(resets, np.bool_),
        np.array(ends, np.bool_),
    )


def _values_block(rows: list, unchecked: list[list], n_inputs: int) -> np.ndarray | None:
    """Return value rows as one (n, n_inputs) float32 block; None if an unchecked row is bad.

    Rows not in `unchecked` were validated one by one. The others must hold only ints and
    floats (never bools) within float32 range; one set of types and one numpy comparison over
    all of them cost about a third of checking each value in a Python loop.
    """
    if not unchecked:
        return np.array(rows, np.float32)
    if not set(map(type, chain.from_iterable(unchecked))) <= _NUMBER_TYPESET:
        return None
    flat = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * n_inputs)
    # `<=` is False for NaN, so this also refuses NaN; the float64 test (before rounding to
    # float32) refuses exactly what `_row_values` refuses.
    if not (np.abs(flat) <= FLOAT32_MAX).all():
        return None
    return flat.astype(np.float32).reshape(len(rows), n_inputs)


def _decode_frame(frame: bytes, max_frame_bytes: int) -> dict | Rejection:
    """Return the frame's msgpack map, or the Rejection saying why it is not one."""
    if len(frame) > max_frame_bytes:
        return Rejection(
            RejectReason.TOO_LARGE,
            f"frame of {len(frame)} bytes exceeds the limit of {max_frame_bytes}",
        )
    try:
        msg = _unpack(frame)
    except Exception as exc:  # msgpack raises many types for garbage
        return Rejection(RejectReason.NOT_MSGPACK, _not_msgpack_detail(frame, exc)[:200])
    if type(msg) is not dict:
        return Rejection(RejectReason.NOT_A_MAP, f"message is a {type(msg).__name__}, not a map")
    return msg


def _decode_single(msg: dict, n_inputs: int) -> tuple | Rejection:
    """Return (stream, values, seq, ts, reset, end) of a single-reading map, or a Rejection."""
    stream = msg.get("stream")
    problem = _stream_problem(stream)
    if problem is not None:
        return problem
    row, problem = _row_values(msg.get("values"), n_inputs)
    if problem is None:
        seq = msg.get("seq")
        ts = msg.get("ts")
        reset = msg.get("reset")
        end = msg.get("end")
        if (text := _seq_problem(seq)) is not None:
            problem = Rejection(RejectReason.BAD_SEQ, text)
        elif (text := _ts_problem(ts)) is not None:
            problem = Rejection(RejectReason.BAD_TS, text)
        elif (text := _flag_problem("reset", reset) or _flag_problem("end", end)) is not None:
            problem = Rejection(RejectReason.BAD_FLAG, text)
    if problem is not None:
        problem.stream = stream
        return problem
    return (
        stream,
        row,
        seq,
        None if ts is None else float(ts),
        reset is True,
        end is True,
    )


def _column(
    msg: dict, key: str, n: int, reason: RejectReason, scalar_check: Any = None
) -> tuple[list | None, Rejection | None]:
    """Return a per-row column (None when absent) or a whole-message rejection.

    With `scalar_check`, a valid scalar stands for the same value in every row.
    """
    col = msg.get(key)
    if col is None:
        return None, None
    if type(col) is list:
        if len(col) != n:
            return None, Rejection(reason, f"'{key}' has {len(col)} entries for {n} streams")
        return col, None
    if scalar_check is not None:
        if (text := scalar_check(col)) is not None:
            return None, Rejection(reason, text)
        return [col] * n, None
    return None, Rejection(reason, f"'{key}' must be a list, got {type(col).__name__}")


def _ids_surely_valid(streams: list) -> bool:
    """Return True if every entry is a non-empty str short enough to need no byte count.

    False means "check row by row", not "invalid". One join and one numpy pass over the code
    points replace three Python-level passes (types, shortest, longest): ~60 -> ~20 us for 1024
    ids. An id holding NUL, the separator, also sends the batch to the row checks.
    """
    try:
        # join refuses anything but str; UTF-32 gives one uint32 per code point.
        codes = np.frombuffer("\0".join(streams).encode("utf-32-le"), np.uint32)
    except (TypeError, UnicodeEncodeError):
        return False
    n = len(streams)
    bounds = np.empty(n + 1, np.intp)
    bounds[0] = -1
    bounds[n] = codes.size
    ends = np.flatnonzero(codes == 0)
    if n == 0 or ends.size != n - 1:
        return False
    bounds[1:n] = ends
    lengths = np.diff(bounds) - 1
    return bool(lengths.min() > 0) and int(lengths.max()) * 4 <= MAX_STREAM_ID_BYTES


def _decode_batch(msg: dict, n_inputs: int) -> tuple[Readings, list[Rejection]]:
    streams = msg["streams"]
    if type(streams) is not list:
        return Readings.empty(n_inputs), [
            Rejection(RejectReason.BAD_STREAM, "'streams' must be a list of stream ids")
        ]
    n = len(streams)
    seq, problem = _column(msg, "seq", n, RejectReason.BAD_SEQ)
    if problem is None:
        ts, problem = _column(msg, "ts", n, RejectReason.BAD_TS, _ts_problem)
    if problem is None:
        reset, problem = _column(
            msg, "reset", n, RejectReason.BAD_FLAG, lambda f: _flag_problem("reset", f)
        )
    if problem is None:
        end, problem = _column(
            msg, "end", n, RejectReason.BAD_FLAG, lambda f: _flag_problem("end", f)
        )
    if problem is not None:
        return Readings.empty(n_inputs), [problem]

    # Row validity: start with the values, then AND in the other columns.
    raw = msg.get("values")
    bad: dict[int, Rejection] = {}
    if type(raw) is bytes:
        if len(raw) != 4 * n * n_inputs:
            return Readings.empty(n_inputs), [
                Rejection(
                    RejectReason.WRONG_LENGTH,
                    f"values bytes hold {len(raw) / 4:g} float32, expected {n} streams x "
                    f"{n_inputs} inputs = {n * n_inputs}",
                )
            ]
        values = np.frombuffer(raw, _F32_LE).reshape(n, n_inputs)
        if not np.isfinite(values).all():  # one flat pass; rows only when something is off
            finite = np.isfinite(values).all(axis=1)
            for i in np.flatnonzero(~finite).tolist():
                bad[i] = Rejection(RejectReason.NON_FINITE, "values contain NaN or infinity")
    elif type(raw) is list:
        if len(raw) != n:
            return Readings.empty(n_inputs), [
                Rejection(
                    RejectReason.WRONG_LENGTH, f"'values' has {len(raw)} rows for {n} streams"
                )
            ]
        rows = np.zeros((n, n_inputs), np.float32)
        for i, item in enumerate(raw):
            row, problem = _row_values(item, n_inputs)
            if problem is None:
                rows[i] = row
            else:
                bad[i] = problem
        values = rows
    else:
        what = "missing 'values'" if raw is None else f"'values' is a {type(raw).__name__}"
        return Readings.empty(n_inputs), [
            Rejection(RejectReason.BAD_VALUES, f"{what}; expected float32 bytes or a list of rows")
        ]

    # Cheap whole-column checks first; fall back to per-row diagnosis only when one fails. A
    # row's first problem is the one a single reading would get: its id, values, seq, ts, flags.
    if not _ids_surely_valid(streams):
        for i, s in enumerate(streams):
            if (problem := _stream_problem(s)) is not None:
                bad[i] = problem
    seq_out = _seq_column(seq, n, bad)
    ts_out = _ts_column(msg["ts"] if ts is not None else None, ts, n, bad)
    flags = [_flag_column(name, col, n, bad) for name, col in (("reset", reset), ("end", end))]
    if not bad:
        return Readings(list(streams), np.array(values, np.float32), seq_out, ts_out, *flags), []

    rejections = []
    for i in sorted(bad):
        r = bad[i]
        r.row = i
        if r.stream is None and type(streams[i]) is str and _stream_problem(streams[i]) is None:
            r.stream = streams[i]
        rejections.append(r)
    keep = np.array([i for i in range(n) if i not in bad], np.intp)
    return Readings(streams, values, seq_out, ts_out, *flags).take(keep), rejections


def _seq_column(seq: list | None, n: int, bad: dict[int, Rejection]) -> np.ndarray:
    """Return a batch's seq column as int64 (NO_SEQ: none); note bad entries in `bad`."""
    if seq is None:
        return np.full(n, NO_SEQ, np.int64)
    try:
        # array refuses floats, None and str; it takes bools as 0 and 1, so a column holding
        # a 0 or 1 also gets its types checked. Seqs past the first of a stream skip that pass.
        column = np.frombuffer(array("q", seq), np.int64)
    except (TypeError, OverflowError):
        pass
    else:
        if not n or (
            column.max() <= MAX_SEQ
            and (column.min() > 1 or (column.min() >= 0 and set(map(type, seq)) <= _INT_TYPESET))
        ):
            return column
    return _column_row_by_row(seq, _seq_problem, RejectReason.BAD_SEQ, NO_SEQ, bad)


def _ts_column(scalar: Any, ts: list | None, n: int, bad: dict[int, Rejection]) -> np.ndarray:
    """Return a batch's ts column as float64 (NaN: none); note bad entries in `bad`.

    `scalar` is the message's own "ts" entry: a valid scalar (checked by `_column`) stands for
    every row.
    """
    if ts is None:
        return np.full(n, np.nan)
    if type(scalar) is not list:
        return np.full(n, float(scalar))
    types = set(map(type, ts))
    # A non-finite sum means a NaN/inf entry or an overflow; the slow path tells which.
    if types <= _NUMBER_TYPESET and math.isfinite(sum(ts)):
        return np.fromiter(ts, np.float64, n)
    return _column_row_by_row(ts, _ts_problem, RejectReason.BAD_TS, np.nan, bad)


def _column_row_by_row(
    col: list, problem: Any, reason: RejectReason, missing: Any, bad: dict[int, Rejection]
) -> np.ndarray:
    """Check a seq or ts column entry by entry; nil and bad entries (in `bad`) get `missing`."""
    out = np.full(len(col), missing)
    for i, value in enumerate(col):
        if (text := problem(value)) is not None:
            bad.setdefault(i, Rejection(reason, text))
        elif value is not None:
            out[i] = value
    return out


def _flag_column(name: str, col: list | None, n: int, bad: dict[int, Rejection]) -> np.ndarray:
    """Return a batch's reset or end column as bool; note bad entries in `bad`."""
    if col is None:
        return np.zeros(n, np.bool_)
    if not set(map(type, col)) <= {bool}:
        for i, f in enumerate(col):
            if (text := _flag_problem(name, f)) is not None:
                bad.setdefault(i, Rejection(RejectReason.BAD_FLAG, text))
    return np.fromiter((f is True for f in col), np.bool_, n)


# --------------------------------------------------------------------------- intake encoding


def _values_list(values: Any) -> list:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False).ravel().tolist()
    if isinstance(values, int | float) and not isinstance(values, bool):
        return [values]
    if isinstance(values, np.number):  # one value of a numpy array: np.float32 is no float
        return [values.item()]
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def encode_reading(
    stream: str,
    values: Sequence[float] | np.ndarray | float | np.number,
    *,
    seq: int | None = None,
    ts: float | None = None,
    reset: bool = False,
    end: bool = False,
) -> bytes:
    """Encode one reading; optional fields are left out when not given."""
    # A producer calls this once per reading: a plain list goes to the packer as it is (numpy
    # scalars in it take the packer's default hook), and plain ints and floats skip conversion.
    msg: dict[str, Any] = {
        "stream": stream,
        "values": values if type(values) is list else _values_list(values),
    }
    if seq is not None:
        msg["seq"] = seq if type(seq) is int else int(seq)
    if ts is not None:
        msg["ts"] = ts if type(ts) is float else float(ts)
    if reset:
        msg["reset"] = True
    if end:
        msg["end"] = True
    return _packer().pack(msg)


def encode_batch(
    streams: Sequence[str],
    values: np.ndarray,
    *,
    seq: Sequence[int | None] | None = None,
    ts: float | Sequence[float | None] | None = None,
    reset: Sequence[bool] | None = None,
    end: Sequence[bool] | None = None,
) -> bytes:
    """Encode a columnar batch: row i of `values` (n, n_inputs) belongs to `streams[i]`."""
    streams = list(streams)
    arr = np.ascontiguousarray(values, dtype=_F32_LE)
    if arr.ndim == 1:
        arr = arr.reshape(len(streams), -1) if streams else arr.reshape(0, -1)
    if arr.ndim != 2 or arr.shape[0] != len(streams):
        raise ValueError(f"values of shape {arr.shape} do not match {len(streams)} streams")
    msg: dict[str, Any] = {"streams": streams, "values": arr.tobytes()}
    if seq is not None:
        msg["seq"] = _plain_column(seq, int)
    if ts is not None:
        if isinstance(ts, int | float | np.generic):
            msg["ts"] = float(ts)
        else:
            msg["ts"] = _plain_column(ts, float)
    if reset is not None:
        msg["reset"] = [bool(f) for f in reset]
    if end is not None:
        msg["end"] = [bool(f) for f in end]
    # The daemon drops a batch with a column of another length whole: say so before sending.
    for name in ("seq", "ts", "reset", "end"):
        column = msg.get(name)
        if type(column) is list and len(column) != len(streams):
            raise ValueError(f"{name} has {len(column)} entries for {len(streams)} streams")
    return _packer().pack(msg)


# --------------------------------------------------------------------------- publication


def prediction_topic(stream: str) -> bytes:
    """Return the topic frame of `stream`'s predictions: b"pred." + UTF-8 id."""
    return PREDICTION_PREFIX + stream.encode("utf-8")


def alert_topic(stream: str) -> bytes:
    """Return the topic frame of `stream`'s alerts: b"alert." + UTF-8 id."""
    return ALERT_PREFIX + stream.encode("utf-8")


def _score_value(score: Any) -> float | None:
    if score is None:
        return None
    score = float(score)
    return None if math.isnan(score) else score


def encode_prediction(
    stream: str,
    seq: int | None,
    ts: float | None,
    prediction: Sequence[float] | np.ndarray,
    score: float | None,
) -> bytes:
    """Encode one prediction payload (publish it under `prediction_topic(stream)`)."""
    # The daemon calls this once per reading: plain ints, floats and lists skip conversion.
    return _packer().pack(
        {
            "stream": stream,
            "seq": seq if seq is None or type(seq) is int else int(seq),
            "ts": ts if ts is None or type(ts) is float else float(ts),
            "prediction": prediction if type(prediction) is list else _values_list(prediction),
            "score": _score_value(score),
        }
    )


def prediction_messages(
    streams: Sequence[str],
    seq: Sequence[int | None] | np.ndarray,
    ts: Sequence[float | None] | np.ndarray,
    predictions: np.ndarray,
    scores: np.ndarray | None,
) -> Iterator[tuple[bytes, bytes]]:
    """Yield `(prediction_topic(stream), encode_prediction(...))` for every row, in order.

    Row i is `streams[i]`, `seq[i]`, `ts[i]`, `predictions[i]` (n, n_outputs) and `scores[i]`
    (NaN or no `scores` at all: published as nil). The frames of `pack_prediction_messages`.
    """
    frames = split_frames(*pack_prediction_messages(streams, seq, ts, predictions, scores))
    yield from zip(frames[0::2], frames[1::2], strict=True)


def pack_prediction_messages(
    streams: Sequence[str],
    seq: Sequence[int | None] | np.ndarray,
    ts: Sequence[float | None] | np.ndarray,
    predictions: np.ndarray,
    scores: np.ndarray | None,
    *,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's topic and payload (as in `prediction_messages`) laid out in one buffer.

    Returns (data, bounds): row i's topic is data[bounds[2i]:bounds[2i+1]] and its payload
    data[bounds[2i+1]:bounds[2i+2]], what `socket_io.MessageSender` sends. For `Readings`
    columns one jitted call packs them all (~3x faster than row by row in Python); `ids`, the
    streams' UTF-8 ids each followed by a 0 byte (`Readings.ids`), spare it joining them.
    """
    n = len(streams)
    if len(predictions) != n:  # the jitted packer would read past the rows there are
        raise ValueError(f"{len(predictions)} rows of predictions for {n} streams")
    if n == 0:
        return np.empty(0, np.uint8), np.zeros(1, np.int64)
    packed = _packed_predictions(streams, seq, ts, predictions, scores, ids)
    if packed is not None:
        return packed
    rows = np.asarray(predictions).reshape(n, -1).tolist()  # float32 widens exactly
    if scores is None:
        score_col: list = [None] * n
    else:
        score_arr = np.asarray(scores, np.float64).reshape(-1)
        score_col = score_arr.tolist()
        if np.isnan(score_arr).any():
            score_col = [None if s != s else s for s in score_col]  # NaN is not equal to itself
    pack = _packer().pack_map_pairs
    frames: list[bytes] = []
    for stream, s, t, row, score in zip(
        streams, _plain_column(seq, int), _plain_column(ts, float), rows, score_col, strict=True
    ):
        payload = (("stream", stream), ("seq", s), ("ts", t), ("prediction", row), ("score", score))
        frames += (PREDICTION_PREFIX + stream.encode("utf-8"), pack(payload))
    return _laid_out(frames)


def _packed_predictions(
    streams: Sequence[str],
    seq: Any,
    ts: Any,
    predictions: np.ndarray,
    scores: Any,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """`pack_prediction_messages` by one jitted call, for `Readings` columns (seq int64, ts
    float64), float32 predictions and float64 scores or none: what the daemon publishes.
    None for anything else, or when an id holds the NUL that separates ids in the buffer.
    """
    if not (
        _readings_columns(seq, ts)
        and type(predictions) is np.ndarray
        and predictions.dtype == np.float32
        and predictions.ndim == 2
        and (scores is None or (type(scores) is np.ndarray and scores.dtype == np.float64))
    ):
        return None
    n = len(streams)
    if ids is None:
        joined = "\x00".join(streams)
        if joined.count("\x00") != n - 1:
            return None
        # writable, as the decoder's ids are: Numba compiles read-only arrays apart
        ids = np.frombuffer(bytearray((joined + "\x00").encode("utf-8")), np.uint8)
    wire = _wire_kernels()
    n_outputs = predictions.shape[1]
    out = np.empty(2 * ids.size + n * (len(PREDICTION_PREFIX) + 80 + 9 * n_outputs), np.uint8)
    bounds = np.empty(2 * n + 1, np.int64)
    used = wire.pack_predictions(
        ids,
        seq.reshape(n),
        ts.reshape(n),
        np.ascontiguousarray(predictions),
        ts if scores is None else scores.reshape(n),  # any float64 array when not scored
        scores is not None,
        _PREDICTION_PREFIX_BYTES,
        out,
        bounds,
    )
    return out[:used], bounds


def encode_prediction_batch(
    streams: Sequence[str],
    seq: Sequence[int | None] | np.ndarray,
    ts: Sequence[float | None] | np.ndarray,
    predictions: np.ndarray,
    scores: np.ndarray | None,
    ids: np.ndarray | None = None,
) -> bytes:
    """Encode a columnar prediction payload (publish it under `BATCH_TOPIC`); `ids`, the
    streams' UTF-8 ids each followed by a 0 byte (`Readings.ids`), spare packing the strings."""
    n = len(streams)
    pred = np.ascontiguousarray(predictions, dtype=_F32_LE)
    if pred.ndim == 1:
        pred = pred.reshape(n, -1) if n else pred.reshape(0, 1)
    if pred.ndim != 2 or pred.shape[0] != n:
        raise ValueError(f"predictions of shape {pred.shape} do not match {n} streams")
    if scores is None:
        score = np.full(n, np.nan, _F32_LE)
    else:
        score = np.ascontiguousarray(scores, dtype=_F32_LE).reshape(-1)
        if score.shape != (n,):
            raise ValueError(f"scores of shape {score.shape} do not match {n} streams")
    packed = _packed_prediction_batch(streams, seq, ts, pred, score, ids)
    if packed is not None:
        return packed
    return _packer().pack(
        {
            "streams": list(streams),
            "seq": _plain_column(seq, int),
            "ts": _common_ts(ts) or _plain_column(ts, float),
            "prediction": pred.tobytes(),
            "n_outputs": int(pred.shape[1]),
            "score": score.tobytes(),
        }
    )


def _packed_prediction_batch(
    streams: Sequence[str],
    seq: Any,
    ts: Any,
    pred: np.ndarray,
    score: np.ndarray,
    ids: np.ndarray | None,
) -> bytes | None:
    """The batch payload with its seq and ts columns (and with `ids`, its streams) packed by
    jitted calls, for `Readings` columns (seq int64, ts float64); else None.

    Turning 4096 seqs into Python ints and packing them took ~100 us, the jitted call ~10.
    The map is written as its parts, in `encode_prediction_batch`'s key order.
    """
    if not _readings_columns(seq, ts):
        return None
    wire = _wire_kernels()
    seq = seq.reshape(-1)
    ts = ts.reshape(-1)
    column = np.empty(5 + 9 * max(seq.size, ts.size), np.uint8)
    packed_seq = column[: wire.pack_seq_array(seq, column)].tobytes()
    common_ts = _common_ts(ts)
    if common_ts:  # as `_common_ts(ts) or ...` there: a shared ts of 0 goes as a list
        packed_ts = _packer().pack(common_ts)
    else:
        packed_ts = column[: wire.pack_ts_array(ts, column)].tobytes()
    pack = _packer().pack
    if ids is None:
        packed_streams = pack(list(streams))
    else:
        room = np.empty(5 + 3 * len(streams) + ids.size, np.uint8)
        packed_streams = room[: wire.pack_str_array(ids, len(streams), room)].tobytes()
    return b"".join(
        (
            b"\x86",  # a map of 6
            pack("streams"),
            packed_streams,
            pack("seq"),
            packed_seq,
            pack("ts"),
            packed_ts,
            pack("prediction"),
            pack(pred.tobytes()),
            pack("n_outputs"),
            pack(int(pred.shape[1])),
            pack("score"),
            pack(score.tobytes()),
        )
    )


def _common_ts(ts: Any) -> float | None:
    """Return the one ts of every row of a Readings ts column, if they share one (else None).

    A producer's batch usually carries one ts for all rows; publishing it once saves packing
    and unpacking a float per row.
    """
    if not isinstance(ts, np.ndarray) or ts.size == 0:
        return None
    first = float(ts[0])
    if first != first or not (ts == first).all():  # NaN: no ts
        return None
    return first


_PLAIN_TYPES = {int: frozenset((int, type(None))), float: frozenset((float, type(None)))}


def _plain_column(values: Any, kind: type) -> list:
    """Return values as a list of `kind` or None; lists already in that form pass unchanged.

    An array is a `Readings` column: NO_SEQ (ints) or NaN (floats) stand for None.
    """
    if isinstance(values, np.ndarray):
        out = values.astype(kind).tolist()
        missing = values < 0 if kind is int else np.isnan(values)
        if missing.any():
            for i in np.flatnonzero(missing).tolist():
                out[i] = None
        return out
    if type(values) is not list:
        values = list(values)
    if set(map(type, values)) <= _PLAIN_TYPES[kind]:
        return values
    return [None if v is None else kind(v) for v in values]


def encode_error(rejection: Rejection) -> bytes:
    """Encode a rejection as an `error` payload (publish it under `ERROR_TOPIC`)."""
    msg: dict[str, Any] = {"reason": str(rejection.reason), "detail": rejection.detail}
    if rejection.stream is not None:
        msg["stream"] = rejection.stream
    if rejection.row is not None:
        msg["row"] = rejection.row
    return _packer().pack(msg)


def encode_alert(alert: Mapping[str, Any]) -> bytes:
    """Encode an alert dict (publish it under `alert_topic(alert["stream"])`).

    Require a str `stream` and an `event` of "open" or "close"; other fields pass through
    (numpy scalars and arrays become plain numbers and lists).
    """
    if type(alert.get("stream")) is not str:
        raise ValueError("an alert needs a str 'stream'")
    if alert.get("event") not in ("open", "close"):
        raise ValueError(f"alert event must be 'open' or 'close', got {alert.get('event')!r}")
    return _packer().pack(dict(alert))


def _unpack_trusted(payload: bytes, what: str) -> dict:
    try:
        msg = _unpack(payload)
    except Exception as exc:
        raise ProtocolError(f"{what} payload: {_not_msgpack_detail(payload, exc)}") from None
    if type(msg) is not dict:
        raise ProtocolError(f"{what} payload is a {type(msg).__name__}, not a map")
    return msg


def decode_publication(topic: bytes, payload: bytes) -> tuple[str, dict]:
    """Decode a published `[topic, payload]` into (kind, payload dict).

    kind is "pred", "alert", "error" or "batch"; a batch's `prediction` comes back as a float32
    array (n, n_outputs) and its `score` as a float32 array (n,) with NaN for "no score". Raise
    `ProtocolError` for an unknown topic or a malformed payload.
    """
    topic = bytes(topic)
    if topic == BATCH_TOPIC:
        msg = _unpack_trusted(payload, "batch")
        try:
            streams = msg["streams"]
            n = len(streams)
            n_out = int(msg["n_outputs"])
            pred = np.frombuffer(msg["prediction"], _F32_LE)
            score = np.frombuffer(msg["score"], _F32_LE)
            if pred.size != n * n_out or score.size != n:
                raise ValueError("array sizes do not match the number of streams")
            if type(msg["ts"]) is float:  # one ts for every row
                msg["ts"] = [msg["ts"]] * n
            if len(msg["seq"]) != n or len(msg["ts"]) != n:
                raise ValueError("seq / ts lengths do not match the number of streams")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed batch publication: {exc}") from None
        msg["prediction"] = pred.astype(np.float32).reshape(n, n_out)
        msg["score"] = score.astype(np.float32)
        return "batch", msg
    if topic.startswith(PREDICTION_PREFIX):
        msg = _unpack_trusted(payload, "prediction")
        if type(msg.get("stream")) is not str or type(msg.get("prediction")) is not list:
            raise ProtocolError("prediction payload needs 'stream' and a 'prediction' list")
        return "pred", msg
    if topic.startswith(ALERT_PREFIX):
        msg = _unpack_trusted(payload, "alert")
        if type(msg.get("stream")) is not str:
            raise ProtocolError("alert payload needs a 'stream'")
        return "alert", msg
    if topic == ERROR_TOPIC:
        msg = _unpack_trusted(payload, "error")
        if type(msg.get("reason")) is not str:
            raise ProtocolError("error payload needs a 'reason'")
        return "error", msg
    raise ProtocolError(f"unknown topic {topic[:80]!r}")


def batch_rows(payload: dict) -> Iterable[dict]:
    """Expand a decoded `batch` payload into one prediction dict per row (like a `pred` payload)."""
    pred = payload["prediction"]
    score = payload["score"]
    for i, stream in enumerate(payload["streams"]):
        s = float(score[i])
        yield {
            "stream": stream,
            "seq": payload["seq"][i],
            "ts": payload["ts"][i],
            "prediction": pred[i].astype(np.float64).tolist(),
            "score": None if math.isnan(s) else s,
        }


def exact_subscription(stream: str, kind: str = "pred") -> bytes:
    """Return the SUB prefix for one stream's `kind` ("pred" or "alert") topics.

    ZeroMQ subscriptions are prefixes, so `pred.pump-7` also matches `pred.pump-70`. To get
    exactly one stream, subscribe to this prefix and keep only payloads whose
    `payload["stream"] == stream`; `consumers.client.Subscriber(exact_streams=...)` does this.
    """
    if kind == "pred":
        return prediction_topic(stream)
    if kind == "alert":
        return alert_topic(stream)
    raise ValueError(f"kind must be 'pred' or 'alert', got {kind!r}")


# --------------------------------------------------------------------------- control

# Every command the daemon answers (docs/PROTOCOL.md, Control); any other name is refused.
CONTROL_COMMANDS = (
    "health",
    "stats",
    "streams",
    "reset",
    "drop",
    "snapshot",
    "threshold",
    "reload",
    "shutdown",
)


def encode_control(cmd: str, **fields: Any) -> bytes:
    """Encode a control request `{"cmd": cmd, **fields}`."""
    if not isinstance(cmd, str) or not cmd:
        raise ValueError("cmd must be a non-empty string")
    return _packer().pack({"cmd": cmd, **fields})


def decode_control(frame: bytes) -> dict:
    """Decode a control request; raise `ProtocolError` unless it is a map with a str `cmd`."""
    msg = _unpack_trusted(frame, "control")
    if type(msg.get("cmd")) is not str or not msg["cmd"]:
        raise ProtocolError("control request needs a non-empty str 'cmd'")
    return msg


def encode_reply(ok: bool = True, *, error: str | None = None, **fields: Any) -> bytes:
    """Encode a control reply `{"ok": ok, **fields}` (+ `"error"` when not ok)."""
    msg: dict[str, Any] = {"ok": bool(ok), **fields}
    if not ok:
        msg["error"] = error or "unknown error"
    return _packer().pack(msg)


def decode_reply(frame: bytes) -> dict:
    """Decode a control reply; raise `ProtocolError` unless it is a map with a bool `ok`."""
    msg = _unpack_trusted(frame, "control reply")
    if type(msg.get("ok")) is not bool:
        raise ProtocolError("control reply needs a bool 'ok'")
    return msg


# --------------------------------------------------------------------------- CURVE keys

_CERT_KEY = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]{40})"', re.MULTILINE)


def curve_key(key: str | bytes | os.PathLike, *, secret: bool = False) -> bytes:
    """Return a 40-byte Z85 CURVE key from Z85 text/bytes or a ZeroMQ certificate file path.

    A certificate file is what `zmq.auth.create_certificates` writes (`*.key` holds the public
    key, `*.key_secret` both); `secret` picks which key to read from it.
    """
    if isinstance(key, bytes | str) and len(key) == 40:
        return key.encode("ascii") if isinstance(key, str) else key
    path = Path(os.fsdecode(key))
    if not path.is_file():
        raise ValueError(f"{str(path)[:80]!r} is neither a 40-character Z85 key nor a file")
    found = dict(_CERT_KEY.findall(path.read_text()))
    want = "secret" if secret else "public"
    if want not in found:
        raise ValueError(f"{path} holds no {want}-key")
    return found[want].encode("ascii")
