"""rnnstream engine: Numba-compiled recurrent cells stepping one hidden state per stream."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Model", "StreamEngine", "__version__"]


def __getattr__(name: str):
    # Imported lazily so `rnnstream --help` and the wire-format module do not pay for Numba.
    if name == "Model":
        from engine.model import Model

        return Model
    if name == "StreamEngine":
        from engine.stream import StreamEngine

        return StreamEngine
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
