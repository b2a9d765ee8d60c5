"""Per-stream state: a stream id -> slot map over slabs that all share the slot axis.

Every per-stream array (hidden state, LSTM cell state, later anomaly statistics) is one slab
`(capacity, *shape)`; a stream owns one row in each. Slabs grow by doubling, so admitting a stream
costs amortised O(1) and stepping never copies. Dropped and evicted streams return their slot to a
free list. Without `max_streams` or `idle_timeout` the number of streams, and so memory, is
unbounded: a producer that invents ids forever exhausts memory, so set one of them in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

MAX_STREAM_ID_BYTES = 256


def check_stream_id(stream: object) -> str:
    """Return `stream` if it is a valid stream id, else raise ValueError saying why."""
    if not isinstance(stream, str):
        raise ValueError(f"stream id must be a str, got {type(stream).__name__}")
    if not stream:
        raise ValueError("stream id must not be empty")
    try:
        size = len(stream.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("stream id is not valid Unicode (it holds a lone surrogate)") from None
    if size > MAX_STREAM_ID_BYTES:
        raise ValueError(
            f"stream id is {size} UTF-8 bytes, more than the limit of {MAX_STREAM_ID_BYTES}"
        )
    return stream


class StateTable:
    """Slot allocation, growth and eviction for named per-stream slabs."""

    def __init__(
        self,
        specs: Mapping[str, tuple[tuple[int, ...], type | np.dtype]],
        *,
        capacity: int = 64,
        max_streams: int | None = None,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_streams is not None and max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self.specs = {
            name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in specs.items()
        }
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.clock = clock
        capacity = max(1, capacity if max_streams is None else min(capacity, max_streams))
        self.slabs: dict[str, np.ndarray] = {
            name: np.zeros((capacity, *shape), dtype) for name, (shape, dtype) in self.specs.items()
        }
        self.last_used = np.zeros(capacity, np.float64)
        self.slot_of: dict[str, int] = {}
        self.stream_of: list[str | None] = [None] * capacity
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.evictions = 0
        self.evicted_idle = 0
        self.evicted_lru = 0

    @property
    def capacity(self) -> int:
        return self.last_used.shape[0]

    def __len__(self) -> int:
        return len(self.slot_of)

    def bytes_per_stream(self) -> int:
        """Bytes of slab memory one stream occupies (excluding its id and dict entry)."""
        total = self.last_used.itemsize
        for shape, dtype in self.specs.values():
            total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return total

    def admit(self, stream: str, now: float | None = None) -> int:
        """Give a new stream a zeroed slot, evicting or growing as needed; return the slot."""
        check_stream_id(stream)
        if self.max_streams is not None and len(self.slot_of) >= self.max_streams:
            self._evict_least_recent()
            self.evicted_lru += 1
        if not self.free:
            self._grow()
        slot = self.free.pop()
        for slab in self.slabs.values():
            slab[slot] = 0
        self.slot_of[stream] = slot
        self.stream_of[slot] = stream
        self.last_used[slot] = self.clock() if now is None else now
        return slot

    def release(self, stream: str) -> bool:
        """Free a stream's slot; return whether it existed."""
        slot = self.slot_of.pop(stream, None)
        if slot is None:
            return False
        self.stream_of[slot] = None
        self.free.append(slot)
        return True

    def zero(self, slot: int) -> None:
        for slab in self.slabs.values():
            slab[slot] = 0

    def expire(self, slot: int) -> None:
        """Restart an idle stream from zeros, counted as an idle eviction and re-admission.

        Used when a stream comes back after idle_timeout before a sweep has removed it, so
        whether it restarts never depends on other streams' traffic.
        """
        self.zero(slot)
        self.evictions += 1
        self.evicted_idle += 1

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Drop streams unused for longer than idle_timeout; return their ids."""
        if self.idle_timeout is None or not self.slot_of:
            return []
        now = self.clock() if now is None else now
        slots = np.fromiter(self.slot_of.values(), np.int64, len(self.slot_of))
        idle = slots[self.last_used[slots] < now - self.idle_timeout]
        gone = [self.stream_of[s] for s in idle.tolist()]
        for stream in gone:
            self.release(stream)
        self.evictions += len(gone)
        self.evicted_idle += len(gone)
        return gone

    def live(self) -> tuple[list[str], np.ndarray]:
        """Return live stream ids and their slots, in admission order."""
        ids = list(self.slot_of)
        return ids, np.fromiter(self.slot_of.values(), np.int64, len(ids))

    def load(self, streams: Iterable[str], arrays: Mapping[str, np.ndarray]) -> None:
        """Admit `streams` with slab rows taken from `arrays` (one row per stream).

        Slabs missing from `arrays` start at zeros.
        """
        for i, stream in enumerate(streams):
            slot = self.admit(stream)
            for name, rows in arrays.items():
                self.slabs[name][slot] = rows[i]

    def _evict_least_recent(self) -> None:
        slots = np.fromiter(self.slot_of.values(), np.int64, len(self.slot_of))
        victim = int(slots[np.argmin(self.last_used[slots])])
        self.release(self.stream_of[victim])
        self.evictions += 1

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2 if self.max_streams is None else min(old * 2, self.max_streams)
        new = max(new, old + 1)
        for name, slab in self.slabs.items():
            grown = np.zeros((new, *slab.shape[1:]), slab.dtype)
            grown[:old] = slab
            self.slabs[name] = grown
        grown_used = np.zeros(new, np.float64)
        grown_used[:old] = self.last_used
        self.last_used = grown_used
        self.stream_of.extend([None] * (new - old))
        self.free.extend(range(new - 1, old - 1, -1))
