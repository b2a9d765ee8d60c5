"""Programs that send readings to `rnnstream serve`, over the shared `Producer` client."""

from __future__ import annotations

from typing import Any

__all__ = ["Producer"]


def __getattr__(name: str) -> Any:
    # Lazy, so `producers.synthetic` (used offline for training data) does not import pyzmq.
    if name == "Producer":
        from producers.client import Producer

        return Producer
    raise AttributeError(f"module 'producers' has no attribute {name!r}")
