"""The core benchmark's scoring measurement times streams in the state a running daemon sees."""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.bench.steps import engines_past_probation
from engine.default_model import load_default_model


def test_scoring_is_timed_on_streams_past_their_probation() -> None:
    scored = load_default_model()
    plain = dataclasses.replace(scored, metadata={})
    ids = ["a", "b", "c"]
    engines = engines_past_probation(plain, scored, ids, np.random.default_rng(0))
    assert [len(engine) for engine in engines] == [3, 3]
    # A never-seen level scores 1 only once a stream's probation is over (0 before it).
    wild = engines[1].process(ids, np.full((3, 1), 1e6, np.float32))
    assert wild.scores.tolist() == [1.0, 1.0, 1.0]
