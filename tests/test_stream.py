"""StreamEngine: batch equals loop, bad input changes no state, snapshots, swap_model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock, all_states, random_model, random_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_step, zero_state

import engine.stream as stream_module
from engine.alerts import A_THRESHOLD, SCORING_SLAB
from engine.anomaly import AnomalySpec
from engine.default_model import load_default_model
from engine.memory import release_freed_memory
from engine.model import Model
from engine.state import faulted_in
from engine.stream import SNAPSHOT_VERSION, StreamEngine, write_snapshot

ATOL = 1e-5


def _assert_same_states(
    got: dict[str, dict[str, np.ndarray]], expected: dict[str, dict[str, np.ndarray]]
) -> None:
    assert list(got) == list(expected)
    for stream, arrays in expected.items():
        assert set(got[stream]) == set(arrays)
        for name, array in arrays.items():
            np.testing.assert_array_equal(got[stream][name], array, err_msg=f"{stream}.{name}")


def _assert_close_states(
    got: dict[str, dict[str, np.ndarray]], expected: dict[str, dict[str, np.ndarray]]
) -> None:
    assert sorted(got) == sorted(expected)
    for stream, arrays in expected.items():
        for name, array in arrays.items():
            np.testing.assert_allclose(got[stream][name], array, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def lstm2() -> Model:
    return random_model("lstm", 2, True, seed=1, scaling=True)


@pytest.fixture(scope="module")
def gru2() -> Model:
    return random_model("gru", 2, False, seed=2)


# ------------------------------------------------------------------ step_many == loop of step


def _loop(engine: StreamEngine, streams: list[str], X: np.ndarray) -> np.ndarray:
    return np.stack([engine.step(s, x) for s, x in zip(streams, X, strict=True)])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_many_with_interleaved_repeated_streams_equals_loop_of_step(cell: str) -> None:
    model = random_model(cell, 2, True, seed=3, scaling=True)
    batched, looped = StreamEngine(model), StreamEngine(model)
    history = ["old1", "old2", "old1"]
    X0 = random_rows(0, len(history))
    batched.step_many(history, X0)
    _loop(looped, history, X0)
    # new and existing streams mixed; "a" appears four times (four waves), "old1" twice
    streams = ["a", "old1", "b", "a", "a", "old2", "old1", "c", "a", "b"]
    X = random_rows(1, len(streams))

    got = batched.step_many(streams, X)
    expected = _loop(looped, streams, X)

    assert got.shape == (len(streams), model.output_size)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    _assert_close_states(all_states(batched), all_states(looped))


def test_step_many_with_one_stream_listed_many_times_advances_it_once_per_row(
    gru2: Model,
) -> None:
    batched, looped = StreamEngine(gru2), StreamEngine(gru2)
    X = random_rows(2, 7)

    got = batched.step_many(["s"] * 7, X)
    expected = _loop(looped, ["s"] * 7, X)

    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    # the last row's output is the state after all seven readings, not after one
    np.testing.assert_allclose(batched.state_of("s")["h"][-1], got[-1], rtol=0, atol=ATOL)


def test_step_many_beyond_batch_buffers_and_slab_capacity_equals_loop(lstm2: Model) -> None:
    batched = StreamEngine(lstm2, capacity=4)
    looped = StreamEngine(lstm2, capacity=4)
    rng = np.random.default_rng(5)
    streams = [f"s{i}" for i in rng.integers(0, 40, 300)]
    X = random_rows(6, len(streams))

    got = batched.step_many(streams, X)
    expected = _loop(looped, streams, X)

    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    _assert_close_states(all_states(batched), all_states(looped))


def test_step_many_with_no_rows_returns_empty_and_changes_nothing(gru2: Model) -> None:
    engine = StreamEngine(gru2)
    engine.step("a", random_rows(0, 1)[0])
    before = all_states(engine)

    out = engine.step_many([], np.zeros((0, 3), np.float32))

    assert out.shape == (0, gru2.output_size)
    _assert_same_states(all_states(engine), before)


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    warm=st.lists(st.integers(0, 5), max_size=6),
    batches=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=14), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_step_many_equals_loop_for_random_interleavings(
    cell: str, warm: list[int], batches: list[list[int]], seed: int
) -> None:
    model = _HYPOTHESIS_MODELS[cell]
    batched, looped = StreamEngine(model, capacity=2), StreamEngine(model, capacity=2)
    for s in warm:
        x = random_rows(seed + s, 1)[0]
        batched.step(f"s{s}", x)
        looped.step(f"s{s}", x)

    for k, batch in enumerate(batches):
        streams = [f"s{s}" for s in batch]
        X = random_rows(seed + 100 + k, len(streams))
        np.testing.assert_allclose(
            batched.step_many(streams, X), _loop(looped, streams, X), rtol=0, atol=ATOL
        )
    _assert_close_states(all_states(batched), all_states(looped))


_HYPOTHESIS_MODELS = {
    "rnn": random_model("rnn", 2, False, seed=7, hidden_size=5),
    "gru": random_model("gru", 1, True, seed=7, hidden_size=5),
    "lstm": random_model("lstm", 2, True, seed=7, hidden_size=5, scaling=True),
}


# ------------------------------------------------------------------------------ stream ids


def test_str_subclass_id_reaches_the_same_stream_as_the_plain_str(gru2: Model) -> None:
    # numpy.str_ is a str subclass; ids taken from a numpy array of names arrive as such.
    engine, plain = StreamEngine(gru2), StreamEngine(gru2)
    X = random_rows(8, 3)
    for x in X[:2]:
        engine.step("a", x)
        plain.step("a", x)

    y = engine.step(np.str_("a"), X[2])

    np.testing.assert_array_equal(y, plain.step("a", X[2]))
    assert len(engine) == 1
    engine.drop("a")
    assert len(engine) == 0 and engine.stats()["streams"] == 0
    # every slot is free again: a full table of new streams fits without growing
    capacity = engine.stats()["capacity"]
    engine.step_many([f"n{i}" for i in range(capacity)], random_rows(9, capacity))
    assert engine.stats()["capacity"] == capacity


def test_step_many_accepts_str_subclass_ids_of_existing_streams(gru2: Model) -> None:
    engine, plain = StreamEngine(gru2), StreamEngine(gru2)
    X = random_rows(10, 2)
    engine.step("a", X[0])
    plain.step("a", X[0])

    y = engine.step_many([np.str_("a")], X[1:])

    np.testing.assert_array_equal(y[0], plain.step("a", X[1]))
    assert engine.streams() == ["a"]


# ------------------------------------------------------------------------------- bad input

BAD_IDS = [
    pytest.param(7, "must be a str, got int", id="int"),
    pytest.param(None, "must be a str, got NoneType", id="None"),
    pytest.param(b"a", "must be a str, got bytes", id="bytes"),
    pytest.param(["a"], "must be a str, got list", id="list"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("é" * 128 + "x", "257 UTF-8 bytes, more than the limit of 256", id="257-bytes"),
    pytest.param("\ud800", "lone surrogate", id="lone-surrogate"),
]


@pytest.fixture()
def busy(lstm2: Model) -> StreamEngine:
    """An engine holding three streams with non-zero states."""
    engine = StreamEngine(lstm2)
    engine.step_many(["a", "b", "c", "a"], random_rows(11, 4))
    return engine


@pytest.mark.parametrize(("bad", "message"), BAD_IDS)
def test_step_refuses_bad_stream_id_and_changes_nothing(
    busy: StreamEngine, bad: object, message: str
) -> None:
    before = all_states(busy)

    with pytest.raises(ValueError, match=message):
        busy.step(bad, np.zeros(3, np.float32))  # type: ignore[arg-type]

    _assert_same_states(all_states(busy), before)


@pytest.mark.parametrize(("bad", "message"), BAD_IDS)
def test_step_many_refuses_bad_stream_id_among_good_ones_and_changes_nothing(
    busy: StreamEngine, bad: object, message: str
) -> None:
    before = all_states(busy)

    with pytest.raises(ValueError, match=message):
        busy.step_many(["a", "new", bad, "b"], random_rows(12, 4))  # type: ignore[list-item]

    _assert_same_states(all_states(busy), before)
    assert "new" not in busy


def test_stream_id_of_256_utf8_bytes_is_accepted(busy: StreamEngine) -> None:
    longest = "é" * 128

    busy.step(longest, np.zeros(3, np.float32))
    busy.step_many(["€" * 85 + "x"], np.zeros((1, 3), np.float32))

    assert longest in busy and "€" * 85 + "x" in busy


@pytest.mark.parametrize(
    ("x", "message"),
    [
        pytest.param(np.zeros(2), r"shape \(2,\), the model expects \(3,\)", id="too-short"),
        pytest.param(np.zeros(4), r"shape \(4,\), the model expects \(3,\)", id="too-long"),
        pytest.param(np.zeros((1, 3)), r"shape \(1, 3\), the model expects", id="2-D"),
        # np.ascontiguousarray turns a scalar into shape (1,), which is what the message shows
        pytest.param(np.float32(1.0), r"shape \(1,\), the model expects \(3,\)", id="scalar"),
        pytest.param([1.0, np.nan, 0.0], "holds nan at input 1", id="nan"),
        pytest.param([np.inf, 0.0, 0.0], "holds inf at input 0", id="inf"),
        pytest.param([0.0, 0.0, -np.inf], "holds -inf at input 2", id="-inf"),
        pytest.param(
            [0.0, 1e39, 0.0],
            "holds inf at input 1",
            id="overflows-float32",
            marks=pytest.mark.filterwarnings("ignore:overflow encountered in cast"),
        ),
    ],
)
@pytest.mark.parametrize("stream", ["a", "new"], ids=["existing", "new"])
def test_step_refuses_bad_reading_and_changes_nothing(
    busy: StreamEngine, stream: str, x: object, message: str
) -> None:
    before = all_states(busy)

    with pytest.raises(ValueError, match=message):
        busy.step(stream, x)

    _assert_same_states(all_states(busy), before)
    assert "new" not in busy


@pytest.mark.parametrize(
    ("X", "message"),
    [
        pytest.param(np.zeros((3, 2)), r"shape \(3, 2\), expected \(3, 3\)", id="too-few-columns"),
        pytest.param(np.zeros((3, 4)), r"shape \(3, 4\), expected \(3, 3\)", id="too-many-columns"),
        pytest.param(np.zeros((2, 3)), r"shape \(2, 3\), expected \(3, 3\)", id="too-few-rows"),
        pytest.param(np.zeros((4, 3)), r"shape \(4, 3\), expected \(3, 3\)", id="too-many-rows"),
        pytest.param(np.zeros(9), r"shape \(9,\), expected \(3, 3\)", id="1-D"),
        pytest.param(np.zeros((3, 3, 1)), r"shape \(3, 3, 1\)", id="3-D"),
    ],
)
def test_step_many_refuses_wrong_shape_and_changes_nothing(
    busy: StreamEngine, X: np.ndarray, message: str
) -> None:
    before = all_states(busy)

    with pytest.raises(ValueError, match=message):
        busy.step_many(["a", "new", "b"], X)

    _assert_same_states(all_states(busy), before)
    assert "new" not in busy


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("row", [0, 2, 4])
def test_step_many_refuses_non_finite_value_in_one_row_and_changes_nothing(
    busy: StreamEngine, bad: float, row: int
) -> None:
    streams = ["a", "new", "b", "a", "other"]
    X = random_rows(13, len(streams))
    X[row, 1] = bad
    before = all_states(busy)

    with pytest.raises(ValueError, match=rf"reading {row} \('{streams[row]}'\) holds -?(nan|inf)"):
        busy.step_many(streams, X)

    _assert_same_states(all_states(busy), before)
    assert "new" not in busy and "other" not in busy


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param({"seq": [9, 9]}, r"seq holds 2 values for 3 readings", id="seq-short"),
        pytest.param({"seq": [9, 9, 9, 9]}, r"seq holds 4 values for 3 readings", id="seq-long"),
        pytest.param({"seq": [9, 9, 1], "ts": [1.0]}, r"ts holds 1 value for 3", id="ts-short"),
        pytest.param({"seq": [1, 9, 9], "ts": 5.0}, r"ts holds 1 value for 3", id="ts-scalar"),
        pytest.param({"seq": [9, 9, 9], "ts": ["x", 1, 2]}, r"ts: expected numbers", id="ts-text"),
        pytest.param({"seq": ["x", 9, 9]}, r"seq: expected whole numbers", id="seq-text"),
    ],
)
@pytest.mark.parametrize("scoring", [False, True], ids=["plain", "scoring"])
def test_process_refuses_seq_or_ts_not_one_per_reading_and_changes_nothing(
    lstm2: Model, scoring: bool, extra: dict, message: str
) -> None:
    model = load_default_model() if scoring else lstm2
    engine = StreamEngine(model)
    engine.process(["a", "b"], np.ones((2, model.input_size)), seq=[5, 5])
    before = all_states(engine)

    with pytest.raises(ValueError, match=message):
        engine.process(["a", "new", "b"], np.ones((3, model.input_size)), **extra)

    _assert_same_states(all_states(engine), before)
    assert "new" not in engine


def test_engine_keeps_working_after_refusing_bad_input(busy: StreamEngine, lstm2: Model) -> None:
    twin = StreamEngine(lstm2)
    twin.step_many(["a", "b", "c", "a"], random_rows(11, 4))
    for bad in ([np.nan, 0, 0], [0, 0]):
        with pytest.raises(ValueError):
            busy.step("a", bad)
    with pytest.raises(ValueError):
        busy.step_many(["a", None], random_rows(0, 2))  # type: ignore[list-item]
    X = random_rows(14, 3)

    np.testing.assert_array_equal(
        busy.step_many(["a", "b", "a"], X), twin.step_many(["a", "b", "a"], X)
    )


# ------------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_restore_continues_exactly_like_an_engine_never_stopped(cell: str, tmp_path: Path) -> None:
    model = random_model(cell, 2, True, seed=15, scaling=True)
    streams = ["a", "b", "c", "b", "a", "d"]
    running, stopped = StreamEngine(model), StreamEngine(model)
    for k in range(5):
        X = random_rows(20 + k, len(streams))
        running.step_many(streams, X)
        stopped.step_many(streams, X)
    stopped.drop("d")
    running.drop("d")
    path = tmp_path / "state.npz"

    assert stopped.snapshot(path) == 3
    restored = StreamEngine.restore(path, model)

    assert restored.streams() == ["a", "b", "c"]
    _assert_same_states(all_states(restored), all_states(running))
    for k in range(3):
        X = random_rows(40 + k, 4)
        order = ["c", "a", "a", "b"]
        np.testing.assert_array_equal(restored.step_many(order, X), running.step_many(order, X))
        np.testing.assert_array_equal(restored.step("b", X[0]), running.step("b", X[0]))


def _snapshot_contents(path: Path) -> tuple[list[str], dict, bytes, dict[str, np.ndarray]]:
    """A snapshot file's array names in file order, its header, the header's bytes, arrays."""
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        arrays = {name: data[name] for name in names}
    raw = arrays.pop("header").tobytes()
    return names, json.loads(raw), raw, arrays


def _state_as_snapshot_arrays(engine: StreamEngine, now: float) -> dict[str, np.ndarray]:
    """What a snapshot of `engine` must hold, from `state_of`, one row per stream in order."""
    streams = engine.streams()
    table = engine._table
    arrays = {
        f"slab_{name}": np.stack([engine.state_of(s)[name] for s in streams])
        for name in table.slabs
    }
    idle = [max(now - table.last_used[table.slot_of[s]], 0.0) for s in streams]
    arrays["idle_seconds"] = np.array(idle)
    return arrays


@pytest.mark.parametrize("memory", ["new", "ready", "too small"])
@pytest.mark.parametrize("scoring", [False, True], ids=["lstm", "built-in"])
def test_snapshot_written_from_a_copy_holds_the_state_at_the_copy_and_nothing_after(
    scoring: bool, memory: str, tmp_path: Path
) -> None:
    model = load_default_model() if scoring else random_model("lstm", 2, True, seed=3)
    n_in = model.input_size
    clock = FakeClock()
    engine = StreamEngine(model, capacity=4, clock=clock)
    streams = [f"s{i}" for i in range(12)]
    for k in range(4):
        rows = streams[: 6 + 2 * k]
        engine.process(rows, random_rows(k, len(rows), n_in), seq=np.arange(len(rows)) + 1 + k)
        clock.advance(1.5)
    for stream in ("s1", "s4", "s0"):
        engine.drop(stream)
    engine.step_many(["late", "s1"], random_rows(7, 2, n_in))  # into freed slots, out of order
    clock.advance(2.0)
    expected = _state_as_snapshot_arrays(engine, clock())
    engine.snapshot(tmp_path / "whole.npz")
    given = {
        "new": None,
        "ready": faulted_in(engine.snapshot_memory()),
        "too small": np.zeros(64, np.uint8),
    }[memory]

    copy = engine.snapshot_copy(given)
    # none of this may reach the copy: steps, a drop, a new stream, time, slabs that grow,
    # and slabs that shrink, renumbering every slot
    engine.step_many(["s2", "late", "new"], random_rows(8, 3, n_in))
    engine.drop("s3")
    clock.advance(7.0)
    more = [f"more{i}" for i in range(40)]
    engine.step_many(more, random_rows(9, 40, n_in))
    grown = engine.stats()["capacity"]
    for stream in more + streams[5:]:
        engine.drop(stream)
    engine.step_many(["s2", "late"], random_rows(10, 2, n_in))
    assert engine.stats()["capacity"] < grown
    write_snapshot(tmp_path / "split.npz", copy)

    if memory == "ready":
        assert np.shares_memory(copy.last_used, given)
    split_files, split_header, split_raw, split_arrays = _snapshot_contents(tmp_path / "split.npz")
    files, header, raw, arrays = _snapshot_contents(tmp_path / "whole.npz")
    assert split_files == files == [*expected, "header"]
    assert split_header["streams"] == header["streams"] == ["s2", "s3", *streams[5:], "late", "s1"]
    split_header.pop("created"), header.pop("created")
    assert split_header == header
    assert split_raw == json.dumps(json.loads(split_raw)).encode()  # as json.dumps writes it
    for name, array in expected.items():
        for got in (split_arrays[name], arrays[name]):
            assert got.dtype == array.dtype and got.shape == array.shape, name
            np.testing.assert_array_equal(got, array, err_msg=name)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), max_size=12), st.integers(1, 5))
def test_snapshot_header_is_written_as_json_dumps_writes_it(streams: list[str], chunk: int) -> None:
    header = {"format": "x", "streams": streams, "created": 1.5, "extra": {"k": ["v", 2]}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream_module, "_WRITER_CHUNK", chunk)
        got = stream_module._header_json(header).tobytes()
    assert got == json.dumps(header).encode()


def test_snapshot_of_empty_engine_restores_empty(gru2: Model, tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"

    assert StreamEngine(gru2).snapshot(path) == 0
    restored = StreamEngine.restore(path, gru2)

    assert len(restored) == 0 and restored.streams() == []


def test_restore_refuses_snapshot_of_other_weights_naming_both_fingerprints(
    gru2: Model, tmp_path: Path
) -> None:
    other = random_model("gru", 2, False, seed=99)
    path = tmp_path / "s.npz"
    engine = StreamEngine(gru2)
    engine.step("a", np.zeros(3, np.float32))
    engine.snapshot(path)

    with pytest.raises(ValueError) as info:
        StreamEngine.restore(path, other)

    message = str(info.value)
    assert gru2.fingerprint[:16] in message and other.fingerprint[:16] in message


def test_restore_refuses_snapshot_of_the_same_weights_scored_with_other_settings(
    tmp_path: Path,
) -> None:
    model = load_default_model()
    section = model.metadata["anomaly"]
    other = dataclasses.replace(
        model, metadata={**model.metadata, "anomaly": {**section, "norm_window": 500.0}}
    )
    assert other.fingerprint == model.fingerprint  # the weights are the same
    path = tmp_path / "s.npz"
    engine = StreamEngine(model)
    engine.step("a", np.ones(1, np.float32))
    engine.snapshot(path)

    with pytest.raises(ValueError, match="other anomaly settings"):
        StreamEngine.restore(path, other)
    assert StreamEngine.restore(path, model).streams() == ["a"]


@pytest.fixture()
def snapshot_bytes(busy: StreamEngine, tmp_path: Path) -> bytes:
    path = tmp_path / "good.npz"
    busy.snapshot(path)
    return path.read_bytes()


def test_restore_refuses_truncated_snapshot_at_every_cut(
    snapshot_bytes: bytes, lstm2: Model, tmp_path: Path
) -> None:
    size = len(snapshot_bytes)
    cuts = sorted({0, 1, 4, 30, 100, size // 3, size // 2, size - 100, size - 22, size - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(snapshot_bytes[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt|not an rnnstream snapshot"):
            StreamEngine.restore(path, lstm2)


@pytest.mark.parametrize("prefix", [b"", b"PK\x03\x04", b"\x93NUMPY"], ids=["raw", "zip", "npy"])
def test_restore_refuses_random_garbage(prefix: bytes, lstm2: Model, tmp_path: Path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(prefix + np.random.default_rng(16).bytes(5000))

    with pytest.raises(ValueError, match="snapshot"):
        StreamEngine.restore(path, lstm2)


def test_restore_refuses_npz_that_is_not_a_snapshot(lstm2: Model, tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, slab_h=np.zeros((1, 2, 8), np.float32), header=np.arange(5, dtype=np.uint8))

    with pytest.raises(ValueError, match="not an rnnstream snapshot"):
        StreamEngine.restore(path, lstm2)


def _rewrite(path: Path, out: Path, edit_header=None, edit_arrays=None) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(arrays["header"].tobytes().decode())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(out, **arrays)


def _as_format_1(arrays: dict[str, np.ndarray], spec: AnomalySpec) -> None:
    """Put a snapshot's scoring rows in the layout of format 1: the normaliser statistics (the
    row's last 5 F columns) per feature, its count, mean, variance, min and max."""
    rows = arrays[f"slab_{SCORING_SLAB}"]
    f = spec.features
    planar = rows[:, -5 * f :].reshape(len(rows), 5, f)
    rows[:, -5 * f :] = planar.transpose(0, 2, 1).reshape(len(rows), 5 * f)


@pytest.mark.parametrize("features", [1, 3])
def test_restore_of_a_format_1_snapshot_continues_like_an_engine_never_stopped(
    features: int, tmp_path: Path
) -> None:
    spec = AnomalySpec(features=features, probation=10, long_window=50.0)
    model = dataclasses.replace(
        random_model("lstm", 1, True, seed=16, input_size=features, output_size=features),
        metadata={"anomaly": spec.to_dict()},
    )
    streams = ["a", "b", "c", "b", "a"]
    running, stopped = StreamEngine(model), StreamEngine(model)
    for k in range(30):
        X = random_rows(60 + k, len(streams), features)
        running.process(streams, X)
        stopped.process(streams, X)
    stopped.snapshot(tmp_path / "now.npz")
    _rewrite(
        tmp_path / "now.npz",
        tmp_path / "v1.npz",
        edit_header=lambda h: h.update(format_version=1),
        edit_arrays=lambda arrays: _as_format_1(arrays, spec),
    )

    restored = StreamEngine.restore(tmp_path / "v1.npz", model)

    _assert_same_states(all_states(restored), all_states(running))
    scored = 0.0
    for k in range(20):
        order = ["c", "a", "b", "a"]
        X = random_rows(90 + k, len(order), features) * (10.0 if k == 12 else 1.0)
        got, want = restored.process(order, X), running.process(order, X)
        for name in ("outputs", "scores", "surprise", "expected", "events", "peaks", "lengths"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        scored += want.scores.sum()
    assert scored > 0.0  # past probation: the statistics being compared are in use


def test_restore_refuses_other_format_version(
    busy: StreamEngine, lstm2: Model, tmp_path: Path
) -> None:
    busy.snapshot(tmp_path / "good.npz")
    _rewrite(
        tmp_path / "good.npz",
        tmp_path / "v2.npz",
        edit_header=lambda h: h.update(format_version=SNAPSHOT_VERSION + 1),
    )

    with pytest.raises(ValueError, match=f"format version {SNAPSHOT_VERSION + 1}"):
        StreamEngine.restore(tmp_path / "v2.npz", lstm2)


def test_restore_refuses_state_arrays_of_wrong_shape(
    busy: StreamEngine, lstm2: Model, tmp_path: Path
) -> None:
    busy.snapshot(tmp_path / "good.npz")

    def shrink(arrays: dict[str, np.ndarray]) -> None:
        arrays["slab_c"] = arrays["slab_c"][:, :, :4]

    _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", edit_arrays=shrink)

    with pytest.raises(ValueError, match="corrupt"):
        StreamEngine.restore(tmp_path / "bad.npz", lstm2)


@pytest.mark.parametrize(
    ("edit_header", "edit_arrays", "message"),
    [
        pytest.param(
            lambda h: h.update(streams=["a", "b", "a"]), None, "stream 'a' twice", id="repeated-id"
        ),
        pytest.param(lambda h: h.update(streams=["a", 7, "c"]), None, "not a str", id="int-id"),
        pytest.param(lambda h: h.update(extra=[1]), None, "extra", id="extra-not-a-dict"),
        pytest.param(None, lambda a: a["idle_seconds"].fill(np.nan), "idle_seconds", id="idle-nan"),
        pytest.param(None, lambda a: a["idle_seconds"].fill(-5.0), "idle_seconds", id="idle-neg"),
    ],
)
def test_restore_refuses_a_malformed_header_or_idle_ages(
    busy: StreamEngine, lstm2: Model, tmp_path: Path, edit_header, edit_arrays, message: str
) -> None:
    busy.snapshot(tmp_path / "good.npz")
    _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", edit_header, edit_arrays)

    with pytest.raises(ValueError, match=f"corrupt.*{message}"):
        StreamEngine.restore(tmp_path / "bad.npz", lstm2)


def test_restore_under_a_lower_max_streams_keeps_the_most_recently_used(
    lstm2: Model, tmp_path: Path
) -> None:
    # It refused the whole snapshot, which the daemon then set aside: every stream's state
    # lost to a lowered --max-streams.
    clock = FakeClock()
    engine = StreamEngine(lstm2, clock=clock)
    for stream in ["old", "a", "b", "c"]:
        engine.step(stream, random_rows(len(stream), 1)[0])
        clock.advance(1.0)
    engine.step("old", random_rows(5, 1)[0])  # the most recent again: "a" is the oldest now
    engine.snapshot(tmp_path / "s.npz")

    restored = StreamEngine.restore(tmp_path / "s.npz", lstm2, max_streams=3)

    assert restored.streams() == ["old", "b", "c"]
    _assert_same_states(
        all_states(restored), {k: v for k, v in all_states(engine).items() if k != "a"}
    )
    assert restored.stats()["evicted_lru"] == restored.evictions == 1
    restored.step("d", random_rows(9, 1)[0])  # the limit holds from then on
    assert len(restored) <= 3


def test_snapshot_leaves_no_temp_files_and_replaces_the_old_one(
    busy: StreamEngine, lstm2: Model, tmp_path: Path
) -> None:
    path = tmp_path / "s.npz"
    busy.snapshot(path)
    busy.step("late", np.ones(3, np.float32))

    busy.snapshot(path)

    assert os.listdir(tmp_path) == ["s.npz"]
    assert StreamEngine.restore(path, lstm2).streams() == ["a", "b", "c", "late"]


@pytest.mark.parametrize("failure", ["during-write", "at-fsync"])
def test_failed_snapshot_keeps_the_previous_one_whole(
    busy: StreamEngine, lstm2: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    path = tmp_path / "s.npz"
    busy.snapshot(path)
    good = path.read_bytes()
    busy.step("late", np.ones(3, np.float32))

    def half_written(file, **arrays) -> None:
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    def failing_fsync(fd: int) -> None:
        raise OSError("I/O error")

    if failure == "during-write":
        monkeypatch.setattr(stream_module.np, "savez", half_written)
    else:
        monkeypatch.setattr(stream_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        busy.snapshot(path)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["s.npz"]
    assert path.read_bytes() == good
    assert StreamEngine.restore(path, lstm2).streams() == ["a", "b", "c"]


def test_snapshot_extra_round_trips(busy: StreamEngine, lstm2: Model, tmp_path: Path) -> None:
    extra = {"anomaly": {"a": [1.5, 2.0]}, "note": "é", "n": 3, "flag": None}
    busy.snapshot_extra = extra

    busy.snapshot(tmp_path / "s.npz")
    restored = StreamEngine.restore(tmp_path / "s.npz", lstm2)

    assert restored.snapshot_extra == extra


def test_idle_ages_survive_snapshot_and_restore(gru2: Model, tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    engine = StreamEngine(gru2, clock=clock)
    engine.step("old", np.zeros(3, np.float32))
    clock.advance(50)
    engine.step("young", np.zeros(3, np.float32))
    clock.advance(10)  # ages now: old 60 s, young 10 s
    engine.snapshot(tmp_path / "s.npz")

    later = FakeClock(9000.0)
    restored = StreamEngine.restore(tmp_path / "s.npz", gru2, idle_timeout=30.0, clock=later)

    assert restored.evict_idle() == ["old"]
    later.advance(19)
    assert restored.evict_idle() == []
    later.advance(2)
    assert restored.evict_idle() == ["young"]


def test_restore_of_missing_file_raises_file_not_found(gru2: Model, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StreamEngine.restore(tmp_path / "nope.npz", gru2)


# ------------------------------------------------------------------------------ swap_model


def _reference_states(model: Model, streams: list[str], X: np.ndarray) -> dict:
    states: dict = {}
    for s, x in zip(streams, X, strict=True):
        _, states[s] = reference_step(model, x, states.get(s, zero_state(model)))
    return states


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_swap_model_with_same_shapes_keeps_states_and_continues_with_new_weights(
    cell: str,
) -> None:
    old = random_model(cell, 2, True, seed=30)
    new = random_model(cell, 2, True, seed=31, scaling=True)
    engine = StreamEngine(old)
    streams = ["a", "b", "a", "c"]
    X = random_rows(32, len(streams))
    engine.step_many(streams, X)
    before = all_states(engine)

    engine.swap_model(new)

    assert engine.model is new
    _assert_same_states(all_states(engine), before)
    states = _reference_states(old, streams, X)
    x = random_rows(33, 1)[0]
    for s in ["b", "a"]:
        expected, _ = reference_step(new, x, states[s])
        np.testing.assert_allclose(engine.step(s, x), expected, rtol=0, atol=ATOL)


def test_swap_model_with_other_hidden_size_is_refused_without_reset(lstm2: Model) -> None:
    engine = StreamEngine(lstm2)
    engine.step_many(["a", "b"], random_rows(34, 2))
    before = all_states(engine)
    bigger = random_model("lstm", 2, True, seed=1, hidden_size=12)

    with pytest.raises(ValueError, match="state shape differs.*pass reset=True to restart"):
        engine.swap_model(bigger)

    assert engine.model is lstm2
    _assert_same_states(all_states(engine), before)
    x = random_rows(35, 1)[0]
    twin = StreamEngine(lstm2)
    twin.step_many(["a", "b"], random_rows(34, 2))
    np.testing.assert_array_equal(engine.step("a", x), twin.step("a", x))


def test_swap_model_with_reset_restarts_every_stream_from_zeros(lstm2: Model) -> None:
    engine = StreamEngine(lstm2)
    engine.step_many(["a", "b"], random_rows(36, 2))
    bigger = random_model("gru", 1, False, seed=2, hidden_size=12)
    x = random_rows(37, 1)[0]

    engine.swap_model(bigger, reset=True)

    assert engine.model is bigger
    np.testing.assert_array_equal(engine.step("a", x), StreamEngine(bigger).step("a", x))


def test_swap_model_counts_the_streams_a_reset_forgets_as_evicted_for_reload(lstm2: Model) -> None:
    engine = StreamEngine(lstm2, max_streams=2)
    for stream, x in zip("abc", random_rows(38, 3), strict=True):
        engine.step(stream, x)  # "a" goes at max_streams
    same = random_model("lstm", 2, True, seed=3)

    engine.swap_model(same)  # the states carry over: nothing forgotten
    assert engine.stats()["evicted_reload"] == 0 and len(engine) == 2
    engine.swap_model(same, reset=True)
    engine.swap_model(same, reset=True)  # no streams left to forget

    stats = engine.stats()
    assert len(engine) == 0 and stats["evicted_reload"] == 2 and stats["evicted_lru"] == 1
    assert stats["evictions"] == engine.evictions == 3


def test_swap_model_with_other_input_size_is_refused_without_reset(lstm2: Model) -> None:
    engine = StreamEngine(lstm2)
    engine.step("a", random_rows(38, 1)[0])
    before = all_states(engine)

    with pytest.raises(ValueError, match="takes 4 inputs"):
        engine.swap_model(random_model("lstm", 2, True, seed=1, input_size=4))

    _assert_same_states(all_states(engine), before)


def test_snapshot_is_a_zip_of_plain_arrays(busy: StreamEngine, tmp_path: Path) -> None:
    # restore loads with allow_pickle=False; a snapshot must never need pickle to be read
    busy.snapshot(tmp_path / "s.npz")

    with zipfile.ZipFile(tmp_path / "s.npz") as archive:
        names = sorted(archive.namelist())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as data:
        dtypes = {name: data[name].dtype for name in data.files}

    assert names == ["header.npy", "idle_seconds.npy", "slab_c.npy", "slab_h.npy", "slab_seq.npy"]
    assert all(dtype.kind in "fiu" for dtype in dtypes.values())


_BURST_SCRIPT = textwrap.dedent(
    """
    from pathlib import Path
    import numpy as np
    from engine.model import Model
    from engine.stream import StreamEngine

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    now = [1000.0]
    engine = StreamEngine(Model.random("lstm", 8, 64), idle_timeout=90.0, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    steady = [f"steady-{i}" for i in range(5000)]

    def step(names):
        for a in range(0, len(names), 4096):
            part = names[a : a + 4096]
            engine.process(part, rng.normal(size=(len(part), 8)).astype(np.float32))

    step(steady)
    before = rss_mb()
    step([f"burst-{i}" for i in range(150_000)])
    now[0] += 60.0
    step(steady)
    peak = rss_mb()
    now[0] += 60.0
    engine.evict_idle()
    step(steady)
    print(before, peak, rss_mb())
    """
)


@pytest.mark.skipif(
    not (Path("/proc/self/status").exists() and release_freed_memory()),
    reason="needs /proc and glibc's malloc_trim",
)
def test_memory_of_a_burst_of_streams_goes_back_to_the_system_when_they_are_evicted():
    # 5,000 steady streams, a burst of 150,000 that goes idle: after the sweep the table shrinks
    # and the freed heap is trimmed. Without the trim ~26% of the burst's growth stayed
    # resident (glibc keeps the freed middle of its heap), with it ~7%. A process of its own,
    # so that no other test's memory is in the figures.
    done = subprocess.run(
        [sys.executable, "-c", _BURST_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, peak, after = map(float, done.stdout.split())
    assert peak - before > 60  # the burst did take memory
    assert (after - before) / (peak - before) < 0.15, (before, peak, after)


def test_a_streams_own_alert_level_outlives_a_reset_but_not_a_drop(tmp_path: Path) -> None:
    # An operator's `threshold --stream` is a setting: a producer's `reset: true` (a sensor
    # replaced) zeroed it with the state and put the stream back on the policy's level.
    engine = StreamEngine(load_default_model())
    engine.process(["noisy", "calm"], np.ones((2, 1), np.float32))
    assert engine.set_threshold("noisy", 0.8)

    def level(stream: str) -> float:
        return float(engine.state_of(stream)[SCORING_SLAB][A_THRESHOLD])

    assert engine.reset("noisy") and engine.reset("calm")
    assert (level("noisy"), level("calm")) == (0.8, 0.0)
    assert not np.delete(engine.state_of("noisy")[SCORING_SLAB], A_THRESHOLD).any()
    engine.snapshot(tmp_path / "state.npz")
    restored = StreamEngine.restore(tmp_path / "state.npz", load_default_model())
    assert float(restored.state_of("noisy")[SCORING_SLAB][A_THRESHOLD]) == 0.8
    assert engine.drop("noisy")
    engine.process(["noisy"], np.ones((1, 1), np.float32))
    assert level("noisy") == 0.0
