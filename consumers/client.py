"""`Subscriber`: receive decoded predictions, alerts and errors from a running `rnnstream serve`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import zmq

from engine import protocol
from engine.connection import ConnectionProblem, ConnectionWatch
from engine.keys import KeyLike, apply_curve_client
from engine.socket_io import context_with_batch_io_threads

DEFAULT_PUBLISH_ENDPOINT = "tcp://127.0.0.1:5556"

_PER_STREAM_PREFIXES = (b"pred.", b"alert.")


class Subscriber:
    """Subscribe to the daemon's publications and yield `(kind, payload)` pairs.

    `topics` are ZeroMQ prefixes (`"pred."`, `"alert."`, `"error"`, `"batch.pred"`, or `""` for
    everything). A prefix also matches longer stream ids (`pred.pump-7` matches `pred.pump-70`),
    so `exact_streams` narrows by payload: only messages whose `stream` is one of them are
    kept, batch publications are cut down to those rows, and errors without a stream pass. With
    `exact_streams`, the generic `pred.` / `alert.` prefixes are narrowed to one per stream so the
    publisher filters most of the traffic. Malformed publications are skipped and counted in
    `malformed`. A Subscriber that gets nothing can ask `connection_problem` why.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_PUBLISH_ENDPOINT,
        topics: Iterable[str | bytes] = ("pred.",),
        *,
        exact_streams: Iterable[str] | None = None,
        context: zmq.Context | None = None,
        hwm: int = 100_000,
        server_public_key: KeyLike | None = None,
        client_public_key: KeyLike | None = None,
        client_secret_key: KeyLike | None = None,
    ) -> None:
        # A str is itself an iterable of str: taken as a collection, "alert." would subscribe
        # to "a", "l", "e", ... (and so to errors), and exact_streams="pump-7" would keep nothing.
        if isinstance(topics, str | bytes):
            raise TypeError(f"topics must be a collection of prefixes, e.g. ({topics!r},)")
        if isinstance(exact_streams, str | bytes):
            raise TypeError(
                f"exact_streams must be a collection of stream ids, e.g. [{exact_streams!r}]"
            )
        self.endpoint = endpoint
        self.exact_streams = None if exact_streams is None else frozenset(exact_streams)
        self.malformed = 0
        self._own_context = context is None
        self._context = context if context is not None else context_with_batch_io_threads()
        prefixes = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in topics]
        self.subscriptions = self._narrow(prefixes)
        socket = self._context.socket(zmq.SUB)
        watch = None
        try:
            socket.rcvhwm = hwm
            socket.linger = 0
            apply_curve_client(socket, server_public_key, client_public_key, client_secret_key)
            for prefix in self.subscriptions:
                socket.setsockopt(zmq.SUBSCRIBE, prefix)
            watch = ConnectionWatch(socket, "publish", curve=server_public_key is not None)
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
        self._poller = zmq.Poller()
        self._poller.register(socket, zmq.POLLIN)

    def _narrow(self, prefixes: list[bytes]) -> list[bytes]:
        if self.exact_streams is None:
            return prefixes
        narrowed: list[bytes] = []
        for prefix in prefixes:
            if prefix in _PER_STREAM_PREFIXES:
                narrowed += [prefix + s.encode("utf-8") for s in sorted(self.exact_streams)]
            else:
                narrowed.append(prefix)
        return narrowed

    def _filter(self, kind: str, payload: dict) -> dict | None:
        wanted = self.exact_streams
        if wanted is None:
            return payload
        if kind == "batch":
            keep = [i for i, s in enumerate(payload["streams"]) if s in wanted]
            if not keep:
                return None
            if len(keep) == len(payload["streams"]):
                return payload
            idx = np.asarray(keep)
            out = dict(payload)
            out["streams"] = [payload["streams"][i] for i in keep]
            out["seq"] = [payload["seq"][i] for i in keep]
            out["ts"] = [payload["ts"][i] for i in keep]
            out["prediction"] = payload["prediction"][idx]
            out["score"] = payload["score"][idx]
            return out
        stream = payload.get("stream")
        if kind == "error" and stream is None:
            return payload
        return payload if stream in wanted else None

    def recv(self, timeout: float | None = None) -> tuple[str, dict] | None:
        """Return the next wanted `(kind, payload)`, or None when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                wait_ms = None
            else:
                wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                topic = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                if not self._poller.poll(wait_ms):
                    return None
                continue
            # One RCVMORE look a message instead of recv_multipart's two (~1 us each): a
            # publication is [topic, payload]. A one-frame message is caught here; a third frame
            # is read as the next message and caught then, so the reader stays in step.
            if not self._socket.getsockopt(zmq.RCVMORE):
                self.malformed += 1
                continue
            payload_frame = self._socket.recv()
            try:
                kind, payload = protocol.decode_publication(topic, payload_frame)
            except protocol.ProtocolError:
                self.malformed += 1
                continue
            payload = self._filter(kind, payload)
            if payload is not None:
                return kind, payload
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def connection_problem(self, wait: float = 0.0) -> ConnectionProblem | None:
        """Return what keeps publications from reaching this Subscriber, or None once the
        connection got through (then only the daemon's silence or the topics can).

        The problem's `reason` says it in a sentence: nothing accepted the connection, the
        daemon refused this client's CURVE key, ...; its `handshake_failed` is true when the
        trouble lasts until keys or endpoint change. With `wait` > 0, wait up to that many
        seconds for the connection to get through or fail.
        """
        return self._watch.problem(wait)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        while True:
            item = self.recv()
            if item is not None:
                yield item

    def close(self) -> None:
        """Close the socket (and the context when this Subscriber created it)."""
        if self._socket.closed:
            return
        self._poller.unregister(self._socket)
        self._watch.close()
        self._socket.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
