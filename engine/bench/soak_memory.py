"""Judge the soak's daemon by the memory it holds, not by what a snapshot write adds for a moment.

`python bench/soak.py` reads the daemon's resident memory on every turn of its loop (every
`WATCH_TICK_S`). A periodic snapshot holds a copy of every stream's state and the writer's
buffers while its file is written: at 155,000 streams ~104 MB for 0.3-0.5 s of every 2 s
(`--checkpoint-every 2`), over ~245 MB held. A check on single readings then passes or fails by
where its readings fall in that cycle. What the daemon keeps is in every reading and what a write
adds in some, so the level it holds over a window is the lowest reading in the window. Writes
start at least one `--checkpoint-every` apart and, unless the daemon is writing all the time,
take less, so a window of two intervals always holds moments between writes (`held_window`).
The same goes for the table's own transients: the old and new slabs while it doubles or shrinks.

The checks built on it: the memory held at the end is within a share of what it held a third of
the way in, or, with bursts, once the last burst's streams were evicted, so that both levels have
the same bursts behind them (`judge_flat`; not applicable when two windows do not fit); and
around a burst, how much of the held level's growth is still held after the eviction
(`judge_burst`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MIN_WINDOW_S = 1.0  # at least ten readings a window


@dataclass(frozen=True)
class Level:
    """Memory held over a window: its lowest reading and when that was."""

    t: float
    mb: float


@dataclass(frozen=True)
class FlatMemory:
    """Memory held at the end against the level held from `start`; `reference` is None when the
    run has no room for two windows after `start` (not applicable)."""

    start: float
    end: float
    reference: Level | None
    last: Level | None
    growth: float | None
    passed: bool | None  # None: not applicable


@dataclass(frozen=True)
class BurstMemory:
    """Memory held before a burst, at most while its streams were live, and after their
    eviction; `highest` is the highest single reading (with a snapshot's buffers)."""

    before: Level
    peak: Level
    highest: Level
    after: Level

    @property
    def kept(self) -> float:
        """The share of the held level's growth still held after the eviction."""
        took = self.peak.mb - self.before.mb
        kept = self.after.mb - self.before.mb
        return kept / took if took > 0 else (0.0 if kept <= 0 else float("inf"))


def held_window(checkpoint_every: float) -> float:
    """Seconds over which the lowest reading is the held level: two checkpoint intervals."""
    return max(2.0 * checkpoint_every, MIN_WINDOW_S)


def held_level(trace: np.ndarray, start: float, end: float) -> Level:
    """The lowest reading in [start, end]."""
    return _extreme_reading(trace, start, end, np.argmin)


def held_peak(trace: np.ndarray, start: float, end: float, window: float) -> Level:
    """The highest level held for a whole window inside [start, end] (the lowest reading of the
    stretch when it is shorter than a window)."""
    t, mb = _arrays(trace, start, end)
    full = np.flatnonzero(t - window >= start)
    if not len(full):
        return held_level(trace, start, end)
    firsts = np.searchsorted(t, t[full] - window, side="left")
    lows = [
        int(first + np.argmin(mb[first : i + 1])) for first, i in zip(firsts, full, strict=True)
    ]
    peak = max(lows, key=lambda i: mb[i])
    return Level(float(t[peak]), float(mb[peak]))


def highest_reading(trace: np.ndarray, start: float, end: float) -> Level:
    return _extreme_reading(trace, start, end, np.argmax)


def _extreme_reading(
    trace: np.ndarray, start: float, end: float, pick: Callable[[np.ndarray], np.intp]
) -> Level:
    t, mb = _arrays(trace, start, end)
    if not len(t):
        raise ValueError(f"no memory reading between {start:.1f} s and {end:.1f} s")
    k = int(pick(mb))
    return Level(float(t[k]), float(mb[k]))


def judge_flat(trace: np.ndarray, window: float, since: float, allowed_growth: float) -> FlatMemory:
    """Compare the level held in the window from a third of the run (or from `since`, when the
    last burst's streams were evicted, if later) with the level held in the run's last window.

    Both levels then have the same bursts behind them: memory a burst leaves to the allocators
    is judged by `judge_burst`, not counted as growth here. When the two windows would overlap,
    the run is too short after its last burst for this check (not applicable).
    """
    end = float(trace[-1, 0])
    start = max(end / 3, since)
    if start + window > end - window:
        return FlatMemory(start, end, None, None, None, None)
    reference = held_level(trace, start, start + window)
    last = held_level(trace, end - window, end)
    growth = last.mb / reference.mb - 1.0
    return FlatMemory(start, end, reference, last, growth, growth <= allowed_growth)


def judge_burst(
    trace: np.ndarray,
    window: float,
    *,
    since: float,
    at: float,
    live_until: float,
    settled: float,
    until: float,
) -> BurstMemory:
    """Levels held around the burst starting at `at`: in the window before it (not before
    `since`, the previous burst's settling); at most while its streams were live, up to
    `live_until` (its last reading plus the idle timeout: the shrink's copies come later); and
    in the last window before `until` (the next burst or the end) from `settled` (evicted)."""
    return BurstMemory(
        before=held_level(trace, max(since, at - window), at),
        peak=held_peak(trace, at, live_until, window),
        highest=highest_reading(trace, at, live_until),
        after=held_level(trace, max(settled, until - window), until),
    )


def held_at(trace: np.ndarray, t: float, window: float) -> float:
    """The level held in the window up to `t` (for the report's table)."""
    return held_level(trace, t - window, t).mb


def _arrays(trace: np.ndarray, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """The readings' times and MB in [start, end]; `trace` is (n, 2): seconds into the run and
    resident MB, in time order."""
    inside = (trace[:, 0] >= start) & (trace[:, 0] <= end)
    return trace[inside, 0], trace[inside, 1]
