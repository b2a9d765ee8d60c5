"""Per-stream sequence numbers: the kernel against a plain reference, and through the engine."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kernels.sequence import NO_SEQ, check_sequence
from engine.model import Model
from engine.stream import StreamEngine


def reference_check(
    streams: list[str], seqs: list[int], last: dict[str, int]
) -> tuple[list[bool], int, int]:
    """The rules of docs/PROTOCOL.md "Sequence numbers", row by row; updates `last`."""
    keep, duplicates, gaps = [], 0, 0
    for stream, seq in zip(streams, seqs, strict=True):
        if seq == NO_SEQ:
            keep.append(True)
            continue
        prev = last.get(stream)
        if prev is None or seq == 1:  # new, or a restarted producer
            last[stream] = seq
            keep.append(True)
            continue
        if seq <= prev:
            keep.append(False)
            duplicates += 1
            continue
        if seq != prev + 1:
            gaps += 1
        last[stream] = seq
        keep.append(True)
    return keep, duplicates, gaps


def test_kernel_matches_the_reference_over_random_batches():
    rng = np.random.default_rng(7)
    slab = np.zeros(8, np.int64)
    last: dict[str, int] = {}
    for _ in range(300):
        n = int(rng.integers(1, 12))
        slots = rng.integers(0, 8, n)
        # mostly in order, with repeats, jumps back and forth, restarts at 1 and no seq
        seqs = rng.choice([NO_SEQ, 1, 2, 3, 4, 5, 6, 7, 8, 40, 2**62], n)
        keep = np.empty(n, np.bool_)
        duplicates, gaps = check_sequence(slots, seqs, slab, keep)
        want = reference_check([str(s) for s in slots.tolist()], seqs.tolist(), last)
        assert (keep.tolist(), duplicates, gaps) == want
        assert {str(s): int(v) - 1 for s, v in enumerate(slab) if v} == last


def engine(**options) -> StreamEngine:
    return StreamEngine(Model.random("lstm", 2, 8, output_size=2, seed=3), **options)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


def test_duplicates_are_not_stepped_and_the_rest_step_as_without_them():
    X = rows(6)
    streams = ["a", "b", "a", "a", "b", "c"]
    seqs = [1, 3, 2, 2, 2, NO_SEQ]  # row 3 repeats a's 2; row 4 goes back on b's 3
    with_seq = engine()
    got = with_seq.process(streams, X, seq=seqs)
    assert got.kept.tolist() == [0, 1, 2, 5] and got.gaps == 0
    plain = engine()
    want = plain.step_many([streams[i] for i in (0, 1, 2, 5)], X[[0, 1, 2, 5]])
    np.testing.assert_array_equal(got.outputs, want)
    np.testing.assert_array_equal(with_seq.state_of("a")["h"], plain.state_of("a")["h"])


def test_a_batch_with_nothing_dropped_has_no_kept_and_counts_gaps():
    e = engine()
    result = e.process(["a", "b", "a"], rows(3), seq=[4, 1, 9])
    assert result.kept is None and result.gaps == 1 and result.outputs.shape == (3, 2)
    assert e.process(["a"], rows(1), seq=[9]).kept.tolist() == []


@pytest.mark.parametrize("forget", ["reset", "drop"])
def test_reset_and_drop_forget_the_last_seq(forget):
    e = engine()
    e.process(["a"], rows(1), seq=[7])
    getattr(e, forget)("a")
    assert e.process(["a"], rows(1), seq=[3]).kept is None


def test_the_last_seq_survives_a_snapshot_and_a_reload(tmp_path):
    e = engine()
    e.process(["a", "b"], rows(2), seq=[5, 6])
    e.snapshot(tmp_path / "s.npz")
    back = StreamEngine.restore(tmp_path / "s.npz", e.model)
    assert back.process(["a", "b"], rows(2), seq=[5, 7]).kept.tolist() == [1]
    back.swap_model(Model.random("lstm", 2, 8, output_size=2, seed=4))  # same shapes: states kept
    assert back.process(["b"], rows(1), seq=[7]).kept.tolist() == []


def test_a_snapshot_without_seqs_restores_with_none_seen(tmp_path):
    e = engine()
    e.process(["a"], rows(1), seq=[5])
    e.snapshot(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "slab_seq"}
    np.savez(tmp_path / "old.npz", **arrays)
    back = StreamEngine.restore(tmp_path / "old.npz", e.model)
    np.testing.assert_array_equal(back.state_of("a")["h"], e.state_of("a")["h"])
    assert back.process(["a"], rows(1), seq=[5]).kept is None


def test_seq_1_starts_afresh_even_after_a_streams_only_reading():
    # A program that sends one reading a run (a cron job) sends nothing but seq 1: taken for a
    # re-sent first reading, every run's reading but the first was dropped as a duplicate.
    e = StreamEngine(Model.random("gru", 1, 4, seed=0))
    runs = [e.process(["pump-8"], np.full((1, 1), v, np.float32), seq=[1]) for v in (1.0, 2.0)]
    assert [r.kept for r in runs] == [None, None]  # nothing dropped
