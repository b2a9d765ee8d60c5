"""The soak judges the memory the daemon holds, not what a snapshot write adds for a moment.

Synthetic traces like the soak's: a reading every 0.1 s, and a periodic snapshot every 2 s that
adds 100 MB for 0.5 s (at 155,000 streams the daemon held ~245 MB and a write added ~104 MB for
0.3-0.5 s).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from engine.bench.soak_memory import (
    held_level,
    held_peak,
    held_window,
    judge_burst,
    judge_flat,
)

TICK_S = 0.1
CHECKPOINT_EVERY = 2.0
WRITE_S = 0.5
WRITE_MB = 100.0
WINDOW = held_window(CHECKPOINT_EVERY)


def _trace(seconds: float, held: Callable[[np.ndarray], np.ndarray], phase: float) -> np.ndarray:
    """Readings of a daemon holding `held(t)` MB, plus a snapshot write starting `phase` s into
    every checkpoint interval."""
    t = np.arange(0.0, seconds + TICK_S / 2, TICK_S)
    writing = (t - phase) % CHECKPOINT_EVERY < WRITE_S
    return np.column_stack([t, held(t) + WRITE_MB * writing])


def _steps(*levels: tuple[float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """Held memory as steps: (from second, MB), in time order."""

    def held(t: np.ndarray) -> np.ndarray:
        mb = np.zeros_like(t)
        for start, level in levels:
            mb[t >= start] = level
        return mb

    return held


def _reading_at(trace: np.ndarray, t: float) -> float:
    return float(trace[np.argmin(abs(trace[:, 0] - t)), 1])


def test_a_snapshot_write_in_the_last_reading_is_not_growth() -> None:
    # the run ends inside a write, as a sample a second would by chance
    trace = _trace(90.0, _steps((0.0, 240.0)), phase=89.8 % CHECKPOINT_EVERY)
    assert _reading_at(trace, 90.0) / _reading_at(trace, 31.0) - 1.0 > 0.4  # single readings

    flat = judge_flat(trace, WINDOW, since=0.0, allowed_growth=0.05)

    assert flat.passed is True
    assert flat.reference is not None and flat.last is not None
    assert flat.reference.mb == flat.last.mb == 240.0


def test_held_memory_that_grows_fails_the_flat_check_through_the_writes() -> None:
    trace = _trace(90.0, lambda t: 240.0 + 0.5 * t, phase=0.3)  # 0.5 MB a second kept

    flat = judge_flat(trace, WINDOW, since=0.0, allowed_growth=0.05)

    assert flat.passed is False
    assert flat.growth == pytest.approx(0.5 * (86.0 - 30.0) / (240.0 + 0.5 * 30.0), abs=0.01)


def test_with_a_burst_the_flat_check_compares_levels_after_its_eviction() -> None:
    # 1.5 min, one burst at 45 s whose streams are evicted by 62 s; the allocators keep some of
    # it, steadily: a third of the way in (30 s) is before the burst, so not like the end
    trace = _trace(90.0, _steps((0.0, 157.0), (45.0, 240.0), (59.0, 194.0)), phase=0.3)

    flat = judge_flat(trace, WINDOW, since=62.0, allowed_growth=0.05)

    assert flat.passed is True
    assert flat.reference is not None and flat.reference.t >= 62.0
    assert flat.growth == 0.0


def test_the_flat_check_is_not_applicable_without_room_for_two_windows() -> None:
    trace = _trace(90.0, _steps((0.0, 157.0), (45.0, 240.0), (59.0, 194.0)), phase=0.3)

    flat = judge_flat(trace, WINDOW, since=83.0, allowed_growth=0.05)

    assert flat.passed is None and flat.reference is None
    assert flat.start == 83.0


def test_a_burst_is_judged_on_held_levels_not_on_a_write_at_its_peak() -> None:
    # held: 157 MB before, 240 MB while the burst's streams are live, 216 MB after: 71% kept
    trace = _trace(90.0, _steps((0.0, 157.0), (45.0, 240.0), (59.0, 216.0)), phase=0.3)

    burst = judge_burst(
        trace, WINDOW, since=0.0, at=45.0, live_until=59.0, settled=62.0, until=90.0
    )

    assert (burst.before.mb, burst.peak.mb, burst.after.mb) == (157.0, 240.0, 216.0)
    assert burst.highest.mb == 340.0  # a write: the peak a single reading may see, or not
    assert burst.kept == pytest.approx((216.0 - 157.0) / (240.0 - 157.0))
    assert burst.kept < 0.9


def test_a_burst_whose_memory_stays_keeps_all_of_it() -> None:
    # no malloc_trim after the shrink: the old slabs stay resident, and the new ones come on top
    trace = _trace(90.0, _steps((0.0, 157.0), (45.0, 240.0), (59.0, 270.0)), phase=0.3)

    burst = judge_burst(
        trace, WINDOW, since=0.0, at=45.0, live_until=59.0, settled=62.0, until=90.0
    )

    assert burst.kept > 1.0


def test_a_level_held_for_less_than_a_window_is_not_a_peak() -> None:
    # the table's copies while it shrinks: 1.5 s at 295 MB
    trace = _trace(90.0, _steps((0.0, 157.0), (45.0, 240.0), (56.0, 295.0), (57.5, 194.0)), 0.3)

    assert held_peak(trace, 45.0, 59.0, WINDOW).mb == 240.0
    assert held_level(trace, 86.0, 90.0).mb == 194.0


def test_the_window_spans_two_checkpoint_intervals() -> None:
    assert held_window(2.0) == 4.0
    assert held_window(30.0) == 60.0
    assert held_window(0.1) == 1.0  # at least ten readings
