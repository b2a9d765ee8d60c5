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

from engine.kernels._bytes import matches
from engine.kernels._jit import inline_kernel, kernel

EMPTY = -1
GONE = -2
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@inline_kernel
def _home(buf, first, n, mask):
    """Where an id's probe starts: its FNV-1a 64 hash, masked to the table."""
    h = _FNV_OFFSET
    for k in range(n):
        h = (h ^ np.uint64(buf[first + k])) * _FNV_PRIME
    return np.int64(h & np.uint64(mask))


@inline_kernel
def _same_id(buf, first, n, arena, start, length):
    return n == length and matches(buf, first, first + n, arena, start, n)


@kernel
def find_slots(table, arena, start, length, ids, slots):
    """Set slots[i] to the slot of the i-th id of `ids` (each id followed by a 0 byte, as
    `wire.parse_readings` writes them), or EMPTY when it has none; return how many had none
    (ids missing from `ids` count too)."""
    mask = table.shape[0] - 1
    missing = 0
    first = 0
    for i in range(slots.shape[0]):
        n = 0
        while first + n < ids.shape[0] and ids[first + n] != 0:
            n += 1
        if first + n == ids.shape[0]:  # no 0 byte: `ids` holds fewer ids than `slots`
            slots[i:] = EMPTY
            return missing + slots.shape[0] - i
        j = _home(ids, first, n, mask)
        found = EMPTY
        while table[j] != EMPTY:
            s = table[j]
            if s >= 0 and _same_id(ids, first, n, arena, start[s], length[s]):
                found = s
                break
            j = (j + 1) & mask
        slots[i] = found
        if found == EMPTY:
            missing += 1
        first += n + 1
    return missing


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
