"""Per-stream sequence numbers: drop re-sent readings, count skipped ones.

A stream's last seq lives in its slot as `last + 1`, so a zeroed slot (a new, reset or
restarted stream) has seen none, and is dropped, evicted and snapshotted with the stream's state.
"""

from __future__ import annotations

from engine.kernels._jit import kernel

NO_SEQ = -1  # a reading without a seq: always stepped, leaves the stream's last seq alone


@kernel
def check_sequence(slots, seq, last_plus_one, keep):
    """Mark keep[r] for rows to step, in row order; return (duplicates, gaps).

    Row r's seq is a duplicate when it is not after its stream's last, except that seq 1
    always starts afresh: a restarted producer counts from 1 again, and one that sends a single
    reading a run (a cron job) sends nothing but seq 1, which taken for a re-sent first reading
    lost every run's reading but the first. A forward jump past last + 1 is a gap. Kept rows'
    seqs become their streams' last.
    """
    duplicates = 0
    gaps = 0
    for r in range(slots.shape[0]):
        s = seq[r]
        keep[r] = True
        if s < 0:
            continue
        last = last_plus_one[slots[r]] - 1
        if last >= 0 and s != 1:
            if s <= last:
                keep[r] = False
                duplicates += 1
                continue
            if s != last + 1:
                gaps += 1
        last_plus_one[slots[r]] = s + 1
    return duplicates, gaps
