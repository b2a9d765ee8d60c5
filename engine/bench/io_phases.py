"""The end-to-end benchmark's load generator and subscriber loops, a phase in one jitted call.

`rnnstream bench e2e` offers single readings on a schedule (reading k due at start + k / rate)
and wakes every 200 us to send what is due; its subscriber wakes about as often to stamp what
arrived. Run from Python, each of the generator's wake-ups took ~20 us of interpreter (perf at
300k readings/s: 0.1 of a core) and the subscriber's loop about as much, all taken from the two
cores the daemon under test shares with them (bench/README.md, "Producer and subscriber in
Numba"). `send_paced` reads the clock, packs what is due (`wire.pack_readings`), sends it
(libzmq's `zmq_send`, through `zmqcalls`) and sleeps until the next reading is due;
`receive_stamps` waits for predictions, takes them and stamps them (`wire.read_prediction_stamps`).
A signal (Ctrl-C) ends the subscriber's wait at once, for Python to run its handler; the
generator's call goes on to the end of its phase first.

Importing this module raises ImportError where `zmqcalls` cannot find libzmq. The libc calls
(`clock_gettime`, `nanosleep`) are resolved by name like libzmq's.
"""

from __future__ import annotations

import errno
import math
import time

from numba import types

from engine.fastpaths import wire, zmqcalls
from engine.kernels._jit import inline_kernel, kernel

_clock_gettime = types.ExternalFunction("clock_gettime", types.intc(types.intc, types.voidptr))
_nanosleep = types.ExternalFunction("nanosleep", types.intc(types.voidptr, types.voidptr))

_CLOCK_REALTIME = int(time.CLOCK_REALTIME)  # what time.time() reads, and the readings' ts
_EAGAIN = errno.EAGAIN
_ROOM_WAIT_S = 50e-6  # at the socket's high-water mark: look for room again after this long


@inline_kernel
def wall_clock(timespec):
    """Seconds since the epoch, as time.time(); `timespec` is int64 scratch of 2."""
    _clock_gettime(_CLOCK_REALTIME, timespec.ctypes.data)
    return timespec[0] + timespec[1] * 1e-9


@inline_kernel
def _sleep(seconds, timespec):
    """Sleep about `seconds` (nothing if <= 0). A signal may end it early: callers read the
    clock again rather than trust it."""
    if seconds > 0:
        whole = math.floor(seconds)
        timespec[0] = whole
        timespec[1] = min(int((seconds - whole) * 1e9), 999_999_999)
        _nanosleep(timespec.ctypes.data, 0)


@kernel
def readings_late(now, start_at, rate, late_s, first, end):
    """How many of readings first .. end - 1, sent at `now`, went over `late_s` after they were
    due (reading k due at start_at + k / rate; rate > 0)."""
    overdue = math.ceil((now - late_s - start_at) * rate)  # reading k late when k < overdue
    return max(0, min(end, overdue) - first)


@inline_kernel
def _send_waiting(socket, frames, bounds, timespec):
    """Send every one-frame message, waiting for room at the high-water mark; 0 or errno."""
    n = bounds.shape[0] - 1
    sent = 0
    while sent < n:
        sent, error = zmqcalls.send_messages(socket, frames, bounds, 1, sent)
        if error == _EAGAIN:
            _sleep(_ROOM_WAIT_S, timespec)
        elif error != 0:
            return error
    return 0


@kernel
def send_paced(
    socket,
    id_bytes,
    id_starts,
    last_seq,
    cursor,
    pool,
    first,
    n,
    start_at,
    rate,
    tick_s,
    late_s,
    chunk,
    out,
    bounds,
    timespec,
    lateness,
):
    """Send n single readings on a PUSH `socket` (libzmq's pointer): reading k due at
    start_at + k / rate (rate <= 0: all at once), streams in turn from `cursor`, values the rows
    of `pool` in turn from row `first` (see `wire.pack_readings`, which packs them `chunk` at a
    time, each pack stamped with the time it was packed).

    Between sends it sleeps until the next reading is due, but at least `tick_s`. lateness[0]
    grows by the readings sent over `late_s` after they were due and lateness[1] becomes the
    most any reading was sent after it was due, if more. Returns (sum of the seqs sent, the next
    cursor, 0 or the errno of a failed send).
    """
    n_streams = last_seq.shape[0]
    sent = 0
    seq_sum = 0
    _sleep(start_at - wall_clock(timespec), timespec)
    while sent < n:
        now = wall_clock(timespec)
        due = n if rate <= 0 else min(n, int((now - start_at) * rate) + 1)
        if due > sent and rate > 0:
            lateness[0] += readings_late(now, start_at, rate, late_s, sent, due)
            lateness[1] = max(lateness[1], now - (start_at + sent / rate))
        while sent < due:
            k = min(chunk, due - sent)
            stamp = wall_clock(timespec)
            _, pack_seqs = wire.pack_readings(
                id_bytes, id_starts, last_seq, cursor, pool, first + sent, stamp, k, out, bounds
            )
            error = _send_waiting(socket, out, bounds[: k + 1], timespec)
            if error != 0:
                return seq_sum, cursor, error
            seq_sum += pack_seqs
            cursor = (cursor + k) % n_streams
            sent += k
        if sent < n:
            now = wall_clock(timespec)
            _sleep(max(start_at + sent / rate, now + tick_s) - now, timespec)
    return seq_sum, cursor, 0


# What `receive_stamps` stopped for.
EXPECTED_REACHED = 0  # `expected` predictions counted
IDLE = 1  # nothing arrived for the whole timeout
OTHER_MESSAGE = 2  # the message at the returned frame index is not a plain prediction


@kernel
def receive_stamps(
    item,
    timeout_ms,
    buf,
    starts,
    max_frames,
    budget,
    n,
    i,
    prefix,
    skip_id,
    seq,
    ts,
    latency,
    count,
    expected,
    looks,
    timespec,
):
    """A subscriber's predictions, taken a look at a time until `expected` are counted.

    A look takes what is queued on the socket of `item` (`zmqcalls.poll_item`), up to
    `max_frames` frames or `budget` bytes (`zmqcalls.recv_frames` into buf / starts), waiting
    up to `timeout_ms` for the first. Every prediction of a look gets the time the look ended:
    `wire.read_prediction_stamps` puts its seq and ts at seq[count], ts[count] and
    latency[count] = that time - ts. looks[0] is set to the first look's time if NaN, looks[1]
    to the last's.

    Frames i .. n - 1 of the previous look are read first. Returns (count, sum of the seqs read,
    n, i, why) where `why` is EXPECTED_REACHED, IDLE, OTHER_MESSAGE (message at frame i, of the
    look's n frames, is for the caller to read: a batch, an error, a probe; the caller goes on
    with i past it) or minus an errno (-EINTR: a signal came while it waited; the caller calls
    again once Python has run the signal's handler).
    """
    seq_sum = 0
    while count < expected:
        if i >= n:
            ready = zmqcalls.wait_readable(item, timeout_ms)
            if ready <= 0:
                return count, seq_sum, n, i, IDLE if ready == 0 else ready
            n, error = zmqcalls.recv_frames(item[0], buf, starts, 0, max_frames, budget)
            if n % 2 == 1 and error == 0:  # a topic whose payload, sent with it, is queued too
                n, error = zmqcalls.recv_frames(item[0], buf, starts, n, n + 1, buf.shape[0])
            if error != 0 and error != _EAGAIN:
                return count, seq_sum, n, n, -error
            i = 0
            looks[1] = wall_clock(timespec)
            if looks[0] != looks[0]:  # NaN: the first look
                looks[0] = looks[1]
        i, got = wire.read_prediction_stamps(buf, starts, i, n, prefix, skip_id, seq, ts, count)
        for k in range(count, got):
            latency[k] = looks[1] - ts[k]
            seq_sum += seq[k]
        count = got
        if i < n and count < expected:
            return count, seq_sum, n, i, OTHER_MESSAGE
    return count, seq_sum, n, i, EXPECTED_REACHED
