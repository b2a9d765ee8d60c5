"""Jitted counting for the daemon's metrics: a pass's latencies into histogram buckets.

numpy takes ~7 calls (isfinite, a mask, searchsorted, bincount, sum) and 10-17 us for a pass of
a hundred readings, a twentieth of the pass; one loop over the values takes ~1 us.
"""

from __future__ import annotations

import numpy as np

from engine.kernels._jit import kernel

# What one value may add to a histogram's sum. A latency is measured from the producer's own
# `ts`, which may be any finite number: unclipped, two readings stamped 1.7e308 would make the
# sum infinite, and one more stamped -1.7e308 NaN, for the rest of the daemon's life.
SUM_LIMIT = 1e15


@kernel
def add_to_histogram(bounds, values, counts):
    """Count each finite value in bucket i, the first whose upper bound bounds[i] is >= it
    (i = len(bounds): above every bound); return the sum of those values, each clipped to
    +-SUM_LIMIT."""
    total = 0.0
    for v in values:
        if not np.isfinite(v):
            continue
        i = 0
        while i < bounds.shape[0] and bounds[i] < v:
            i += 1
        counts[i] += 1
        total += min(max(v, -SUM_LIMIT), SUM_LIMIT)
    return total
