"""How many BLAS threads the daemon's matrix products get: several for big batches, one for small.

Waking a sleeping OpenBLAS thread costs 50-100 us on a small VM, more than a 256-row batch's
whole product (~100 us on one core), while a 1024-row product drops from ~395 to ~250 us on two
threads (measured on the 2-core machine of bench/README.md). So products of `min_rows` rows or
more get `threads` threads and smaller ones one. The worker threads must go to sleep as soon as
a product ends, or they spin for ~0.1 s and take the core from producers and subscribers: the
CLI sets OPENBLAS_THREAD_TIMEOUT for `serve` before numpy loads OpenBLAS (engine/cli.py).
"""

from __future__ import annotations

from threadpoolctl import ThreadpoolController

BIG_BATCH_ROWS = 512


class BlasThreads:
    """Set the BLAS pools' thread count for the next matrix products, by batch size."""

    def __init__(self, threads: int, min_rows: int = BIG_BATCH_ROWS) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self.min_rows = min_rows
        self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        self._current = 0  # unknown until the first call sets it

    def use_for(self, rows: int) -> None:
        """Set the thread count for a batch of `rows` rows (~1 us when it changes)."""
        wanted = self.threads if rows >= self.min_rows else 1
        if wanted != self._current:
            for library in self._libraries:
                library.set_num_threads(wanted)
            self._current = wanted
