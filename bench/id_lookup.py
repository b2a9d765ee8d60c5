"""A pass's stream-id lookups: `IdIndex.find` on the decoder's id bytes against the strings' dict.

    python bench/id_lookup.py
    python bench/id_lookup.py --rows 128

10,000 streams; each call looks up `--rows` distinct ids (in a shuffled order), as one engine
call of a daemon pass does. "warm": calls back to back; "flushed": 16 MB written between calls
(untimed), as a daemon's engine step and the other processes run through the caches between
two passes. The dict path is what `StreamEngine` does without ids: split the decoded bytes
into strings, then `operator.itemgetter` on `slot_of`. Medians of nanoseconds an id over
interleaved rounds. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.state import IdIndex  # noqa: E402

STREAMS = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = [f"sensor-{i:05d}" for i in range(STREAMS)]
    index = IdIndex(STREAMS)
    for slot, name in enumerate(names):
        index.add(name.encode(), slot)
    slot_of = {name: slot for slot, name in enumerate(names)}
    rng = np.random.default_rng(0)
    calls = []
    for _ in range(10):
        picked = [names[i] for i in rng.permutation(STREAMS)[: args.rows]]
        ids = np.frombuffer(bytearray(("\0".join(picked) + "\0").encode()), np.uint8)
        calls.append(ids)
    assert all(index.find(ids, args.rows) is not None for ids in calls)

    def by_index(ids: np.ndarray) -> None:
        index.find(ids, args.rows)

    def by_strings(ids: np.ndarray) -> None:
        operator.itemgetter(*ids[:-1].tobytes().decode().split("\0"))(slot_of)

    flush = np.ones(4 << 20, np.float32)
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for caches in ("warm", "flushed"):
            for label, lookup in (("IdIndex.find", by_index), ("split + dict", by_strings)):
                spent = 0.0
                for ids in calls:
                    if caches == "flushed":
                        flush += 1
                    began = time.perf_counter()
                    lookup(ids)
                    spent += time.perf_counter() - began
                ns = spent / (len(calls) * args.rows) * 1e9
                results.setdefault((caches, label), []).append(ns)
    for (caches, label), ns in results.items():
        print(f"{caches:8s} {label:13s} {np.median(ns):6.0f} ns an id ({args.rows} ids a call)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
