"""Alert kernel: equals a plain-Python reference; one incident, one alert; no flapping; warm-up."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from engine.alerts import (
    A_OPEN,
    A_SEEN,
    A_THRESHOLD,
    ALERT_COLUMNS,
    ALERT_SLAB,
    EVENT_CLOSE,
    EVENT_NONE,
    EVENT_OPEN,
    AlertPolicy,
    CloseReason,
    alert_batch,
    count_open,
)
from engine.config import ServeConfig


@dataclasses.dataclass
class RefStream:
    """One stream's alert state, as the module docstring describes it, in plain floats."""

    threshold: float = 0.0  # 0: the policy's level
    is_open: bool = False
    run: int = 0
    cooldown: int = 0
    peak: float = 0.0
    length: int = 0
    opened_ts: float = math.nan
    seen: int = 0


def reference_step(
    s: RefStream, score: float, ts: float, p: AlertPolicy, surprise: float = math.nan
) -> tuple:
    """Return (event, peak, length, opened ts) for one reading; peak etc. only for events."""
    level = s.threshold if s.threshold > 0.0 else p.open_level
    close = min(p.close_level, level)
    warm = s.seen >= p.warmup
    s.seen += 1
    if s.is_open:
        s.length += 1
        s.peak = max(s.peak, score)
        if score < close:
            s.is_open, s.run, s.cooldown = False, 0, p.cooldown
            return EVENT_CLOSE, s.peak, s.length, s.opened_ts
        return EVENT_NONE, None, None, None
    if s.cooldown > 0:
        s.cooldown -= 1
        return EVENT_NONE, None, None, None
    surprising = math.isnan(surprise) or surprise >= p.error_gate
    if warm and score >= level and surprising:
        s.run += 1
        if s.run >= p.min_duration:
            s.is_open, s.peak, s.length, s.opened_ts = True, score, 1, ts
            return EVENT_OPEN, score, 1, ts
        return EVENT_NONE, None, None, None
    s.run = 0
    return EVENT_NONE, None, None, None


def run_kernel(
    slots: np.ndarray,
    scores: np.ndarray,
    ts: np.ndarray,
    state: np.ndarray,
    p: AlertPolicy,
    surprise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = slots.shape[0]
    events = np.full(n, 99, np.int8)
    peaks, lengths, opened = np.full(n, -1.0), np.full(n, -1.0), np.full(n, -1.0)
    alert_batch(
        slots,
        scores,
        np.full(n, np.nan) if surprise is None else surprise,
        ts,
        state,
        p.open_level,
        p.close_level,
        float(p.min_duration),
        float(p.cooldown),
        float(p.warmup),
        p.error_gate,
        events,
        peaks,
        lengths,
        opened,
    )
    return events, peaks, lengths, opened


def random_scores(rng: np.random.Generator, n: int, p: AlertPolicy) -> np.ndarray:
    """Scores that often sit exactly on, or just beside, the open and close levels."""
    levels = [0.0, 1.0, p.open_level, p.close_level]
    near = [np.nextafter(x, -1.0) for x in levels[2:]] + [np.nextafter(x, 2.0) for x in levels[2:]]
    pool = np.array([x for x in levels + near if 0.0 <= x <= 1.0])
    out = rng.uniform(0.0, 1.0, n)
    pick = rng.random(n) < 0.6
    out[pick] = rng.choice(pool, int(pick.sum()))
    # bursts of high scores, so that min_duration > 1 is reached now and then
    for start in rng.integers(0, n, max(1, n // 40)):
        out[start : start + rng.integers(1, 6)] = 1.0
    return out


def random_policy(rng: np.random.Generator) -> AlertPolicy:
    open_level = float(rng.choice([1.0, 0.99, rng.uniform(0.05, 1.0)]))
    return AlertPolicy(
        open_level=open_level,
        close_level=float(rng.uniform(0.01, 1.0) * open_level),
        min_duration=int(rng.integers(1, 4)),
        cooldown=int(rng.choice([0, 1, rng.integers(2, 40)])),
        warmup=int(rng.choice([0, 1, rng.integers(2, 60)])),
        error_gate=float(rng.choice([0.0, rng.uniform(0.5, 4.0)])),
    )


@pytest.mark.parametrize("seed", range(40))
def test_alert_batch_equals_reference_over_random_score_sequences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    policy = random_policy(rng)
    n_streams, n_rows = int(rng.integers(1, 6)), 600
    state = np.zeros((n_streams + 2, ALERT_COLUMNS))
    refs = [RefStream() for _ in range(n_streams)]
    for j in rng.choice(n_streams, n_streams // 2, replace=False):  # some own levels
        refs[j].threshold = float(rng.uniform(0.05, 1.0))
        state[j + 2, A_THRESHOLD] = refs[j].threshold
    stream_of_row = rng.integers(0, n_streams, n_rows)  # streams repeat within a batch
    scores = random_scores(rng, n_rows, policy)
    ts = np.where(rng.random(n_rows) < 0.1, np.nan, 1.7e9 + np.arange(n_rows, dtype=np.float64))
    surprise = rng.exponential(2.0, n_rows)
    surprise[rng.random(n_rows) < 0.05] = np.nan  # unknown: never blocks an opening
    row = 0
    while row < n_rows:
        size = int(rng.integers(1, 30))
        rows = slice(row, min(row + size, n_rows))
        slots = (stream_of_row[rows] + 2).astype(np.int64)  # slots need not start at 0
        events, peaks, lengths, opened = run_kernel(
            slots, scores[rows], ts[rows], state, policy, surprise[rows]
        )
        for k, i in enumerate(range(rows.start, rows.stop)):
            ref = refs[stream_of_row[i]]
            want = reference_step(ref, float(scores[i]), float(ts[i]), policy, float(surprise[i]))
            assert events[k] == want[0], (seed, i)
            if want[0] != EVENT_NONE:
                assert peaks[k] == want[1] and lengths[k] == want[2]
                np.testing.assert_equal(opened[k], want[3])
        row = rows.stop
    for j, ref in enumerate(refs):
        assert bool(state[j + 2, A_OPEN]) == ref.is_open
        assert state[j + 2, A_SEEN] == ref.seen
    assert not state[:2].any(), "slots no row named were touched"


def test_error_gate_keeps_a_high_score_with_an_unsurprising_reading_closed() -> None:
    policy = AlertPolicy(open_level=0.5, close_level=0.4, cooldown=0, warmup=0, error_gate=3.0)
    state = np.zeros((1, ALERT_COLUMNS))
    slots, ts = np.zeros(1, np.int64), np.zeros(1)
    events, *_ = run_kernel(slots, np.ones(1), ts, state, policy, np.array([2.9]))
    assert events[0] == EVENT_NONE
    events, *_ = run_kernel(slots, np.ones(1), ts, state, policy, np.array([3.0]))
    assert events[0] == EVENT_OPEN


def feed(scores: list[float], policy: AlertPolicy) -> list[int]:
    """Feed one stream its scores one reading per call; return the events."""
    state = np.zeros((1, ALERT_COLUMNS))
    slots, ts = np.zeros(1, np.int64), np.zeros(1)
    out = []
    for score in scores:
        events, *_ = run_kernel(slots, np.array([score]), ts, state, policy)
        out.append(int(events[0]))
    return out


def test_one_incident_gives_one_open_and_one_close() -> None:
    policy = AlertPolicy(warmup=0)
    incident = [0.1] * 20 + [0.35, 0.8, 1.0, 1.0, 0.6, 0.25, 0.3, 1.0, 0.4] + [0.05] * 40
    events = feed(incident, policy)
    assert events.count(EVENT_OPEN) == 1 and events.count(EVENT_CLOSE) == 1
    assert events.index(EVENT_OPEN) == 20
    assert events.index(EVENT_CLOSE) == 29  # the first reading below the close level


def test_score_hovering_around_the_open_level_does_not_flap() -> None:
    policy = AlertPolicy(open_level=0.3, close_level=0.2, cooldown=0, warmup=0)
    rng = np.random.default_rng(3)
    hovering = (0.3 + rng.uniform(-0.05, 0.05, 500)).tolist()  # never below the close level
    events = feed([0.0] * 10 + hovering + [0.0] * 10, policy)
    assert events.count(EVENT_OPEN) == 1 and events.count(EVENT_CLOSE) == 1


def test_cooldown_keeps_a_closed_stream_quiet_then_lets_it_alert_again() -> None:
    policy = AlertPolicy(open_level=0.5, close_level=0.4, cooldown=5, warmup=0)
    events = feed([1.0, 0.0] + [1.0] * 5 + [1.0], policy)
    assert events == [EVENT_OPEN, EVENT_CLOSE] + [EVENT_NONE] * 5 + [EVENT_OPEN]


def test_min_duration_needs_consecutive_high_readings() -> None:
    policy = AlertPolicy(open_level=0.5, close_level=0.4, min_duration=3, warmup=0)
    events = feed([1.0, 1.0, 0.45, 1.0, 1.0, 1.0], policy)
    assert events == [EVENT_NONE] * 5 + [EVENT_OPEN]


def test_no_alert_opens_during_the_warm_up_and_a_run_starts_after_it() -> None:
    policy = AlertPolicy(open_level=0.5, close_level=0.4, min_duration=2, warmup=4)
    events = feed([1.0] * 6, policy)
    assert events == [EVENT_NONE] * 5 + [EVENT_OPEN]  # readings 4 and 5 are the warm run


def test_per_stream_level_overrides_the_policy_level() -> None:
    policy = AlertPolicy(open_level=0.9, close_level=0.8, warmup=0)
    state = np.zeros((2, ALERT_COLUMNS))
    state[1, A_THRESHOLD] = 0.3
    events, *_ = run_kernel(np.array([0, 1]), np.array([0.5, 0.5]), np.zeros(2), state, policy)
    assert events.tolist() == [EVENT_NONE, EVENT_OPEN]
    # its close level is min(policy close 0.8, own level 0.3), so 0.29 closes it
    events, *_ = run_kernel(np.array([1]), np.array([0.29]), np.zeros(1), state, policy)
    assert events[0] == EVENT_CLOSE


@pytest.mark.parametrize(
    "changes",
    [
        {"open_level": 0.3, "close_level": 0.5},
        {"close_level": 0.0},
        {"open_level": 1.5},
        {"min_duration": 0},
        {"cooldown": -1},
        {"warmup": -1},
    ],
)
def test_policy_refuses_impossible_settings(changes: dict) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(AlertPolicy(), **changes)


def test_daemon_config_defaults_are_the_policy_defaults() -> None:
    cfg, policy = ServeConfig(), AlertPolicy()
    assert (
        cfg.alert_threshold,
        cfg.alert_close,
        cfg.alert_min_duration,
        cfg.alert_cooldown,
        cfg.alert_warmup,
    ) == (
        policy.open_level,
        policy.close_level,
        policy.min_duration,
        policy.cooldown,
        policy.warmup,
    )


def test_alert_slab_has_one_row_of_all_columns_per_stream() -> None:
    assert AlertPolicy.slab_specs() == {ALERT_SLAB: ((ALERT_COLUMNS,), np.float64)}


def test_stream_engine_applies_the_policy_warm_up() -> None:
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine
    from producers.synthetic import series

    values, _ = series(700, 8)  # a dropout at readings 637..655 opens an alert
    eager = AlertPolicy(open_level=0.05, close_level=0.02, cooldown=0, warmup=0)
    late = dataclasses.replace(eager, warmup=650)
    opens = {}
    for name, policy in (("eager", eager), ("late", late)):
        engine = StreamEngine(load_default_model(), alerts=policy, capacity=1)
        events = [
            int(engine.process(["s"], np.array([[v]], np.float32)).events[0])
            for v in values.tolist()
        ]
        opens[name] = [i for i, e in enumerate(events) if e == EVENT_OPEN]
    assert any(i < 650 for i in opens["eager"])
    assert all(i >= 650 for i in opens["late"])


# ------------------------------------------------- incidents whose stream's state goes


def test_count_open_counts_the_rows_a_numpy_count_does() -> None:
    rng = np.random.default_rng(5)
    state = rng.uniform(0.0, 1.0, (300, ALERT_COLUMNS + 5))
    state[:, A_OPEN] = rng.choice([0.0, 1.0], 300)
    assert count_open(state) == np.count_nonzero(state[:, A_OPEN] > 0.0)
    assert count_open(np.zeros((0, ALERT_COLUMNS))) == 0


# Readings a fresh stream of the built-in model takes quietly, then two new extremes: its
# probation (300 readings) is over, so the first extreme opens an alert and the second keeps
# it open (peak 1.0, 2 readings, opened at the ts of reading QUIET).
QUIET = 310
INCIDENT = np.array([10.0 + math.sin(i / 3) for i in range(QUIET)] + [60.0, 70.0], np.float32)
T0 = 1.7e9


def open_incidents(engine, streams: list[str]) -> None:
    """Drive every stream of `streams` (new ones) into an open alert, in one call."""
    n = len(streams)
    rows = [s for _ in INCIDENT for s in streams]
    result = engine.process(
        rows, np.repeat(INCIDENT, n).reshape(-1, 1), np.repeat(T0 + np.arange(INCIDENT.size), n)
    )
    opened = [rows[i] for i in np.flatnonzero(result.events == EVENT_OPEN)]
    assert opened == streams and not (result.events == EVENT_CLOSE).any()


def quiet(engine, streams: list[str]) -> None:
    """Give each stream of `streams` a few readings that open nothing (in probation)."""
    n = len(streams)
    result = engine.process(streams * 5, np.ones((5 * n, 1), np.float32))
    assert not result.events.any()


def scoring_engine(**options):
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    return StreamEngine(load_default_model(), **options)


def assert_closed(closed: list, streams: list[str], reason: CloseReason) -> None:
    assert [c.stream for c in closed] == streams
    for c in closed:
        assert c.reason == reason and c.peak == 1.0 and c.readings == 2
        assert c.opened_ts == T0 + QUIET


@pytest.mark.parametrize("how", ["drop", "reset", "end"])
def test_dropping_or_resetting_a_stream_closes_its_open_alert_once(how: str) -> None:
    engine = scoring_engine()
    open_incidents(engine, ["a", "b"])
    quiet(engine, ["calm"])
    assert engine.open_alerts() == 2

    if how == "end":
        assert engine.drop("a", CloseReason.END) and engine.drop("calm", CloseReason.END)
    else:
        assert getattr(engine, how)("a") and getattr(engine, how)("calm")

    reason = CloseReason.DROPPED if how == "drop" else CloseReason(how)
    assert_closed(engine.take_closed_alerts(), ["a"], reason)
    assert engine.take_closed_alerts() == [] and engine.open_alerts() == 1
    getattr(engine, "drop" if how == "end" else how)("a")  # again: nothing left open
    assert engine.take_closed_alerts() == []
    assert engine.stats()["open_alerts"] == 1  # "b"


def test_idle_eviction_closes_open_alerts_on_a_late_reading_and_in_sweeps() -> None:
    from conftest import FakeClock

    clock = FakeClock()
    engine = scoring_engine(idle_timeout=10.0, clock=clock)
    open_incidents(engine, ["late", "swept"])
    quiet(engine, ["calm"])
    clock.advance(11)
    # "late" restarts before its reading is stepped, the call's sweep then evicts the others
    engine.process(["late"], np.ones((1, 1), np.float32))
    assert_closed(engine.take_closed_alerts(), ["late", "swept"], CloseReason.EVICTED)
    assert engine.streams() == ["late"] and engine.open_alerts() == 0

    open_incidents(engine, ["x"])
    clock.advance(11)
    assert sorted(engine.evict_idle()) == ["late", "x"]
    assert_closed(engine.take_closed_alerts(), ["x"], CloseReason.EVICTED)
    assert engine.open_alerts() == 0 and len(engine) == 0


def test_lru_eviction_at_max_streams_closes_the_open_alerts_of_the_streams_it_evicts() -> None:
    engine = scoring_engine(max_streams=3)
    open_incidents(engine, ["old"])
    quiet(engine, ["calm"])
    open_incidents(engine, ["young"])
    engine.process(["new1", "new2"], np.ones((2, 1), np.float32))  # "old", "calm" go

    assert_closed(engine.take_closed_alerts(), ["old"], CloseReason.EVICTED)
    assert sorted(engine.streams()) == ["new1", "new2", "young"]
    assert engine.open_alerts() == 1


def test_a_slot_freed_with_an_open_alert_starts_its_next_stream_closed() -> None:
    engine = scoring_engine(capacity=4)
    open_incidents(engine, ["a"])
    engine.drop("a")
    quiet(engine, ["b"])  # takes the freed slot
    assert engine.open_alerts() == 0
    engine.drop("b")
    assert engine.take_closed_alerts()[1:] == []  # "a"'s close only


@pytest.mark.parametrize("reset", [False, True])
def test_reload_closes_open_alerts_only_when_their_state_does_not_carry_over(reset: bool) -> None:
    from engine.default_model import load_default_model
    from engine.model import Model

    engine = scoring_engine()
    open_incidents(engine, ["a", "b"])
    quiet(engine, ["calm"])
    engine.swap_model(load_default_model(), reset=reset)
    if reset:
        assert_closed(engine.take_closed_alerts(), ["a", "b"], CloseReason.RELOAD)
        assert engine.open_alerts() == 0
    else:
        assert engine.take_closed_alerts() == [] and engine.open_alerts() == 2
        # the engine that took the old one's place reports its evictions, drops and resets
        engine.drop("a")
        assert_closed(engine.take_closed_alerts(), ["a"], CloseReason.DROPPED)
    # a model that does not score keeps no alert states, though it keeps the recurrent ones
    engine = scoring_engine()
    open_incidents(engine, ["a"])
    plain = Model.random("gru", 1, 24, output_size=1, seed=1)  # the built-in model's shape
    engine.swap_model(plain, reset=reset)
    assert_closed(engine.take_closed_alerts(), ["a"], CloseReason.RELOAD)
    assert engine.open_alerts() == 0


def test_open_alerts_are_snapshotted_with_their_streams_and_close_after_a_restore(tmp_path):
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    engine = scoring_engine()
    open_incidents(engine, ["a", "b"])
    engine.snapshot(tmp_path / "state.npz")

    restored = StreamEngine.restore(tmp_path / "state.npz", load_default_model())
    assert restored.open_alerts() == 2
    restored.drop("b")
    assert_closed(restored.take_closed_alerts(), ["b"], CloseReason.DROPPED)
