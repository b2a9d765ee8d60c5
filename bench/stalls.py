"""How often this machine takes a core away: spin on every core and record the gaps.

    python bench/stalls.py                 # 10 s
    python bench/stalls.py --seconds 30

One process per core, pinned to it, reads the clock in a tight loop; a gap between two reads
longer than --threshold-us means something else ran on that core (a kernel thread, an
interrupt) or the whole VM was paused by its host. Run it on an otherwise idle machine: on the
2-core VM of bench/README.md it shows the stalls that no daemon can avoid and that land in the
tail latencies of `rnnstream bench e2e`. Both cores stalled at the same time means the VM
itself was stopped. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from itertools import pairwise

BUCKETS_MS = (0.2, 1.0, 5.0)  # gap classes: threshold-0.2, 0.2-1, 1-5, over 5 ms


def spin(core: int, seconds: float, threshold: float, out: mp.Queue) -> None:
    """Spin on `core` for `seconds`; report every gap over `threshold` as (start, length)."""
    os.sched_setaffinity(0, {core})
    clock = time.perf_counter
    gaps = []
    last = start = clock()
    end = start + seconds
    while last < end:
        now = clock()
        if now - last > threshold:
            gaps.append((last - start, now - last))
        last = now
    out.put((core, gaps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threshold-us", type=float, default=50.0)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    queue: mp.Queue = mp.Queue()
    workers = [
        mp.Process(target=spin, args=(core, args.seconds, args.threshold_us * 1e-6, queue))
        for core in cores
    ]
    for worker in workers:
        worker.start()
    results = dict(queue.get() for _ in workers)
    for worker in workers:
        worker.join()
    print(f"{args.seconds:g} s on cores {cores}; gaps over {args.threshold_us:g} us:")
    for core in cores:
        lengths = [length * 1e3 for _, length in results[core]]
        edges = (args.threshold_us / 1e3, *BUCKETS_MS, float("inf"))
        counts = [sum(lo < x <= hi for x in lengths) for lo, hi in pairwise(edges)]
        lost = sum(lengths) / (args.seconds * 1e3)
        worst = max(lengths, default=0.0)
        print(
            f"  core {core}: {counts[0]} up to 0.2 ms, {counts[1]} 0.2-1 ms, {counts[2]} 1-5 ms, "
            f"{counts[3]} over 5 ms; longest {worst:.2f} ms; {lost:.1%} of the time lost"
        )
    together = _overlapping(results, cores, min_ms=1.0)
    if together:
        print(f"  all cores stalled at once for 1 ms or more: {len(together)} times, longest "
              f"{max(together):.2f} ms (the VM itself was stopped)")  # fmt: skip
    return 0


def _overlapping(results: dict, cores: list[int], min_ms: float) -> list[float]:
    """Lengths (ms) of intervals of at least min_ms during which every core was in a gap."""
    if len(cores) < 2:
        return []
    common = [(s, s + g) for s, g in results[cores[0]] if g * 1e3 >= min_ms]
    for core in cores[1:]:
        spans = [(s, s + g) for s, g in results[core] if g * 1e3 >= min_ms]
        common = [
            (max(a, c), min(b, d)) for a, b in common for c, d in spans if min(b, d) > max(a, c)
        ]
    return [(b - a) * 1e3 for a, b in common if (b - a) * 1e3 >= min_ms]


if __name__ == "__main__":
    raise SystemExit(main())
