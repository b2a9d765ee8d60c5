"""What the jitted wire paths save: time them against the Python decoder and packer.

    python bench/wire.py

For the daemon's per-pass work on the wire (`engine.protocol`): decoding a pass of single-
reading frames (1, 40, 200) and of four 1024-row batch frames, packing each prediction of a
pass, and packing a 4096-row batch publication. Each line gives the median microseconds per
call of the path the daemon takes (jitted) and of the Python path the same input takes when
the jitted one turns it down, over interleaved repetitions. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from engine import protocol as P

N_INPUTS = 8
N_OUTPUTS = 8


def single_frames(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [
        P.encode_reading(f"sensor-{i:05d}", rng.standard_normal(N_INPUTS).tolist(), seq=i + 1,
                         ts=1.7e9 + i)
        for i in range(n)
    ]  # fmt: skip


def batch_frames(frames: int, rows: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, N_INPUTS)).astype(np.float32)
    return [
        P.encode_batch([f"sensor-{k * rows + i:05d}" for i in range(rows)], X,
                       seq=list(range(1, rows + 1)), ts=1.7e9 + k)
        for k in range(frames)
    ]  # fmt: skip


def median_us(fn: Callable[[], object], calls: int) -> float:
    times = np.empty(calls)
    for i in range(calls):
        began = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - began
    return float(np.median(times)) * 1e6


def compare(label: str, jitted: Callable[[], object], python: Callable[[], object], calls: int,
            rounds: int) -> None:  # fmt: skip
    jitted()
    python()
    a, b = [], []
    for _ in range(rounds):  # interleaved, so a slow phase of the machine hits both
        a.append(median_us(jitted, calls))
        b.append(median_us(python, calls))
    ja, pb = float(np.median(a)), float(np.median(b))
    print(f"{label:44s} jitted {ja:8.1f} us   python {pb:8.1f} us   {pb / ja:4.1f}x")


def compare_packing(n: int, rng: np.random.Generator, calls: int, rounds: int) -> None:
    readings, _ = P.decode_ingest_many(single_frames(n), N_INPUTS)
    outputs = rng.standard_normal((n, N_OUTPUTS)).astype(np.float32)
    seq, ts = readings.seq, readings.ts
    seq_list, ts_list = seq.tolist(), ts.tolist()  # lists, not Readings columns: the Python packer
    compare(
        f"pack {n} prediction messages",
        lambda: list(P.prediction_messages(readings.streams, seq, ts, outputs, None)),
        lambda: list(P.prediction_messages(readings.streams, seq_list, ts_list, outputs, None)),
        calls,
        rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    limit = P.DEFAULT_MAX_FRAME_BYTES
    for n in (1, 40, 200):
        frames = single_frames(n)
        compare(
            f"decode {n} single-reading frames",
            lambda f=frames: P.decode_ingest_many(f, N_INPUTS),
            lambda f=frames: P._decode_many(f, N_INPUTS, limit, quick=len(f) >= 4),
            args.calls,
            args.rounds,
        )
    frames = batch_frames(4, 1024)
    compare(
        "decode 4 batch frames of 1024 rows",
        lambda: P.decode_ingest_many(frames, N_INPUTS),
        lambda: P._decode_many(frames, N_INPUTS, limit, quick=True),
        args.calls // 10,
        args.rounds,
    )
    rng = np.random.default_rng(1)
    for n in (40, 200):
        compare_packing(n, rng, args.calls, args.rounds)
    readings, _ = P.decode_ingest_many(frames, N_INPUTS)
    outputs = rng.standard_normal((len(readings), N_OUTPUTS)).astype(np.float32)
    seq_list, ts_list = readings.seq.tolist(), readings.ts.tolist()
    compare(
        "pack a batch publication of 4096 rows",
        lambda: P.encode_prediction_batch(readings.streams, readings.seq, readings.ts, outputs,
                                          None),
        lambda: P.encode_prediction_batch(readings.streams, seq_list, ts_list, outputs, None),
        args.calls // 10,
        args.rounds,
    )  # fmt: skip


if __name__ == "__main__":
    main()
