"""Programs that read `rnnstream serve`'s publications, over the shared `Subscriber` client."""

from __future__ import annotations

from consumers.client import Subscriber

__all__ = ["Subscriber"]
