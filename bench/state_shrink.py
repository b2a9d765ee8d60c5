"""What shrinking the state table costs and gives back, after a burst of streams goes idle.

    python bench/state_shrink.py
    python bench/state_shrink.py --model builtin --streams 500000 --keep 1000

An engine (`--model lstm64`: LSTM, 1 layer, 8 inputs, hidden 64; or `builtin`, the default
model) gets `--streams` streams in batches of 4,096, then `--keep` of them (each count given)
get one more reading 60 s later on the engine's clock; 60 s after that an idle sweep with a
90 s timeout evicts the others. Per count, in a fresh process: the sweep's time with the
shrink it sets off, the shrink alone (`StateTable.shrink` after the same streams were freed
without it), the capacity before and after, and the process's resident memory (VmRSS) before
the sweep and after it, beside that of a process whose engine only ever had the kept streams
(what a restart gives). Medians over `--rounds` processes. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 4096


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def one_run(model_name: str, streams: int, keep: int, mode: str) -> dict[str, float]:
    """Build, go idle, sweep; return the measures (run in a process of its own). mode:
    "sweep", "alone" (the shrink alone) or "fresh" (only the kept streams, ever)."""
    from engine.default_model import load_default_model
    from engine.model import Model
    from engine.stream import StreamEngine

    model = load_default_model() if model_name == "builtin" else Model.random("lstm", 8, 64)
    now = [1000.0]
    engine = StreamEngine(model, idle_timeout=90.0, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    names = [f"sensor-{i:07d}" for i in range(streams)]
    if mode == "fresh":
        names = names[:: max(1, streams // keep)][:keep]
    for start in range(0, streams, BATCH):
        part = names[start : start + BATCH]
        X = rng.normal(size=(len(part), model.input_size)).astype(np.float32)
        engine.process(part, X)
    now[0] += 60.0
    kept = names if mode == "fresh" else names[:: max(1, streams // keep)][:keep]
    for start in range(0, len(kept), BATCH):
        part = kept[start : start + BATCH]
        engine.process(part, rng.normal(size=(len(part), model.input_size)).astype(np.float32))
    now[0] += 60.0
    del names, part  # the engine's keys only, as in a daemon
    table = engine._table
    capacity = table.capacity
    before = rss_mb()
    if mode == "alone":
        idle = np.flatnonzero(table.last_used < now[0] - table.idle_timeout)
        table._release_slots(idle)
        began = time.perf_counter()
        table.shrink()
        seconds = time.perf_counter() - began
    else:
        began = time.perf_counter()
        engine.evict_idle()
        seconds = time.perf_counter() - began
    assert len(engine) == keep
    return {
        "seconds": seconds,
        "capacity_before": capacity,
        "capacity_after": table.capacity,
        "rss_before": before,
        "rss_after": rss_mb(),
    }


def median(runs: list[dict[str, float]], key: str) -> float:
    return float(np.median([run[key] for run in runs]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("lstm64", "builtin"), default="lstm64")
    parser.add_argument("--streams", type=int, default=300_000)
    parser.add_argument("--keep", type=int, nargs="+", default=[1_000, 30_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.model, args.streams, int(args.child[0]), args.child[1])))
        return 0
    print(
        f"{args.model}, {args.streams:,} streams: medians of {args.rounds} processes\n\n"
        "| kept | capacity | sweep + shrink ms | shrink alone ms | RSS before MB | after MB "
        "| only the kept, ever MB |\n|---:|---:|---:|---:|---:|---:|---:|"
    )
    for keep in args.keep:
        runs: dict[str, list[dict[str, float]]] = {"sweep": [], "alone": [], "fresh": []}
        for _ in range(args.rounds):
            for mode in runs:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--model",
                        args.model,
                        "--streams",
                        str(args.streams),
                        "--child",
                        str(keep),
                        mode,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[mode].append(json.loads(out))

        sweep, alone = runs["sweep"], runs["alone"]
        cells = [
            f"{keep:,}",
            f"{sweep[0]['capacity_before']:,.0f} -> {sweep[0]['capacity_after']:,.0f}",
            f"{1e3 * median(sweep, 'seconds'):.1f}",
            f"{1e3 * median(alone, 'seconds'):.1f}",
            f"{median(sweep, 'rss_before'):.0f}",
            f"{median(sweep, 'rss_after'):.0f}",
            f"{median(runs['fresh'], 'rss_after'):.0f}",
        ]
        print(f"| {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
