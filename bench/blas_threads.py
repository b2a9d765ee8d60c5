"""Where do two BLAS threads start to pay? Time the engine's gate product by batch size.

    OPENBLAS_NUM_THREADS=1 python bench/blas_threads.py
    OPENBLAS_NUM_THREADS=2 OPENBLAS_THREAD_TIMEOUT=4 python bench/blas_threads.py

Times `(rows, 73) @ (73, 256)` in float32 (an LSTM H=64 with 8 inputs: one step's gate product),
with a pause between calls as a daemon has between passes, so a second thread has gone to sleep
and must be woken. Prints the median and mean microseconds per product for each batch size. The
daemon's `--blas-threads` applies to products of at least `engine.blas.BIG_PRODUCT` elements.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info


def time_product(rows: int, calls: int, pause_s: float) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, 73)).astype(np.float32)
    b = rng.standard_normal((73, 256)).astype(np.float32)
    out = np.empty((rows, 256), np.float32)
    for _ in range(20):
        np.matmul(a, b, out=out)
    times = np.empty(calls)
    for i in range(calls):
        began = time.perf_counter()
        np.matmul(a, b, out=out)
        times[i] = time.perf_counter() - began
        time.sleep(pause_s)
    return float(np.median(times)) * 1e6, float(times.mean()) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="16,64,128,256,512,1024,4096")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--pause-us", type=float, default=200.0, help="between calls")
    args = parser.parse_args()
    pools = [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()]
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")
    print(f"BLAS threads: {', '.join(pools)}; OPENBLAS_THREAD_TIMEOUT {timeout}")
    print("| rows | median us | mean us |")
    print("|---:|---:|---:|")
    for rows in (int(r) for r in args.rows.split(",")):
        median, mean = time_product(rows, args.calls, args.pause_us * 1e-6)
        print(f"| {rows} | {median:.0f} | {mean:.0f} |")


if __name__ == "__main__":
    main()
