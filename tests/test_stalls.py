"""The machine's own stalls, as bench e2e reports them: gap classes and all-cores-at-once."""

from __future__ import annotations

import os

import pytest

from engine.bench.stalls import Stalls, measure, steal_seconds


def test_summary_counts_gap_classes_and_the_intervals_every_core_stalled_in():
    stalls = Stalls(
        seconds=10.0,
        gaps={
            0: [(1.0, 0.0004), (2.0, 0.003), (3.0, 0.006), (5.0, 0.002)],
            1: [(2.001, 0.003), (3.0005, 0.0005), (7.0, 0.012)],
        },
    )
    # core 0's 3 ms gap from 2.000 s and core 1's from 2.001 s share 2 ms; at 3 s core 1's gap
    # is too short (0.5 ms) to count
    assert [round(x, 6) for x in stalls.all_cores_at_once(min_ms=1.0)] == [2.0]
    assert stalls.summary() == (
        "core 0: 2 of 1-5 ms, 1 over 5 ms, longest 6.0 ms, 0.1% lost; "
        "core 1: 1 of 1-5 ms, 1 over 5 ms, longest 12.0 ms, 0.2% lost; "
        "all cores at once for 1 ms or more: 1, longest 2.0 ms"
    )


def test_one_core_never_stalls_together_with_another():
    assert Stalls(1.0, {0: [(0.1, 0.01)]}).all_cores_at_once(min_ms=1.0) == []


def test_measure_spins_on_every_core_it_may_use():
    stalls = measure(0.2, threshold_us=50.0)
    assert sorted(stalls.gaps) == sorted(os.sched_getaffinity(0))
    for gaps in stalls.gaps.values():
        assert all(0 <= start <= 0.2 and length > 50e-6 for start, length in gaps)


def test_steal_seconds_reads_the_steal_count_of_all_cores(tmp_path):
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    stat.write_text(
        f"cpu  100 0 50 900 3 0 7 {3 * ticks} 0 0\ncpu0 50 0 25 450 1 0 3 {ticks} 0 0\n"
    )
    assert steal_seconds(str(stat)) == 3.0


def test_steal_seconds_is_none_without_a_steal_count(tmp_path):
    old_kernel = tmp_path / "stat"
    old_kernel.write_text("cpu  100 0 50 900 3 0 7\n")
    assert steal_seconds(str(old_kernel)) is None
    assert steal_seconds(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat (not Linux)")
def test_steal_seconds_of_this_machine_never_decrease():
    first = steal_seconds()
    assert first is not None and 0.0 <= first <= steal_seconds()
