"""`Producer`: send readings to a running `rnnstream serve` over a ZeroMQ PUSH socket."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from engine import protocol
from engine.connection import ConnectionProblem, ConnectionWatch
from engine.keys import KeyLike, apply_curve_client
from engine.socket_io import context_with_batch_io_threads, direct_send

DEFAULT_INGEST_ENDPOINT = "tcp://127.0.0.1:5555"


class Producer:
    """Send readings to the daemon's ingest socket, numbering each stream's readings 1, 2, 3, ...

    The PUSH socket connects (the daemon binds), so messages sent before the daemon is up are
    queued, up to `hwm` messages; beyond that `send` blocks, or raises `zmq.Again` after
    `send_timeout` seconds when one is given. `close` waits up to `linger` seconds to flush and
    returns why readings were left unsent, if they were; `connection_problem` says at any time
    what keeps readings from the daemon (nothing listening, a refused CURVE key, ...). Once the
    daemon has refused the connection libzmq may drop it for good, and then `send` blocks at
    once: give a `send_timeout` and ask `connection_problem` on `zmq.Again`, as `rnnstream
    produce` does. `max_message_bytes` is the daemon's `--max-message-bytes`: ZeroMQ drops a
    bigger message, and what was queued behind it, without a word, so `send_many` refuses one.

    Send each stream's readings through one long-lived Producer. Two numbering the same stream
    give the same seqs, and the daemon drops the later as duplicates; a new Producer's seq 1 is
    taken for a restarted producer (the stream's count starts afresh). A Producer is not
    thread-safe (nor is its ZeroMQ socket: shared, it can abort the process): give each thread
    its own, sharing a `context` if you like.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_INGEST_ENDPOINT,
        *,
        context: zmq.Context | None = None,
        hwm: int = 100_000,
        linger: float = 5.0,
        send_timeout: float | None = None,
        max_message_bytes: int = protocol.DEFAULT_MAX_FRAME_BYTES,
        server_public_key: KeyLike | None = None,
        client_public_key: KeyLike | None = None,
        client_secret_key: KeyLike | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._own_context = context is None
        self._context = context if context is not None else context_with_batch_io_threads()
        self._seq: dict[str, int] = {}
        # Handed to ZeroMQ, which sends them when a connection gets through (`close` says
        # whether some never left).
        self.sent_messages = 0
        self.sent_readings = 0
        # Known lost at `close`: all sent readings when no connection got through, else 0, or
        # None when readings were left in a queue ZeroMQ does not count.
        self.lost_readings: int | None = 0
        self._linger = linger
        self._max_message_bytes = max_message_bytes
        self._left_unsent: ConnectionProblem | None = None
        socket = self._context.socket(zmq.PUSH)
        watch = None
        try:
            socket.sndhwm = hwm
            socket.linger = int(linger * 1000)
            if send_timeout is not None:
                socket.sndtimeo = int(send_timeout * 1000)
            apply_curve_client(socket, server_public_key, client_public_key, client_secret_key)
            watch = ConnectionWatch(socket, "ingest", curve=server_public_key is not None)
            socket.connect(endpoint)
        except Exception:
            if watch is not None:
                watch.close()
            socket.close(linger=0)
            if self._own_context:
                self._context.term()
            raise
        self._socket = socket
        self._watch = watch
        self._send = direct_send(socket)

    def last_seq(self, stream: str) -> int:
        """Return the seq of `stream`'s last sent reading (0 when none)."""
        return self._seq.get(stream, 0)

    def send(
        self,
        stream: str,
        values: Sequence[float] | np.ndarray | float | np.number,
        ts: float | None = None,
        *,
        reset: bool = False,
        end: bool = False,
    ) -> int:
        """Send one reading of `stream`; return the seq it was given.

        `ts` defaults to now (`time.time()`). `reset` asks the daemon to start the stream's state
        afresh before this reading, `end` to forget the stream after it; this Producer forgets
        the stream's count too (a later reading starts again at seq 1, which the daemon expects
        of a new sequence), so ending streams keeps a long-lived producer's memory bounded.
        """
        if type(stream) is not str:
            raise TypeError(f"stream id must be a str, got {type(stream).__name__}")
        # The count moves only once the frame is sent: a failed send (bad values, zmq.Again at
        # the high-water mark) leaves it, so a retry gets the same seq and the daemon no gap.
        seq = self._seq.get(stream, 0) + 1
        frame = protocol.encode_reading(
            stream,
            values,
            seq=seq,
            ts=time.time() if ts is None else ts,
            reset=reset,
            end=end,
        )
        self._send(frame)  # copying a frame this small beats zero-copy's bookkeeping
        self.sent_messages += 1
        self.sent_readings += 1
        if end:
            self._seq.pop(stream, None)
        else:
            self._seq[stream] = seq
        return seq

    def send_many(
        self,
        streams: Sequence[str],
        X: np.ndarray,
        ts: float | Sequence[float] | None = None,
        *,
        reset: Sequence[bool] | None = None,
        end: Sequence[bool] | None = None,
    ) -> list[int]:
        """Send one columnar message: row i of `X` (n, n_inputs) is a reading of `streams[i]`.

        Each row gets the next seq of its stream (a stream repeated in one call gets consecutive
        seqs, in row order). `ts` is one time for all rows or one per row; default now. A stream
        whose last row here has `end` is forgotten afterwards, as in `send`. A message over
        `max_message_bytes` raises ValueError, sending nothing: send its rows in smaller parts.
        """
        streams = list(streams)
        last = self._seq.get
        if len(set(streams)) == len(streams):
            # each stream once: one lookup per row and one C-level update (~2x the loop's speed)
            seqs = [last(s, 0) + 1 for s in streams]
        else:
            given: dict[str, int] = {}  # seqs given so far in this call
            seqs = []
            for s in streams:
                given[s] = seq = given.get(s, last(s, 0)) + 1
                seqs.append(seq)
        frame = protocol.encode_batch(
            streams,
            np.asarray(X),
            seq=seqs,
            ts=time.time() if ts is None else ts,
            reset=reset,
            end=end,
        )
        if len(frame) > self._max_message_bytes:
            raise ValueError(
                f"{len(streams)} readings make a message of {len(frame)} bytes, over the "
                f"daemon's limit of {self._max_message_bytes} (--max-message-bytes): send them "
                "in smaller parts"
            )
        self._socket.send(frame, copy=False)
        # counted only once sent, as in `send`; a repeated stream's last (highest) seq wins
        self._seq.update(zip(streams, seqs, strict=True))
        self.sent_messages += 1
        self.sent_readings += len(streams)
        if end is not None:
            last_end = dict(zip(streams, end, strict=True))  # each stream's last row wins
            for stream, ended in last_end.items():
                if ended:
                    del self._seq[stream]
        return seqs

    def connection_problem(self, wait: float = 0.0) -> ConnectionProblem | None:
        """Return what keeps readings from the daemon, or None once the connection got through.

        The problem's `reason` says it in a sentence: nothing accepted the connection, the
        daemon refused this client's CURVE key, ...; its `handshake_failed` is true when the
        trouble lasts until keys or endpoint change. With `wait` > 0, wait up to that many
        seconds for the connection to get through or fail. It reads the socket's connection
        events, none of which comes per reading, so sending costs the same either way.
        """
        return self._watch.problem(wait)

    def close(self, linger: float | None = None) -> ConnectionProblem | None:
        """Close the socket, waiting up to `linger` seconds (default as constructed) to flush.

        Return None when no reading is known to be left unsent, else why some were (a second
        call returns the same). Readings wait for a connection that gets through: while none
        has, close waits for one and drops them when a handshake fails or the linger runs out,
        returning `connection_problem()` (`lost_readings` is then all of them). Once connected,
        ZeroMQ does not tell whether its queue emptied: a Producer with a context of its own
        waits for that, and counts flushing that takes the whole linger as readings left unsent
        (how many, it cannot tell: `lost_readings` is None). With a context given, ZeroMQ
        flushes in the background.
        """
        if self._socket.closed:
            return self._left_unsent
        linger = self._linger if linger is None else linger
        began = time.monotonic()
        problem = self._watch.problem(linger) if self.sent_messages else None
        self._watch.close()
        if problem is not None and not problem.hung_up:
            # nothing got through, so nothing queued can leave
            self._socket.close(linger=0)
            if self._own_context:
                self._context.term()
            self._left_unsent = problem
            self.lost_readings = self.sent_readings
            return problem
        left = max(0.0, linger - (time.monotonic() - began))
        self._socket.close(linger=int(left * 1000))
        if self._own_context:
            began = time.monotonic()
            self._context.term()  # returns once the queue is empty, or after `left`
            # ZeroMQ counts whole milliseconds, hence the slack
            if self.sent_messages and left > 0 and time.monotonic() - began >= left - 0.01:
                self._left_unsent = problem or ConnectionProblem(
                    "the daemon took the connection but not every reading before the linger ran "
                    "out: did it fall behind?"
                )
                self.lost_readings = None
        return self._left_unsent

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
