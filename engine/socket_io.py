"""The daemon's frames by the pass: receive what is queued into one buffer, send a pass's
predictions from one buffer.

Both go through `engine.fastpaths.zmqcalls` (one jitted call into libzmq per pass) when that
module can be loaded, else through pyzmq frame by frame; the frames are the same either way.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from engine.protocol import split_frames

_EAGAIN = zmq.EAGAIN
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
# A pass stops receiving once its frames hold this many bytes (~80 of the 1024-row batches of
# bench e2e): plenty to amortise a pass, and a bound on its memory whatever max_batch is.
PASS_BUDGET_BYTES = 4 * 1024 * 1024


def context_with_batch_io_threads() -> zmq.Context:
    """A new zmq.Context whose I/O threads are scheduled as SCHED_BATCH (on Linux).

    A send wakes the context's I/O thread, and woken, it preempts the sender: it then carries
    one message to the kernel per wake-up. A SCHED_BATCH thread does not preempt on waking (its
    share of the CPU stays that of nice 0), so it takes what was queued in one go once the
    sender waits or another core is free. Passes of 40 predictions on the 2-core machine of
    bench/README.md ("Frames by the pass", `python bench/publish.py`): 0.9-1.0 -> 0.46-0.53 us
    a message sent by one jitted call, 3.1-3.7 -> 1.9-2.2 us by pyzmq. The same holds for a
    receiver's I/O thread.
    """
    context = zmq.Context()
    if hasattr(os, "SCHED_BATCH"):
        context.set(zmq.THREAD_SCHED_POLICY, os.SCHED_BATCH)  # before its first socket
    return context


def direct_send(socket: zmq.Socket) -> Callable[..., Any]:
    """`socket.send` bound past pyzmq's Python wrapper, which only adds routing ids and groups
    for draft socket types: 0.62 -> 0.27 us for a 100-byte frame. A Producer sends one frame
    per reading."""
    base = getattr(zmq.backend, "Socket", None)
    if base is not None and isinstance(socket, base):
        return types.MethodType(base.send, socket)
    return socket.send


def _zmqcalls():
    try:
        from engine.fastpaths import zmqcalls
    except ImportError:
        return None
    return zmqcalls


def _raise_unless_again(errno: int) -> None:
    if errno not in (0, _EAGAIN):
        raise zmq.ZMQError(errno)


class FrameReceiver:
    """Receive a socket's queued frames into one reused buffer, without waiting."""

    def __init__(
        self,
        socket: zmq.Socket,
        max_frame_bytes: int,
        *,
        budget_bytes: int = PASS_BUDGET_BYTES,
        direct: bool = True,
    ) -> None:
        self.socket = socket
        self.budget = budget_bytes
        # Room for one whole frame past the budget: libzmq copies into what it is given, so a
        # frame over max_frame_bytes (which MAXMSGSIZE keeps out over tcp and ipc anyway) comes
        # cut to the room left, still over the limit, and is rejected as oversized.
        self.buffer = np.empty(budget_bytes + max_frame_bytes + 1, np.uint8)
        self.starts = np.zeros(1, np.int64)
        self._calls = _zmqcalls() if direct else None
        self.receive(0)  # compiles the kernel now, not on the first reading

    @property
    def direct(self) -> bool:
        return self._calls is not None

    def receive(self, max_frames: int, first: int = 0, *, budget: int | None = None) -> int:
        """Append up to `max_frames` frames in all after the first `first`; return how many
        there are now. Frame k is buffer[starts[k]:starts[k + 1]]. `budget` overrides the
        bytes after which no more frames are taken (room is kept for one frame past
        `budget_bytes` only)."""
        budget = self.budget if budget is None else budget
        if self.starts.size < max_frames + 1:
            grown = np.zeros(max_frames + 1, np.int64)
            grown[: self.starts.size] = self.starts
            self.starts = grown
        if self._calls is not None:
            n, errno = self._calls.recv_frames(
                self.socket.underlying, self.buffer, self.starts, first, max_frames, budget
            )
            _raise_unless_again(errno)
            return n
        return self._receive_with_pyzmq(max_frames, first, budget)

    def _receive_with_pyzmq(self, max_frames: int, first: int, budget: int) -> int:
        buffer, starts = self.buffer, self.starts
        n = first
        used = int(starts[first])
        while n < max_frames and used < budget:
            try:
                frame = self.socket.recv(_NOBLOCK)
            except zmq.Again:
                break
            size = min(len(frame), buffer.size - used)
            buffer[used : used + size] = np.frombuffer(frame, np.uint8, size)
            used += size
            n += 1
            starts[n] = used
        return n

    def frames(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` frames received: (bytes, bounds of n + 1 entries)."""
        starts = self.starts[: n + 1]
        return self.buffer[: starts[-1]], starts


class MessageSender:
    """Send [topic, payload] messages laid out in one buffer: the daemon's predictions on its
    PUB socket."""

    def __init__(self, socket: zmq.Socket, *, direct: bool = True) -> None:
        self.socket = socket
        self._calls = _zmqcalls() if direct else None
        if self._calls is not None:  # compile the kernel now, not on the first message
            no_data, no_messages = np.empty(0, np.uint8), np.zeros(1, np.int64)
            self._calls.send_messages(socket.underlying, no_data, no_messages, 2, 0)

    @property
    def direct(self) -> bool:
        return self._calls is not None

    def send_messages(self, data: np.ndarray, bounds: np.ndarray) -> int:
        """Send the messages, frame k being data[bounds[k]:bounds[k + 1]] and message i frames
        2i and 2i + 1; return how many went.

        No call blocks: a PUB socket drops what its high-water mark refuses (counted as sent, as
        libzmq does); a socket that queues instead stops there.
        """
        if self._calls is not None:
            sent, errno = self._calls.send_messages(self.socket.underlying, data, bounds, 2, 0)
            _raise_unless_again(errno)
            return sent
        return self._send_with_pyzmq(data, bounds)

    def _send_with_pyzmq(self, data: np.ndarray, bounds: np.ndarray) -> int:
        frames = split_frames(data, bounds)
        send = self.socket.send
        for i in range(len(frames) // 2):
            try:
                send(frames[2 * i], _NOBLOCK | _SNDMORE)
            except zmq.Again:
                return i
            send(frames[2 * i + 1], _NOBLOCK)  # libzmq takes the rest once it took the first
        return len(frames) // 2
