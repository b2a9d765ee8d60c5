"""How long a periodic snapshot holds the daemon's loop up: the copy, and the writer's GIL.

    python bench/snapshot_pause.py
    python bench/snapshot_pause.py --streams 300000 --rounds 9

An engine of the headline model (LSTM, 1 layer, 8 inputs, hidden 64, no head) gets `--streams`
streams, admitted in batches of 4,096 and then each stepped once more in a shuffled order, with
a tenth of them dropped and as many new ones admitted, so slots and admission order differ. Per
round: "copy" is `StreamEngine.snapshot_copy()` into new memory, "copy, memory ready" the same
into memory faulted in beforehand (`state.faulted_in`, untimed), which is what the daemon runs
on its loop (it faults the memory in on a thread first); "writer gap" is the longest the main
thread waited while `write_snapshot` ran on a thread (the main thread sleeps 0.2 ms at a time
and notes the gaps between wake-ups, so a writer that holds the GIL shows as a gap; on a busy
machine the scheduler adds its own). Medians (and maxima) over `--rounds` rounds, in
milliseconds. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.model import Model  # noqa: E402
from engine.state import faulted_in  # noqa: E402
from engine.stream import StreamEngine, write_snapshot  # noqa: E402

BATCH = 4096


def build(streams: int, seed: int = 0) -> StreamEngine:
    """An engine with `streams` live streams of the headline model, slots out of order."""
    model = Model.random("lstm", 8, 64, seed=seed)
    engine = StreamEngine(model)
    rng = np.random.default_rng(seed)
    names = [f"sensor-{i:07d}" for i in range(streams)]

    def step(ids: list[str]) -> None:
        for start in range(0, len(ids), BATCH):
            part = ids[start : start + BATCH]
            engine.step_many(part, rng.normal(size=(len(part), 8)).astype(np.float32))

    step(names)
    for i in rng.permutation(streams)[: streams // 10].tolist():
        engine.drop(names[i])
    step([f"late-{i:07d}" for i in range(streams // 10)])
    live = engine.streams()
    step([live[i] for i in rng.permutation(len(live)).tolist()])
    return engine


def writer_gap(engine: StreamEngine, path: Path) -> float:
    """Copy, then write on a thread; return the longest wait of this thread meanwhile (s)."""
    copy = engine.snapshot_copy()
    done = threading.Event()

    def write() -> None:
        write_snapshot(path, copy)
        done.set()

    writer = threading.Thread(target=write)
    longest, last = 0.0, time.perf_counter()
    writer.start()
    while not done.is_set():
        time.sleep(0.0002)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    writer.join()
    return longest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(
        "| streams | capacity | copy median | copy max | copy, memory ready median | max "
        "| writer gap median | max |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.npz"
        for streams in args.streams:
            engine = build(streams)
            copies, ready, gaps = [], [], []
            for _ in range(args.rounds):
                began = time.perf_counter()
                copy = engine.snapshot_copy()
                copies.append(time.perf_counter() - began)
                del copy
                memory = faulted_in(engine.snapshot_memory())
                began = time.perf_counter()
                copy = engine.snapshot_copy(memory)
                ready.append(time.perf_counter() - began)
                del copy, memory
                gaps.append(writer_gap(engine, path))
            ms = [f(times) for times in (copies, ready, gaps) for f in (np.median, max)]
            cells = " | ".join(f"{1e3 * v:.1f}" for v in ms)
            print(f"| {len(engine):,} | {engine.stats()['capacity']:,} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
