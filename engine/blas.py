"""How many BLAS threads a matrix product gets: several for big products, one for small ones.

Waking a sleeping OpenBLAS thread costs 50-100 us on a small VM, more than a 256-row batch's
whole gate product (~100 us on one core), while a 1024-row one drops from ~395 to ~250 us on two
threads (measured on the 2-core machine of bench/README.md). A head's product is thin (n x 8
outputs): split over two threads it paid the wake-up and gained nothing. So products of at least
`min_outputs` output elements (512 rows of an LSTM H=64's 256 gate columns) get `threads`
threads and smaller ones one. The worker threads must go to sleep as soon as a product ends,
or they spin for ~0.1 s and take the core from producers and subscribers: the CLI sets
OPENBLAS_THREAD_TIMEOUT for `serve` before numpy loads OpenBLAS (engine/cli.py).
"""

from __future__ import annotations

from threadpoolctl import ThreadpoolController

BIG_PRODUCT = 512 * 256  # output elements


class BlasThreads:
    """Set the BLAS pools' thread count for the next matrix product, by its size."""

    def __init__(self, threads: int, min_outputs: int = BIG_PRODUCT) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self.min_outputs = min_outputs
        self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        self._current = 0  # unknown until the first call sets it

    def use_for(self, outputs: int) -> None:
        """Set the thread count for a product of `outputs` elements (~1 us when it changes)."""
        wanted = self.threads if outputs >= self.min_outputs else 1
        if wanted != self._current:
            for library in self._libraries:
                library.set_num_threads(wanted)
            self._current = wanted
