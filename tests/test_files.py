"""Atomic .npz writes: models for everyone to read, snapshots for the daemon's user only."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from engine.files import write_npz_atomically
from engine.model import Model
from engine.stream import StreamEngine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_models_are_readable_by_all_and_snapshots_by_their_owner_only(tmp_path: Path) -> None:
    model = Model.random("gru", 2, 3, seed=0)
    model.save(tmp_path / "m.npz")
    engine = StreamEngine(model)
    engine.step("a", np.ones(2, np.float32))
    engine.snapshot(tmp_path / "state" / "s.npz")  # makes its folder
    assert mode(tmp_path / "m.npz") == 0o644
    assert mode(tmp_path / "state" / "s.npz") == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m.npz", "s.npz", "state"]


class Unsaveable:
    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise RuntimeError("disk full, say")


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    write_npz_atomically(path, {"a": np.arange(3)}, mode=0o600)
    with pytest.raises(RuntimeError, match="disk full"):
        write_npz_atomically(path, {"a": Unsaveable()}, mode=0o600)  # type: ignore[dict-item]
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]
    with np.load(path) as f:
        assert f["a"].tolist() == [0, 1, 2]
