"""Jitted loops over libzmq's own `zmq_recv` and `zmq_send`: a pass's frames in one call.

pyzmq costs about half a microsecond to a microsecond of Python per frame, and a daemon fed
single readings receives one frame per reading and sends two per prediction: at 100k readings/s
the sends were 29% of its main thread's busy samples (bench/README.md, "Frames by the pass").
These kernels call the libzmq that pyzmq itself loaded, on the socket pyzmq opened
(`Socket.underlying`), so the socket's options, CURVE and the poller all stay pyzmq's.

Importing this module raises ImportError when that libzmq cannot be found (it is looked up in
the process's memory map, so on Linux only); `engine.socket_io` then uses pyzmq's calls. The
symbols are made known to LLVM before any kernel is compiled or loaded from the cache, which
resolves them by name.
"""

from __future__ import annotations

import errno
import os

import llvmlite.binding
import numpy as np
import zmq
from numba import types

from engine.kernels._jit import inline_kernel, kernel


def _loaded_libzmq() -> str:
    """Path of the libzmq shared library mapped into this process (by importing zmq)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libzmq"):
                    return path
    except OSError:
        pass
    raise ImportError("libzmq is not mapped into this process: pyzmq's calls will be used")


llvmlite.binding.load_library_permanently(_loaded_libzmq())

_zmq_send = types.ExternalFunction(
    "zmq_send", types.intc(types.voidptr, types.voidptr, types.size_t, types.intc)
)
_zmq_recv = types.ExternalFunction(
    "zmq_recv", types.intc(types.voidptr, types.voidptr, types.size_t, types.intc)
)
_zmq_errno = types.ExternalFunction("zmq_errno", types.intc())
_zmq_poll = types.ExternalFunction("zmq_poll", types.intc(types.voidptr, types.intc, types.long_))

_DONTWAIT = int(zmq.DONTWAIT)
_POLLIN = int(zmq.POLLIN)
_SNDMORE = int(zmq.SNDMORE)
_EINTR = int(errno.EINTR)


@kernel
def recv_frames(socket, buf, starts, first, max_frames, budget):
    """Receive frames into `buf` without waiting; return (frames, errno of the last call).

    Frame k lands at buf[starts[k]:starts[k + 1]]; receiving starts at frame `first` (starts
    [first] set) and stops at `max_frames` frames, once `budget` bytes are used, or when the
    queue is empty (errno EAGAIN). The caller keeps room for a whole frame past `budget`; a
    frame longer than the room left comes truncated to it (libzmq says how long it was).
    """
    base = buf.ctypes.data
    used = starts[first]
    n = first
    while n < max_frames and used < budget:
        room = buf.size - used
        size = _zmq_recv(socket, base + used, room, _DONTWAIT)
        if size < 0:
            error = _zmq_errno()
            if error == _EINTR:  # a signal arrived: look again
                continue
            return n, error
        used += min(size, room)
        n += 1
        starts[n] = used
    return n, 0


@kernel
def send_messages(socket, data, bounds, parts, first):
    """Send messages of `parts` frames each, from message `first` on, without waiting: frame
    k is data[bounds[k]:bounds[k + 1]], message i frames parts * i to parts * i + parts - 1.
    Return (messages sent in all, errno of the call that failed or 0).

    A PUB socket drops at its high-water mark rather than block; a PUSH socket fails with
    EAGAIN there, and the caller waits for room before it sends the rest."""
    base = data.ctypes.data
    n = (bounds.size - 1) // parts
    for i in range(first, n):
        for k in range(parts * i, parts * i + parts):
            more = k + 1 < parts * i + parts
            error = _send_frame(socket, base + bounds[k], bounds[k + 1] - bounds[k], more)
            if error != 0:
                return i, error
    return n, 0


@inline_kernel
def _send_frame(socket, address, size, more):
    """Send one frame, again if a signal interrupted it; return 0 or the error number."""
    flags = _DONTWAIT | _SNDMORE if more else _DONTWAIT
    while _zmq_send(socket, address, size, flags) < 0:
        error = _zmq_errno()
        if error != _EINTR:
            return error
    return 0


def poll_item(socket: zmq.Socket) -> np.ndarray:
    """A `zmq_pollitem_t` asking whether `socket` has something to receive, for
    `wait_readable`: {void *socket; int fd; short events; short revents} in two int64."""
    return np.array([socket.underlying, _POLLIN << 32], np.int64)


@kernel
def wait_readable(item, timeout_ms):
    """Wait up to `timeout_ms` (-1: for ever) for the socket of `item` (`poll_item`) to have
    something to receive; return 1 if it has, 0 if the time ran out, else minus the errno (-EINTR
    when a signal arrived: the caller lets Python run its handler, then waits again)."""
    ready = _zmq_poll(item.ctypes.data, 1, timeout_ms)
    return ready if ready >= 0 else -_zmq_errno()
