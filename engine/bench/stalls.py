"""How often this machine takes a core away: spin on every core and record the gaps.

One process per core, pinned to it, reads the clock in a tight loop; a gap between two reads
longer than the threshold means something else ran on that core (a kernel thread, an
interrupt) or the whole VM was paused by its host (every core stalled at once). Such stalls
land in the tail latencies of `rnnstream bench e2e` whatever the daemon does, so the benchmark
measures them just before it runs (`--stall-seconds`); `python bench/stalls.py` does it alone.

A spinner sees only the gaps on an idle machine. While a benchmark runs, the host's share shows
in the kernel's steal count instead (`steal_seconds`): time in which a virtual core had work to
run but its host ran something else. No thread in the guest can run meanwhile, so a daemon
thread on that core waits out the whole of it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from itertools import pairwise

GAP_CLASSES_MS = (1.0, 5.0)  # reported: gaps of 1-5 ms and over 5 ms
_STEAL_FIELD = 8  # of the "cpu" line of /proc/stat: user nice system idle iowait irq softirq steal


@dataclass
class Stalls:
    """Gaps (start, length in seconds from the start) seen on each core while spinning."""

    seconds: float
    gaps: dict[int, list[tuple[float, float]]]

    def summary(self) -> str:
        """One line: per core the gaps of 1-5 ms and over 5 ms, the longest, the time lost;
        then how often every core stalled at once for 1 ms or more."""
        parts = []
        for core, gaps in sorted(self.gaps.items()):
            lengths = [length * 1e3 for _, length in gaps]
            edges = (*GAP_CLASSES_MS, float("inf"))
            counts = [sum(lo < x <= hi for x in lengths) for lo, hi in pairwise(edges)]
            lost = sum(lengths) / (self.seconds * 1e3)
            parts.append(
                f"core {core}: {counts[0]} of 1-5 ms, {counts[1]} over 5 ms, longest "
                f"{max(lengths, default=0.0):.1f} ms, {lost:.1%} lost"
            )
        together = self.all_cores_at_once(min_ms=1.0)
        longest = f", longest {max(together):.1f} ms" if together else ""
        parts.append(f"all cores at once for 1 ms or more: {len(together)}{longest}")
        return "; ".join(parts)

    def all_cores_at_once(self, min_ms: float) -> list[float]:
        """Lengths (ms) of the intervals of at least min_ms in which every core was in a gap."""
        cores = sorted(self.gaps)
        if len(cores) < 2:
            return []
        common = [(s, s + g) for s, g in self.gaps[cores[0]] if g * 1e3 >= min_ms]
        for core in cores[1:]:
            spans = [(s, s + g) for s, g in self.gaps[core] if g * 1e3 >= min_ms]
            common = [
                (max(a, c), min(b, d)) for a, b in common for c, d in spans if min(b, d) > max(a, c)
            ]
        return [(b - a) * 1e3 for a, b in common if (b - a) * 1e3 >= min_ms]


def steal_seconds(stat_path: str = "/proc/stat") -> float | None:
    """CPU seconds, summed over all cores, that the host took from this machine's cores while
    they had work (the `steal` count of /proc/stat); None where there is no such count."""
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) <= _STEAL_FIELD or fields[0] != "cpu":
        return None
    return int(fields[_STEAL_FIELD]) / os.sysconf("SC_CLK_TCK")


def measure(seconds: float, threshold_us: float = 50.0) -> Stalls:
    """Spin on every core this process may use for `seconds`; return the gaps seen."""
    cores = sorted(os.sched_getaffinity(0))
    context = mp.get_context("spawn")
    queue = context.Queue()
    # one clock for all: each spinner reports its gaps from this start time
    start = time.perf_counter() + 0.5  # time for the spawned processes to start
    workers = [
        context.Process(target=_spin, args=(core, start, seconds, threshold_us * 1e-6, queue))
        for core in cores
    ]
    for worker in workers:
        worker.start()
    gaps = dict(queue.get() for _ in workers)
    for worker in workers:
        worker.join()
    return Stalls(seconds, gaps)


def _spin(core: int, start: float, seconds: float, threshold: float, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {core})
    clock = time.perf_counter
    while clock() < start:
        pass
    gaps = []
    last = clock()
    end = start + seconds
    while last < end:
        now = clock()
        if now - last > threshold:
            gaps.append((last - start, now - last))
        last = now
    out.put((core, gaps))
