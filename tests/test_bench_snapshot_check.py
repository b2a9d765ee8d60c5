"""The soak's check of periodic snapshots passes a whole one and fails a damaged one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.bench.snapshot_check import (
    Evidence,
    SteadyProgress,
    TableCount,
    Verdict,
    check_snapshot,
    corrupt_file,
    stream_count_bounds,
)
from engine.default_model import load_default_model
from engine.model import Model
from engine.stream import StreamEngine, read_snapshot

STEADY = ["k0", "k1", "k2"]
OTHERS = [f"s{i}" for i in range(7)]
ROUNDS = 12


@pytest.fixture(scope="module")
def model() -> Model:
    return load_default_model()


@pytest.fixture(scope="module")
def engine(model: Model) -> StreamEngine:
    """Steady streams fed ROUNDS readings with seqs 1..ROUNDS, and others fed once."""
    engine = StreamEngine(model)
    rng = np.random.default_rng(0)
    for r in range(1, ROUNDS + 1):
        values = rng.normal(0.0, 1.0, (len(STEADY), 1)).astype(np.float32)
        engine.process(STEADY, values, seq=[r] * len(STEADY))
    engine.process(OTHERS, rng.normal(0.0, 1.0, (len(OTHERS), 1)).astype(np.float32))
    return engine


def _snapshot(engine: StreamEngine, folder: Path) -> tuple[Path, float]:
    path = folder / "state.npz"
    engine.snapshot(path)
    header, _ = read_snapshot(path)
    return path, header["created"]


def _evidence(created: float, received: int, announced: int, streams: int) -> Evidence:
    """Records as the soak would keep them: one a second before the copy, one after."""
    progress = [SteadyProgress(created - 1.0, np.full(len(STEADY), received, np.int64))]
    counts = [
        TableCount(created - 1.1, created - 1.0, streams, 0),
        TableCount(created + 1.0, created + 1.1, streams, 0),
    ]
    return Evidence(announced, progress, counts)


def _check(path: Path, model: Model, evidence: Evidence, fingerprint: str = "") -> Verdict:
    return check_snapshot(
        path,
        model,
        {"max_streams": 100},
        STEADY,
        evidence,
        expected_fingerprint=fingerprint or model.fingerprint,
        taken_at=evidence.counts[-1].asked,
    )


def test_a_whole_snapshot_passes_with_tight_bounds(engine, model, tmp_path):
    path, created = _snapshot(engine, tmp_path)
    verdict = _check(path, model, _evidence(created, ROUNDS, ROUNDS, len(engine)))
    assert verdict.passed, verdict.problems
    assert verdict.streams == len(engine)
    assert verdict.steady_present == len(STEADY)
    assert verdict.above_received == (0, 0) and verdict.below_sent == (0, 0)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("bytes", "does not load"),
        ("behind", "3 steady streams behind the seq predicted before the copy"),
        ("ahead", "3 steady streams ahead of the rounds sent"),
        ("half", "outside"),
    ],
)
def test_a_damaged_snapshot_fails(engine, model, tmp_path, how, expected):
    path, created = _snapshot(engine, tmp_path)
    corrupt_file(path, how)
    verdict = _check(path, model, _evidence(created, ROUNDS, ROUNDS, len(engine)))
    assert not verdict.passed
    assert any(expected in problem for problem in verdict.problems), verdict.problems


def test_a_snapshot_of_another_model_fails(engine, model, tmp_path):
    path, created = _snapshot(engine, tmp_path)
    verdict = _check(path, model, _evidence(created, ROUNDS, ROUNDS, len(engine)), "f" * 64)
    assert any("fingerprint" in problem for problem in verdict.problems)


def test_a_steady_stream_missing_after_its_prediction_fails(model, tmp_path):
    engine = StreamEngine(model)
    engine.process(STEADY[:2], np.zeros((2, 1), np.float32), seq=[1, 1])
    path, created = _snapshot(engine, tmp_path)
    verdict = _check(path, model, _evidence(created, 1, 1, len(engine)))
    assert verdict.problems == [
        "1 steady streams missing, predicted before the copy (e.g. k2 seq 1)"
    ]


def test_stream_count_bounds_allow_the_evictions_between_the_counts():
    counts = [
        TableCount(0.0, 1.0, 500, 10),  # answered before the copy at 5.0
        TableCount(2.0, 4.0, 520, 12),  # latest answered before it
        TableCount(4.5, 6.0, 9999, 0),  # asked before it, answered after: neither side
        TableCount(7.0, 8.0, 480, 42),
    ]
    assert stream_count_bounds(counts, 5.0) == (520 - 30, 480 + 30)
    assert stream_count_bounds(counts[:2], 5.0) == (0, None)
