"""The forecaster shipped with rnnstream: trained on synthetic sensor data, never on NAB.

It reads one per-stream online-normalised value (`engine.anomaly.normalise_batch`) and forecasts
the next one; `scripts/train_default_model.py` rebuilds it and its metadata says how.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from engine.model import Model


def default_model_path() -> Path:
    """Return the path of the bundled default model file."""
    return Path(__file__).resolve().parent / "data" / "default_model.npz"


@lru_cache(maxsize=1)
def load_default_model() -> Model:
    """Load (once per process) and return the bundled default model; models are immutable."""
    return Model.load(default_model_path())
