"""How fast this machine is from moment to moment: memory, the interpreter, in-cache arithmetic.

    python bench/machine_speed.py                  # a sample every 4 s for 2 min
    python bench/machine_speed.py --seconds 600 --every 10

Each sample times, on one thread (medians of a few repetitions):
- random reads: 200,000 float32 reads at random places of a 16 MB array (about the daemon's
  state slabs, id index and socket buffers for 10,000 streams): the shared cache and memory;
- interpreter: a 20,000-iteration Python loop: the core's own speed;
- sgemm: the daemon's gate product for 1024 rows of an LSTM H=64 (1024 x 73 x 256), whose data
  fits the core's caches: the control, which moves only when the core itself slows.

Run it on an otherwise idle machine. On a VM that shares its host, memory and interpreter can
swing while the sgemm holds still: the host's other guests share caches, memory and cores in
ways no count inside the guest (steal, stalls) sees. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import numpy as np  # noqa: E402

READS = 200_000
LOOP = 20_000


def _median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def _loop() -> int:
    total = 0
    for i in range(LOOP):
        total += i * i
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to sample")
    parser.add_argument("--every", type=float, default=4.0, help="seconds between samples")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    slab = rng.random(4 * 1024 * 1024, dtype=np.float32)  # 16 MB
    places = rng.integers(0, slab.size, READS)
    z = rng.random((1024, 73), dtype=np.float32)
    w = rng.random((73, 256), dtype=np.float32)
    gates = np.empty((1024, 256), np.float32)
    samples = []
    print("time      random read ns  interpreter ns/iteration  sgemm us")
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        read_ns = _median_seconds(lambda: slab[places].sum(), 15) / READS * 1e9
        loop_ns = _median_seconds(_loop, 15) / LOOP * 1e9
        sgemm_us = _median_seconds(lambda: np.matmul(z, w, out=gates), 50) * 1e6
        samples.append((read_ns, loop_ns, sgemm_us))
        print(f"{time.strftime('%H:%M:%S')}  {read_ns:14.1f}  {loop_ns:24.1f}  {sgemm_us:8.0f}")
        time.sleep(args.every)
    columns = np.array(samples)
    names = ("random read ns", "interpreter ns", "sgemm us")
    for name, values in zip(names, columns.T, strict=True):
        low, mid, high = np.percentile(values, [0, 50, 100])
        print(f"{name}: min {low:.1f}, median {mid:.1f}, max {high:.1f} ({high / low:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
