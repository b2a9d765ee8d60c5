"""Structured logging on stderr: plain `time level message key=value` lines or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "rnnstream"


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        if self.as_json:
            return json.dumps(
                {
                    "ts": stamp,
                    "level": record.levelname.lower(),
                    "msg": record.getMessage(),
                    **fields,
                },
                default=str,
            )
        extra = " ".join(f"{k}={one_line(v)}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        return f"{line} {extra}" if extra else line


def one_line(value: Any) -> str:
    """Return `value` as text with its non-printable characters escaped (as repr does), for a
    line that shows what clients sent, such as stream ids: a newline in one forged a line of
    its own, an escape sequence reached the reader's terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def setup_logging(fmt: str = "plain", level: str = "info") -> logging.Logger:
    """Configure and return the rnnstream logger writing to stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured key=value fields."""
    logger.log(level, message, extra={"fields": fields})


class RateLimitedLog:
    """Log at most one line per key per `interval` seconds, reporting how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        self._next[key] = now + self.interval
        log(self.logger, logging.WARNING, message, **fields)
