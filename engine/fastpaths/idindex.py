"""Stream ids -> slots without Python strings: an open-addressing table over the ids' bytes.

Looking a pass's stream ids up in a dict means making a str of each (the decoder's bytes split
and decoded) and hashing it: ~0.3 us a reading at 10,000 streams, a seventh of a daemon's pass
of single readings. `find_slots` looks up the bytes the jitted decoder wrote instead.

The table holds slots (`EMPTY` or `GONE` where none); slot s's id is arena[start[s]:start[s] +
length[s]]. Lookups probe linearly from the id's FNV-1a hash; a removed entry becomes `GONE` so
probes go on past it. `state.IdIndex` keeps the table at most half full and in step with a
`StateTable`.
"""

from __future__ import annotations

import numpy as np

from engine.fastpaths._bytes import matches
from engine.kernels._jit import inline_kernel, kernel
from engine.kernels.cells import _prefetch_bytes

EMPTY = -1
GONE = -2
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)
_LEAD = 8  # ids between the prefetch stages of `find_slots`


@inline_kernel
def _hash_byte(h, byte):
    """One byte's step of FNV-1a 64, starting from _FNV_OFFSET."""
    return (h ^ np.uint64(byte)) * _FNV_PRIME


@inline_kernel
def _home(buf, first, n, mask):
    """Where an id's probe starts: its FNV-1a 64 hash, masked to the table."""
    h = _FNV_OFFSET
    for k in range(n):
        h = _hash_byte(h, buf[first + k])
    return np.int64(h & np.uint64(mask))


@inline_kernel
def _same_id(buf, first, n, arena, start, length):
    return n == length and matches(buf, first, first + n, arena, start, n)


@kernel
def find_slots(table, arena, start, length, ids, slots, firsts, homes):
    """Set slots[i] to the slot of the i-th id of `ids` (each id followed by a 0 byte, as
    `wire.parse_readings` writes them), or EMPTY when it has none; return how many had none
    (ids missing from `ids` count too). firsts and homes (int64, as long as slots) are scratch.

    Between a daemon's lookups its engine step runs through megabytes, so the table, start,
    length and arena lines an id needs are rarely in cache, and each waits on the one before
    (4096 ids with 16 MB touched between calls: ~200 ns an id). The ids are hashed first;
    then, `_LEAD` ids apart, one id's table line, the next's start and length, the next's
    arena bytes are asked for ahead of their use: ~55 ns an id.
    """
    mask = np.uint64(table.shape[0] - 1)
    have = 0
    p = 0
    last_end = 0
    while have < slots.shape[0] and p < ids.shape[0]:
        first = p
        h = _FNV_OFFSET
        while p < ids.shape[0] and ids[p] != 0:
            h = _hash_byte(h, ids[p])  # as `_home`, while finding the id's end
            p += 1
        if p == ids.shape[0]:  # no 0 byte: `ids` holds fewer ids than `slots`
            break
        firsts[have] = first
        homes[have] = np.int64(h & mask)
        have += 1
        last_end = p
        p += 1
    for i in range(have, slots.shape[0]):
        slots[i] = EMPTY
    missing = slots.shape[0] - have
    for i in range(have + 3 * _LEAD):
        if i < have:
            _prefetch_bytes(table, homes[i], 0)
        k = i - _LEAD
        if 0 <= k < have and table[homes[k]] >= 0:
            _prefetch_bytes(start, table[homes[k]], 0)
            _prefetch_bytes(length, table[homes[k]], 0)
        k = i - 2 * _LEAD
        if 0 <= k < have and table[homes[k]] >= 0:
            _prefetch_bytes(arena, start[table[homes[k]]], 0)
        k = i - 3 * _LEAD
        if 0 <= k < have:
            end = firsts[k + 1] - 1 if k + 1 < have else last_end
            slots[k] = _probe(table, arena, start, length, ids, firsts[k], end, homes[k])
            if slots[k] == EMPTY:
                missing += 1
    return missing


@inline_kernel
def _probe(table, arena, start, length, ids, first, end, home):
    """The slot of the id ids[first:end] whose probe starts at `home` (EMPTY: none)."""
    n = end - first
    mask = table.shape[0] - 1
    j = home
    while table[j] != EMPTY:
        s = table[j]
        if s >= 0 and _same_id(ids, first, n, arena, start[s], length[s]):
            return s
        j = (j + 1) & mask
    return EMPTY


@kernel
def insert_slots(table, arena, start, length, new_slots):
    """Enter each of `new_slots`, whose ids are in the arena and not yet in the table (which
    has room for them)."""
    mask = table.shape[0] - 1
    for s in new_slots:
        j = _home(arena, start[s], length[s], mask)
        while table[j] >= 0:
            j = (j + 1) & mask
        table[j] = s


@kernel
def remove_slot(table, arena, start, length, slot):
    """Mark `slot`'s entry GONE; return whether it was there."""
    mask = table.shape[0] - 1
    j = _home(arena, start[slot], length[slot], mask)
    while table[j] != EMPTY:
        if table[j] == slot:
            table[j] = GONE
            return True
        j = (j + 1) & mask
    return False


@kernel
def remove_slots(table, arena, start, length, slots, removed):
    """`remove_slot` for each of `slots`; removed[i] says whether slots[i]'s entry was there."""
    for i in range(slots.shape[0]):
        removed[i] = remove_slot(table, arena, start, length, slots[i])


@kernel
def move_ids(arena, start, length, slots, new_arena):
    """Copy the ids of `slots` one after another into `new_arena`, pointing start at the
    copies; return the bytes used."""
    used = 0
    for s in slots:
        n = length[s]
        for k in range(n):
            new_arena[used + k] = arena[start[s] + k]
        start[s] = used
        used += n
    return used
