"""Per-stream state: creation at zeros, reset, drop, growth, shrinking, LRU and idle eviction,
memory size."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock, all_states, random_model, random_rows
from reference import reference_step, zero_state

from engine.default_model import load_default_model
from engine.model import Model
from engine.state import StateTable
from engine.stream import StreamEngine


def _assert_same_states(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for stream, arrays in expected.items():
        assert set(got[stream]) == set(arrays)
        for name, array in arrays.items():
            np.testing.assert_array_equal(got[stream][name], array, err_msg=f"{stream}.{name}")


def _fresh_first_output(model: Model, x: np.ndarray) -> np.ndarray:
    return StreamEngine(model).step("fresh", x)


@pytest.fixture(scope="module")
def lstm2() -> Model:
    return random_model("lstm", 2, True, seed=1, scaling=True)


@pytest.fixture(scope="module")
def gru1() -> Model:
    return random_model("gru", 1, True, seed=2)


# ---------------------------------------------------------------------- creation, reset, drop


@pytest.mark.parametrize("batched", [False, True], ids=["step", "step_many"])
def test_new_stream_starts_from_zeros(lstm2: Model, batched: bool) -> None:
    engine = StreamEngine(lstm2)
    engine.step_many(["busy", "busy"], random_rows(0, 2))  # other streams' states must not leak in
    x = random_rows(1, 1)[0]

    y = engine.step_many(["new"], x[None])[0] if batched else engine.step("new", x)

    np.testing.assert_array_equal(y, _fresh_first_output(lstm2, x))
    assert not np.array_equal(engine.state_of("new")["c"], engine.state_of("busy")["c"])


def test_state_of_a_new_engine_stream_is_zero_before_and_nonzero_after(lstm2: Model) -> None:
    engine = StreamEngine(lstm2)

    engine.step("a", random_rows(2, 1)[0])
    state = engine.state_of("a")

    assert set(state) == {"h", "c", "seq"}
    assert state["h"].shape == state["c"].shape == (2, 8)
    assert np.abs(state["h"]).max() > 0
    with pytest.raises(KeyError):
        engine.state_of("never-seen")


def test_reset_zeroes_one_stream_and_leaves_the_others(lstm2: Model) -> None:
    engine = StreamEngine(lstm2)
    engine.step_many(["a", "b", "a"], random_rows(3, 3))
    b_before = engine.state_of("b")
    x = random_rows(4, 1)[0]

    assert engine.reset("a") is True

    assert all(not array.any() for array in engine.state_of("a").values())
    _assert_same_states({"b": engine.state_of("b")}, {"b": b_before})
    assert "a" in engine and len(engine) == 2
    np.testing.assert_array_equal(engine.step("a", x), _fresh_first_output(lstm2, x))
    assert engine.reset("unknown") is False
    assert "unknown" not in engine


def test_drop_forgets_the_stream_and_frees_its_slot(gru1: Model) -> None:
    engine = StreamEngine(gru1, capacity=2)
    engine.step_many(["a", "b", "a"], random_rows(5, 3))
    assert len(engine) == 2 and engine.stats()["capacity"] == 2
    x = random_rows(6, 1)[0]

    assert engine.drop("a") is True

    assert len(engine) == 1 and "a" not in engine and engine.streams() == ["b"]
    assert engine.drop("a") is False
    engine.step("c", x)  # reuses a's slot: no growth
    assert engine.stats()["capacity"] == 2
    np.testing.assert_array_equal(engine.step("a", x), _fresh_first_output(gru1, x))
    assert engine.stats()["capacity"] == 4 and len(engine) == 3


def test_len_in_and_streams_follow_admissions(gru1: Model) -> None:
    engine = StreamEngine(gru1)
    assert len(engine) == 0 and engine.streams() == []

    engine.step("x", random_rows(7, 1)[0])
    engine.step_many(["y", "x", "z"], random_rows(8, 3))

    assert len(engine) == 3
    assert sorted(engine.streams()) == ["x", "y", "z"]
    assert "y" in engine and "w" not in engine and 5 not in engine
    assert engine.stats()["streams"] == 3


@pytest.mark.parametrize("batched", [False, True], ids=["step", "step_many"])
def test_slab_growth_past_initial_capacity_keeps_every_state(lstm2: Model, batched: bool) -> None:
    small = StreamEngine(lstm2, capacity=1)
    roomy = StreamEngine(lstm2, capacity=256)
    streams = [f"s{i}" for i in range(37)]
    for k in range(3):
        X = random_rows(10 + k, len(streams))
        if batched:
            small.step_many(streams, X)
        else:
            for s, x in zip(streams, X, strict=True):
                small.step(s, x)
        roomy.step_many(streams, X)

    assert small.stats()["capacity"] == 64
    _assert_same_states(all_states(small), all_states(roomy))
    X = random_rows(20, len(streams))
    np.testing.assert_allclose(
        small.step_many(streams, X), roomy.step_many(streams, X), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    ("cell", "layers", "hidden", "expected"),
    # + 8 bytes of last-used time and 8 of last seq
    [
        ("lstm", 2, 8, 2 * 2 * 8 * 4 + 16),
        ("gru", 1, 5, 5 * 4 + 16),
        ("rnn", 3, 33, 3 * 33 * 4 + 16),
    ],
)
def test_bytes_per_stream_counts_state_slabs_and_timestamp(
    cell: str, layers: int, hidden: int, expected: int
) -> None:
    engine = StreamEngine(random_model(cell, layers, False, hidden_size=hidden))

    assert engine.bytes_per_stream == expected
    assert engine.stats()["bytes_per_stream"] == expected


# ------------------------------------------------------------------------ LRU (max_streams)


def test_max_streams_evicts_least_recently_used(gru1: Model) -> None:
    clock = FakeClock()
    engine = StreamEngine(gru1, max_streams=3, clock=clock)
    X = random_rows(21, 6)
    for s, x in zip(["a", "b", "c", "a"], X, strict=False):
        engine.step(s, x)
        clock.advance(1)

    engine.step("d", X[4])  # "b" is now the least recently used

    assert sorted(engine.streams()) == ["a", "c", "d"]
    assert engine.evictions == 1
    assert engine.stats()["evicted_lru"] == 1 and engine.stats()["evicted_idle"] == 0
    clock.advance(1)
    y = engine.step("b", X[5])  # comes back from zeros, evicting "c"
    np.testing.assert_array_equal(y, _fresh_first_output(gru1, X[5]))
    assert sorted(engine.streams()) == ["a", "b", "d"]
    assert engine.evictions == 2 and len(engine) == 3


def test_max_streams_bounds_memory_under_endless_new_ids(gru1: Model) -> None:
    clock = FakeClock()
    engine = StreamEngine(gru1, max_streams=4, clock=clock)
    for i in range(50):
        engine.step(f"id{i}", random_rows(i, 1)[0])
        clock.advance(0.01)
    engine.step_many([f"batch{i}" for i in range(4)], random_rows(99, 4))

    assert len(engine) == 4 and engine.stats()["capacity"] <= 4
    assert engine.evictions == 50
    assert sorted(engine.streams()) == [f"batch{i}" for i in range(4)]


def test_over_max_streams_the_least_recent_go_a_64th_at_a_time_and_the_rest_stay():
    # Finding the least recent scans every slot: done once per max_streams // 64 admissions.
    table = StateTable({"h": ((1,), np.float32)}, capacity=8, max_streams=640)
    for i in range(640):
        table.admit(f"s{i}", now=float(i))
    table.release("s3")  # a freed slot is never a victim, nor idle
    table.admit("late", now=1000.0)
    table.admit("later", now=1001.0)

    gone = {f"s{i}" for i in range(11)} - {"s3"}  # the ten least recent live streams
    assert set(table.slot_of) == {f"s{i}" for i in range(640)} - gone - {"s3"} | {"late", "later"}
    assert table.evicted_lru == table.evictions == 10 and len(table) == 631
    assert table.capacity == 640
    table.idle_timeout = 100.0
    assert sorted(table.evict_idle(now=120.0)) == sorted(f"s{i}" for i in range(11, 20))


def test_batch_never_evicts_a_stream_it_uses(lstm2: Model) -> None:
    clock = FakeClock()
    engine = StreamEngine(lstm2, max_streams=3, clock=clock)
    twin = StreamEngine(lstm2)
    for s, x in zip(["old", "b", "c"], random_rows(22, 3), strict=True):
        engine.step(s, x)
        twin.step(s, x)
        clock.advance(1)
    # "old" is the least recently used, yet this batch needs it: "b" and "c" must go instead
    streams = ["new1", "old", "new2", "old"]
    X = random_rows(23, 4)

    got = engine.step_many(streams, X)

    assert sorted(engine.streams()) == ["new1", "new2", "old"]
    assert engine.evictions == 2
    np.testing.assert_allclose(got, twin.step_many(streams, X), rtol=0, atol=1e-5)


def test_batch_with_more_distinct_streams_than_max_streams_is_refused(lstm2: Model) -> None:
    engine = StreamEngine(lstm2, max_streams=3)
    engine.step_many(["a", "b"], random_rows(24, 2))
    before = all_states(engine)

    with pytest.raises(ValueError, match="4 distinct streams, more than max_streams=3"):
        engine.step_many(["a", "x", "y", "z", "a"], random_rows(25, 5))

    _assert_same_states(all_states(engine), before)
    assert engine.evictions == 0
    # repeats do not count twice: three distinct streams in five rows are fine
    engine.step_many(["a", "x", "a", "y", "x"], random_rows(26, 5))
    assert sorted(engine.streams()) == ["a", "x", "y"]


def test_max_streams_and_idle_timeout_must_be_positive(gru1: Model) -> None:
    with pytest.raises(ValueError, match="max_streams must be at least 1"):
        StreamEngine(gru1, max_streams=0)
    with pytest.raises(ValueError, match="idle_timeout must be positive"):
        StreamEngine(gru1, idle_timeout=0)


# ----------------------------------------------------------------------------- idle timeout


def test_idle_timeout_evicts_streams_idle_too_long(gru1: Model) -> None:
    clock = FakeClock()
    engine = StreamEngine(gru1, idle_timeout=10.0, clock=clock)
    x = random_rows(27, 1)[0]
    engine.step("a", x)
    clock.advance(5)
    engine.step_many(["b"], x[None])
    clock.advance(6)  # a idle 11 s, b 6 s

    engine.step("c", x)  # any call sweeps

    assert sorted(engine.streams()) == ["b", "c"]
    assert engine.evictions == 1 and engine.stats()["evicted_idle"] == 1
    clock.advance(10.5)
    assert engine.evict_idle() == ["b", "c"]
    assert len(engine) == 0 and engine.evictions == 3


def test_idle_sweep_spares_the_streams_of_the_current_call(gru1: Model) -> None:
    clock = FakeClock()
    engine = StreamEngine(gru1, idle_timeout=10.0, clock=clock)
    X = random_rows(28, 3)
    engine.step_many(["a", "b", "c"], X)
    clock.advance(30)

    engine.step_many(["a", "c"], X[:2])

    assert sorted(engine.streams()) == ["a", "c"]
    assert engine.evict_idle() == []


@pytest.mark.parametrize("batched", [False, True], ids=["step", "step_many"])
def test_stream_idle_past_timeout_restarts_from_zeros_whatever_other_streams_did(
    gru1: Model, batched: bool
) -> None:
    x = random_rows(29, 1)[0]
    outputs = []
    for other_stream_first in (False, True):
        clock = FakeClock()
        engine = StreamEngine(gru1, idle_timeout=10.0, clock=clock)
        engine.step("a", x)
        clock.advance(60)
        if other_stream_first:
            engine.step("b", x)
        outputs.append(engine.step_many(["a"], x[None])[0] if batched else engine.step("a", x))

    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], _fresh_first_output(gru1, x))


# ---------------------------------------------------------------------- StateTable directly


def test_state_table_reuses_freed_slots_before_growing() -> None:
    table = StateTable({"h": ((2, 3), np.float32)}, capacity=2, clock=FakeClock())
    a, b = table.admit("a"), table.admit("b")
    table.slabs["h"][b] = 7.0

    assert table.release("b") is True
    c = table.admit("c")

    assert c == b and table.capacity == 2
    assert not table.slabs["h"][c].any()  # a reused slot starts at zeros
    assert table.admit("d") not in (a, c) and table.capacity == 4


def test_on_evict_sees_each_eviction_while_the_streams_still_hold_their_slots_and_rows() -> None:
    seen: list[dict[str, float]] = []

    def on_evict(slots: np.ndarray) -> None:
        h = table.slabs["h"]
        seen.append({table.stream_of[slot]: float(h[slot, 0]) for slot in slots.tolist()})

    table = StateTable(
        {"h": ((1,), np.float32)}, capacity=8, max_streams=3, idle_timeout=10.0, on_evict=on_evict
    )
    for i, stream in enumerate(["a", "b", "c"]):
        table.slabs["h"][table.admit(stream, now=float(i))] = i + 1
    table.release("b")  # the caller's own doing: not an eviction
    table.zero(table.slot_of["c"])
    assert seen == []

    table.admit("d", now=3.0)
    table.admit("e", now=4.0)  # at max_streams: the least recent, "a", goes
    table.expire(table.slot_of["d"])  # an idle stream back before a sweep
    table.evict_idle(now=100.0)
    assert seen == [{"a": 1.0}, {"d": 0.0}, {"c": 0.0, "d": 0.0, "e": 0.0}]
    assert table.evict_idle(now=200.0) == [] and len(seen) == 3  # no call for nothing


def test_state_table_growth_copies_every_slab_and_timestamp() -> None:
    clock = FakeClock(5.0)
    table = StateTable({"h": ((2,), np.float32), "n": ((), np.int64)}, capacity=1, clock=clock)
    for i in range(5):
        slot = table.admit(f"s{i}")
        table.slabs["h"][slot] = i
        table.slabs["n"][slot] = 10 * i
        clock.advance(1)

    assert table.capacity == 8 and len(table) == 5
    for i in range(5):
        slot = table.slot_of[f"s{i}"]
        assert table.slabs["h"][slot].tolist() == [i, i]
        assert table.slabs["n"][slot] == 10 * i
        assert table.last_used[slot] == 5.0 + i
    assert table.bytes_per_stream() == 2 * 4 + 8 + 8


def test_used_is_one_past_the_highest_live_slot() -> None:
    table = StateTable({"h": ((2,), np.float32)}, capacity=2, clock=FakeClock())
    assert table.used() == 0
    slots = {f"s{i}": table.admit(f"s{i}") for i in range(5)}
    assert table.used() == max(slots.values()) + 1 == 5
    table.release("s2")
    assert table.used() == 5
    table.release("s4")
    assert table.used() == 4
    for stream in ("s0", "s1", "s3"):
        table.release(stream)
    assert table.used() == 0


# ---------------------------------------------------------------------- shrinking


def _check_table(table: StateTable) -> None:
    """slot_of, stream_of, the free list and the id index agree."""
    assert all(table.stream_of[slot] == stream for stream, slot in table.slot_of.items())
    assert sum(s is not None for s in table.stream_of) == len(table)
    assert sorted([*table.free, *table.slot_of.values()]) == list(range(table.capacity))
    live = list(table.slot_of)
    found = table.index.find(_id_bytes(live), len(live)) if live else np.empty(0, np.int64)
    assert found is not None and found.tolist() == list(table.slot_of.values())
    assert table.index.live.size == table.capacity == table.last_used.size


def test_state_table_shrinks_below_a_quarter_live_and_every_stream_keeps_rows_time_and_place():
    clock = FakeClock(5.0)
    table = StateTable({"h": ((2,), np.float32), "n": ((), np.int64)}, capacity=4, clock=clock)
    names = [f"s{i}" for i in range(100)]
    for i, name in enumerate(names):
        slot = table.admit(name)
        table.slabs["h"][slot] = (i, -i)
        table.slabs["n"][slot] = 10 * i
        clock.advance(1)
    assert table.capacity == 128
    kept = names[3::10]
    capacities = []
    for name in reversed(names):  # the highest slots go first, kept ones stay scattered
        if name not in kept:
            table.release(name)
            capacities.append(table.capacity)
            _check_table(table)

    # below 32 live of 128: to 62; below 15.5 of 62: to 30; 10 of 30 stay
    assert sorted(set(capacities), reverse=True) == [128, 62, 30]
    assert list(table.slot_of) == kept and table.used() <= 15  # moved to the low end at 15
    for name in kept:
        i, slot = names.index(name), table.slot_of[name]
        assert table.slabs["h"][slot].tolist() == [i, -i] and table.slabs["n"][slot] == 10 * i
        assert table.last_used[slot] == 5.0 + i
    assert table.index.find(_id_bytes(["s0"]), 1) is None
    assert table.index.arena.size < 16 * 128
    for i in range(20):  # the free slots are used before the slabs grow again
        table.admit(f"new{i}")
    assert table.capacity == 30
    assert not table.slabs["h"][table.slot_of["new0"]].any()
    table.admit("one more")
    assert table.capacity == 60
    _check_table(table)


def test_a_population_hovering_around_a_boundary_reallocates_once_not_every_pass() -> None:
    table = StateTable({"h": ((4,), np.float32)}, capacity=4)
    for i in range(256):
        table.admit(f"s{i}")
    capacities = [table.capacity]
    fresh = iter(range(10**6))

    def hover(low: int, high: int) -> None:
        for _ in range(20):
            while len(table) > low:
                table.release(next(iter(table.slot_of)))
            while len(table) < high:
                table.admit(f"n{next(fresh)}")
            if table.capacity != capacities[-1]:
                capacities.append(table.capacity)

    hover(63, 66)  # around a quarter of 256: shrinks once, to 126
    hover(125, 128)  # around 126, full: grows once, to 252
    hover(63, 66)  # above a quarter of 252: stays
    assert capacities == [256, 126, 252]


def _survivors_and_the_rest(engines: list[StreamEngine], reference: StreamEngine, n_in: int):
    """Step `engines` with 300 streams and `reference` with the 20 that survive, in calls of
    the same rows for those 20; return the survivors and the streams to go."""
    survivors = [f"keep{i}" for i in range(20)]
    rest = [f"go{i}" for i in range(280)]
    for k in range(3):
        X = random_rows(k, 20, n_in)
        seq = np.arange(20) + 1 + k
        for engine in [*engines, reference]:
            engine.process(survivors, X, ts=np.full(20, 100.0 + k), seq=seq)
        for engine in engines:
            engine.process(rest, random_rows(10 + k, 280, n_in), seq=np.full(280, 1 + k))
    return survivors, rest


@pytest.mark.parametrize("scoring", [False, True], ids=["lstm", "built-in"])
def test_after_a_shrink_streams_step_exactly_as_in_an_engine_that_never_grew(scoring: bool):
    model = load_default_model() if scoring else random_model("lstm", 2, True, seed=6)
    n_in = model.input_size
    clock = FakeClock()
    shrunk = StreamEngine(model, capacity=8, idle_timeout=100.0, clock=clock)
    never = StreamEngine(model, capacity=8, idle_timeout=100.0, clock=clock)
    survivors, rest = _survivors_and_the_rest([shrunk], never, n_in)
    for stream in rest[:100]:
        shrunk.drop(stream)
    assert shrunk.stats()["capacity"] == 512
    clock.advance(60.0)
    for engine in (shrunk, never):  # survivors used 60 s after the rest: idle ages differ
        engine.process(survivors[:10], random_rows(20, 10, n_in), seq=np.full(10, 100))
    clock.advance(50.0)
    assert sorted(shrunk.evict_idle()) == sorted(rest[100:] + survivors[10:]) and len(shrunk) == 10
    never.evict_idle()
    assert shrunk.stats()["capacity"] == 20 and never.stats()["capacity"] == 32

    clock.advance(3.0)
    batches = [survivors[:10] * 2, ["new", *survivors[:10]], [*survivors[9::-1], "new"]]
    for k, streams in enumerate(batches):
        X = random_rows(30 + k, len(streams), n_in)
        got = shrunk.process(streams, X, ts=np.full(len(streams), 200.0 + k), seq=None)
        want = never.process(streams, X, ts=np.full(len(streams), 200.0 + k), seq=None)
        for field in ("outputs", "scores", "events", "peaks", "lengths", "opened"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)
    _assert_same_states(all_states(shrunk), all_states(never))
    assert shrunk.streams() == never.streams()
    ages = [engine.snapshot_copy().arrays()["idle_seconds"] for engine in (shrunk, never)]
    np.testing.assert_array_equal(*ages)


def test_after_a_shrink_outputs_follow_the_numpy_reference() -> None:
    model = random_model("lstm", 2, True, seed=8, scaling=True)
    engine = StreamEngine(model, capacity=4)
    states: dict[str, object] = {}

    def step(streams: list[str], X: np.ndarray) -> None:
        got = engine.step_many(streams, X)
        for stream, x, y in zip(streams, X, got, strict=True):
            state = states.get(stream, zero_state(model))
            expected, states[stream] = reference_step(model, x, state)
            np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)

    streams = [f"s{i}" for i in range(64)]
    for k in range(3):
        step(streams, random_rows(k, 64))
    for stream in streams[::-1]:
        if stream not in streams[5:60:9]:
            engine.drop(stream)
            states.pop(stream)
    assert engine.stats()["capacity"] == 14
    for k in range(3):
        step([*states, "late"], random_rows(10 + k, len(states) + 1))


def test_swap_model_after_a_burst_keeps_states_and_lets_the_slabs_shrink(gru1: Model) -> None:
    engine = StreamEngine(gru1, capacity=4)
    streams = [f"s{i}" for i in range(200)]
    engine.step_many(streams, random_rows(0, 200))
    for stream in streams[60:]:
        engine.drop(stream)  # 60 of 256 live: no shrink yet
    before = all_states(engine)

    engine.swap_model(random_model("gru", 1, True, seed=3))
    _assert_same_states(all_states(engine), before)
    for stream in streams[10:60]:
        engine.drop(stream)

    assert engine.stats()["capacity"] < 64


def test_idle_stream_listed_twice_in_a_batch_counts_one_eviction() -> None:
    clock = FakeClock()
    engine = StreamEngine(random_model("gru", 1, True, seed=4), idle_timeout=10.0, clock=clock)
    engine.step_many(["a"], random_rows(0, 1))
    clock.advance(60.0)
    engine.step_many(["a", "a"], random_rows(1, 2))
    assert engine.stats()["evicted_idle"] == 1


# ------------------------------------------------------------ the id index


def _id_bytes(streams: list[str]) -> np.ndarray:
    """Ids as the jitted decoder writes them: UTF-8, each followed by a 0 byte."""
    return np.frombuffer(b"".join(s.encode("utf-8") + b"\0" for s in streams), np.uint8)


def test_id_index_finds_what_slot_of_holds_through_admission_release_growth_and_eviction():
    rng = np.random.default_rng(3)
    table = StateTable({"h": ((2,), np.float32)}, capacity=2, max_streams=700)
    names = [f"s{i}" for i in range(500)] + ["ü" * 30, "x" * 256, "𝄞-sensor", "a"]
    gone: set[str] = set()
    added_bytes = 0
    first_table_size = table.index.table.size
    for _ in range(60):
        for stream in rng.choice(names, 40).tolist():
            if stream not in table.slot_of:
                table.admit(stream)
                gone.discard(stream)
                added_bytes += len(stream.encode())
        for stream in rng.choice(list(table.slot_of), min(len(table), 25)).tolist():
            if table.release(stream):
                gone.add(stream)
        live = list(table.slot_of)
        found = table.index.find(_id_bytes(live), len(live))
        assert found is not None and found.tolist() == [table.slot_of[s] for s in live]
        for stream in list(gone)[:5]:
            assert table.index.find(_id_bytes([live[0], stream]), 2) is None
        # fewer ids than asked for, or an unterminated last one: not found, nothing read past
        assert table.index.find(_id_bytes(live[:1]), 2) is None
        assert table.index.find(_id_bytes(live[:1])[:-1], 1) is None
    # the arena's live ids were moved together and the hash table rebuilt along the way
    assert added_bytes > table.index.arena.size >= table.index.arena_used
    assert table.index.table.size > first_table_size
    assert table.index.entries == len(table)


def test_engine_steps_the_same_with_the_decoders_ids_as_with_strings(lstm2: Model) -> None:
    by_ids, by_strings = StreamEngine(lstm2), StreamEngine(lstm2)
    streams = ["a", "b", "ü-7", "a", "c"]  # "a" twice: two waves
    for seed in range(3):
        X = random_rows(seed, len(streams), lstm2.input_size)
        seq = np.array([seed * 2 + 1, 1, 1, seed * 2 + 2, 1], np.int64)
        got = by_ids.process(streams, X, seq=seq, ids=_id_bytes(streams))
        want = by_strings.process(streams, X, seq=seq)
        np.testing.assert_array_equal(got.outputs, want.outputs)
    _assert_same_states(all_states(by_ids), all_states(by_strings))
    # an id the index does not know yet is admitted through the strings
    got = by_ids.process(["new"], random_rows(9, 1, lstm2.input_size), ids=_id_bytes(["new"]))
    assert "new" in by_ids and got.outputs.shape == (1, lstm2.output_size)
