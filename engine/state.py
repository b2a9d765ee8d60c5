"""Per-stream state: a stream id -> slot map over slabs that all share the slot axis.

Every per-stream array (hidden state, LSTM cell state, later anomaly statistics) is one slab
`(capacity, *shape)`; a stream owns one row in each. Slabs grow by doubling, so admitting a stream
costs amortised O(1) and stepping never copies. Dropped and evicted streams return their slot to a
free list; when fewer than a quarter of the slots are live the table shrinks (`StateTable.shrink`),
renumbering the live slots. Without `max_streams` or `idle_timeout` the number of streams, and so
memory, is unbounded: a producer that invents ids forever exhausts memory, so set one of them in
production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from engine.fastpaths.idindex import EMPTY, find_slots, insert_slots, move_ids, remove_slots

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


class IdIndex:
    """Each stream's UTF-8 id -> its slot, for looking a pass's ids up without Python strings
    (`fastpaths.idindex`); the StateTable keeps it in step with `slot_of`.

    The ids sit one after another in an arena; a removed one stays there as garbage until the
    arena is full, then the live ones are moved together (into an arena twice their size when
    they fill half of it). The hash table (int32 slots: half the cache lines of int64) is
    rebuilt at four times the live entries when live and removed entries fill half of it.
    """

    def __init__(self, capacity: int) -> None:
        self.start = np.zeros(capacity, np.int64)
        self.length = np.zeros(capacity, np.int64)
        self.live = np.zeros(capacity, np.bool_)
        self.arena = np.empty(max(256, 16 * capacity), np.uint8)
        self.arena_used = 0
        self.live_bytes = 0
        self.entries = 0
        self.gone = 0
        self.table = np.full(_table_size(capacity), EMPTY, np.int32)
        # compiles (or loads) the kernels now, not on a daemon's first readings
        self.find(np.zeros(1, np.uint8), 0)
        insert_slots(self.table, self.arena, self.start, self.length, np.empty(0, np.int64))
        move_ids(self.arena, self.start, self.length, np.empty(0, np.int64), self.arena)
        self.remove(np.empty(0, np.int64))

    def find(self, ids: np.ndarray, n: int) -> np.ndarray | None:
        """Slots of the n ids in `ids` (each followed by a 0 byte); None if one has none."""
        slots, firsts, homes = np.empty((3, n), np.int64)
        if find_slots(self.table, self.arena, self.start, self.length, ids, slots, firsts, homes):
            return None
        return slots

    def add(self, stream_id: bytes, slot: int) -> None:
        n = len(stream_id)
        if self.arena_used + n > self.arena.size:
            self._move_live_ids(room=n)
        self.arena[self.arena_used : self.arena_used + n] = np.frombuffer(stream_id, np.uint8)
        self.start[slot], self.length[slot], self.live[slot] = self.arena_used, n, True
        self.arena_used += n
        self.live_bytes += n
        self.entries += 1
        if 2 * (self.entries + self.gone) > self.table.size:
            self._rehash()  # which enters every live slot, this one too
        else:
            insert_slots(self.table, self.arena, self.start, self.length, np.array([slot]))

    def remove(self, slots: np.ndarray) -> None:
        """Take the ids of `slots` (int64) out of the index, in one jitted call."""
        removed = np.empty(slots.shape[0], np.bool_)
        remove_slots(self.table, self.arena, self.start, self.length, slots, removed)
        gone = slots[removed]
        self.entries -= gone.size
        self.gone += gone.size
        self.live_bytes -= int(self.length[gone].sum())
        self.live[gone] = False

    def grow(self, capacity: int) -> None:
        """Make room for slots up to `capacity`."""
        extra = capacity - self.live.size
        self.start = np.concatenate([self.start, np.zeros(extra, np.int64)])
        self.length = np.concatenate([self.length, np.zeros(extra, np.int64)])
        self.live = np.concatenate([self.live, np.zeros(extra, np.bool_)])

    def compact(self, keep: np.ndarray, capacity: int) -> None:
        """Renumber slot keep[i] (int64, the live slots) as slot i, in room for `capacity`
        slots; the live ids move together into an arena twice their size."""
        n = keep.shape[0]
        start, length = np.zeros((2, capacity), np.int64)
        start[:n], length[:n] = self.start[keep], self.length[keep]
        self.live = np.zeros(capacity, np.bool_)
        self.live[:n] = True
        arena = np.empty(max(256, 2 * self.live_bytes), np.uint8)
        self.arena_used = move_ids(self.arena, start, length, np.arange(n), arena)
        self.start, self.length, self.arena = start, length, arena
        self._rehash()

    def _move_live_ids(self, room: int) -> None:
        arena = np.empty(max(self.arena.size, 2 * (self.live_bytes + room)), np.uint8)
        live = np.flatnonzero(self.live)
        self.arena_used = move_ids(self.arena, self.start, self.length, live, arena)
        self.arena = arena

    def _rehash(self) -> None:
        self.table = np.full(_table_size(self.entries), EMPTY, np.int32)
        insert_slots(self.table, self.arena, self.start, self.length, np.flatnonzero(self.live))
        self.gone = 0


def faulted_in(size: int) -> np.ndarray:
    """Return `size` bytes (uint8) of memory whose pages are in place: written once, with the
    GIL let go, so that a thread may do it for a later copy on the engine's thread."""
    memory = np.empty(size, np.uint8)
    memory.fill(0)
    return memory


def _rounded(size: int) -> int:
    """`size` rounded up to a multiple of 64: each copy in a block starts on a cache line."""
    return -(-size // 64) * 64


def _table_size(entries: int) -> int:
    """A power of two at least four times `entries` (the table is rebuilt at half full)."""
    return 1 << max(4, (4 * entries - 1).bit_length())


# The slabs shrink when fewer than 1/SHRINK_BELOW of their slots are live, to twice the live
# streams (and no fewer than they started with): half full, the live streams must double before
# the slabs grow again or halve before they shrink again, so a population that hovers around
# either mark costs no reallocation per pass.
SHRINK_BELOW = 4

# Over max_streams, the least recently used streams go this share of max_streams at a time:
# finding them scans every slot, which per admitted stream took ~1 ms at 20k streams and ~19 ms
# at 500k; in bunches the scan is paid once per max_streams // 64 admissions.
LRU_EVICTION_SHARE = 64


def row_bytes(specs: Mapping[str, tuple[tuple[int, ...], type | np.dtype]]) -> int:
    """Return the slab bytes one stream takes in a StateTable of `specs`: its rows and its
    last-used time (not its id, dict and index entries)."""
    total = np.dtype(np.float64).itemsize  # last_used
    for shape, dtype in specs.values():
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return total


class StateTable:
    """Slot allocation, growth, shrinking and eviction for named per-stream slabs.

    `on_evict(slots)`, when given, is called before streams are evicted (idle, least recently
    used, or expired on their return), with their slots (int64) still theirs; it must not
    admit, release or evict streams.
    """

    def __init__(
        self,
        specs: Mapping[str, tuple[tuple[int, ...], type | np.dtype]],
        *,
        capacity: int = 64,
        max_streams: int | None = None,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[np.ndarray], None] | None = None,
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
        # Called with the slots (int64) of streams about to be evicted, while their rows, ids and
        # slots are still theirs: a caller's last look at state that is about to go.
        self.on_evict = on_evict
        capacity = max(1, capacity if max_streams is None else min(capacity, max_streams))
        self.initial_capacity = capacity  # the slabs never shrink below it
        self.slabs: dict[str, np.ndarray] = {
            name: np.zeros((capacity, *shape), dtype) for name, (shape, dtype) in self.specs.items()
        }
        # +inf in free slots: never idle, never the least recent, so sweeps scan the array alone
        self.last_used = np.full(capacity, np.inf)
        self.slot_of: dict[str, int] = {}
        self.stream_of: list[str | None] = [None] * capacity
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.index = IdIndex(capacity)
        self.evictions = 0
        self.shrinks = 0  # how often shrink() renumbered the slots
        self.evicted_idle = 0
        self.evicted_lru = 0
        # Streams a model reload with reset forgot: StreamEngine.swap_model counts them here, with
        # the others, so that every count carries over to the table that takes this one's place.
        self.evicted_reload = 0

    @property
    def capacity(self) -> int:
        return self.last_used.shape[0]

    def __len__(self) -> int:
        return len(self.slot_of)

    def bytes_per_stream(self) -> int:
        """Bytes of slab memory one stream occupies (excluding its id, dict and index entries)."""
        return row_bytes(self.specs)

    def admit(self, stream: str, now: float | None = None) -> int:
        """Give a new stream a zeroed slot, evicting or growing as needed; return the slot."""
        check_stream_id(stream)
        if self.max_streams is not None and len(self.slot_of) >= self.max_streams:
            self._evict_least_recent()
        if not self.free:
            self._grow()
        slot = self.free.pop()
        for slab in self.slabs.values():
            slab[slot] = 0
        self.slot_of[stream] = slot
        self.stream_of[slot] = stream
        self.index.add(stream.encode("utf-8"), slot)
        self.last_used[slot] = self.clock() if now is None else now
        return slot

    def release(self, stream: str) -> bool:
        """Free a stream's slot, shrinking the slabs if few are left live (`shrink`, which
        renumbers slots); return whether the stream existed."""
        slot = self.slot_of.get(stream)
        if slot is None:
            return False
        self._release_slots(np.array([slot], np.int64))
        self._shrink_if_sparse()
        return True

    def _release_slots(self, slots: np.ndarray) -> list[str]:
        """Free live `slots` (int64) at once; return their streams. An idle sweep may free a
        hundred thousand: one call takes their ids out of the index."""
        streams = []
        for slot in slots.tolist():
            stream = self.stream_of[slot]
            del self.slot_of[stream]
            self.stream_of[slot] = None
            streams.append(stream)
        self.last_used[slots] = np.inf
        self.index.remove(slots)
        self.free.extend(slots.tolist())
        return streams

    def zero(self, slot: int) -> None:
        for slab in self.slabs.values():
            slab[slot] = 0

    def expire(self, slot: int) -> None:
        """Restart an idle stream from zeros, counted as an idle eviction and re-admission.

        Used when a stream comes back after idle_timeout before a sweep has removed it, so
        whether it restarts never depends on other streams' traffic.
        """
        self._evicting(np.array([slot], np.int64))
        self.zero(slot)
        self.evictions += 1
        self.evicted_idle += 1

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Drop streams unused for longer than idle_timeout, shrinking the slabs if few are
        left live (`shrink`, which renumbers slots); return their ids."""
        if self.idle_timeout is None or not self.slot_of:
            return []
        now = self.clock() if now is None else now
        idle = np.flatnonzero(self.last_used < now - self.idle_timeout)
        self._evicting(idle)
        gone = self._release_slots(idle)
        self.evictions += len(gone)
        self.evicted_idle += len(gone)
        self._shrink_if_sparse()
        return gone

    def shrink(self) -> None:
        """Move the live streams to the lowest slots, keeping their order, and reallocate every
        per-slot array at twice the live streams (at least `initial_capacity`) slots.

        Every slot changes: hold none across this. Each stream keeps its rows, last-used time,
        id and place in admission order. The old arrays go back to the allocator, and the big
        ones (glibc maps those over 32 MB apart) to the system at once.
        """
        live = np.flatnonzero(self.index.live)
        n = live.shape[0]
        capacity = max(self.initial_capacity, 2 * n)
        for name, slab in self.slabs.items():  # in place: AnomalyScorer holds this dict
            smaller = np.zeros((capacity, *slab.shape[1:]), slab.dtype)
            # mode="clip" (the slots are in range) spares the copy "raise" makes of `out`
            np.take(slab, live, axis=0, out=smaller[:n], mode="clip")
            self.slabs[name] = smaller
        last_used = np.full(capacity, np.inf)
        last_used[:n] = self.last_used[live]
        self.last_used = last_used
        streams = [self.stream_of[slot] for slot in live.tolist()]
        self.stream_of = streams + [None] * (capacity - n)
        # A copy, as a dict never gives back the room of deleted keys; same order, new slots
        self.slot_of = self.slot_of.copy()
        self.slot_of.update(zip(streams, range(n), strict=True))
        self.index.compact(live, capacity)
        self.free = list(range(capacity - 1, n - 1, -1))
        self.shrinks += 1

    def _shrink_if_sparse(self) -> None:
        if self.capacity > self.initial_capacity and SHRINK_BELOW * len(self) < self.capacity:
            self.shrink()

    def used(self) -> int:
        """One past the highest live slot (0 with none): every slot from there on is free."""
        backwards = self.index.live[::-1]
        last = int(np.argmax(backwards))  # the first True from the end
        return backwards.size - last if backwards.size and backwards[last] else 0

    def copy_bytes(self, rows: int) -> int:
        """Bytes of memory `copy_used` needs to copy `rows` rows."""
        sizes = [rows * slab[:1].nbytes for slab in self.slabs.values()] + [rows * 8]
        return sum(_rounded(size) for size in sizes)

    def copy_used(
        self, memory: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Return copies of every slab's rows and of last_used, each up to `used()`.

        The copies share one block of memory: `memory` (uint8, from `faulted_in`) when it is
        big enough, else a new one. The kernel zeroes a new block's pages as the copy first
        touches them, which at 100,000 and 300,000 streams took about half the copy's time.
        """
        used = self.used()
        sources = [slab[:used] for slab in self.slabs.values()] + [self.last_used[:used]]
        if memory is None or memory.size < self.copy_bytes(used):
            memory = np.empty(self.copy_bytes(used), np.uint8)
        copies = []
        start = 0
        for source in sources:
            copy = memory[start : start + source.nbytes].view(source.dtype).reshape(source.shape)
            np.copyto(copy, source)
            copies.append(copy)
            start += _rounded(source.nbytes)
        return dict(zip(self.slabs, copies, strict=False)), copies[-1]

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

    def evict_over_limit(self) -> int:
        """Evict the least recently used streams beyond max_streams, all at once (streams
        loaded from a snapshot taken under a higher limit); return how many went."""
        excess = 0 if self.max_streams is None else len(self) - self.max_streams
        if excess <= 0:
            return 0
        evicted = self._evict_oldest(excess)
        self._shrink_if_sparse()
        return evicted

    def _evict_least_recent(self) -> None:
        """Free the least recently used streams, 1/LRU_EVICTION_SHARE of max_streams (at least
        one). Streams a batch is using carry last_used +inf meanwhile and are never chosen."""
        assert self.max_streams is not None
        self._evict_oldest(min(max(1, self.max_streams // LRU_EVICTION_SHARE), len(self.last_used)))

    def _evict_oldest(self, count: int) -> int:
        """Evict up to `count` least recently used streams, counted as LRU evictions; return how
        many went. Free slots, and streams shielded with last_used +inf, are never chosen."""
        oldest = np.argpartition(self.last_used, count - 1)[:count]
        oldest = oldest[np.isfinite(self.last_used[oldest])]
        self._evicting(oldest)
        victims = self._release_slots(oldest)
        self.evictions += len(victims)
        self.evicted_lru += len(victims)
        return len(victims)

    def _evicting(self, slots: np.ndarray) -> None:
        if self.on_evict is not None and slots.size:
            self.on_evict(slots)

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2 if self.max_streams is None else min(old * 2, self.max_streams)
        new = max(new, old + 1)
        for name, slab in self.slabs.items():
            grown = np.zeros((new, *slab.shape[1:]), slab.dtype)
            grown[:old] = slab
            self.slabs[name] = grown
        grown_used = np.full(new, np.inf)
        grown_used[:old] = self.last_used
        self.last_used = grown_used
        self.stream_of.extend([None] * (new - old))
        self.index.grow(new)
        self.free.extend(range(new - 1, old - 1, -1))
