"""Daemon settings: defaults < TOML file < environment (RNNSTREAM_*) < command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "rnnstream")


def _default_blas_threads() -> int:
    # Two threads pay for big batches; on a machine (or cpuset) with one core they would only
    # take turns.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, cores or 1)


@dataclass(frozen=True)
class ServeConfig:
    """Everything `rnnstream serve` can be told; see `rnnstream serve --help` for each default."""

    model: str | None = None
    ingest: str = "tcp://127.0.0.1:5555"
    publish: str = "tcp://127.0.0.1:5556"
    control: str = "tcp://127.0.0.1:5557"
    state_dir: str = dataclasses.field(default_factory=_default_state_dir)
    checkpoint_every: float = 60.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    publish_mode: str = "each"
    max_batch: int = 1024
    max_wait_us: int = 0
    blas_threads: int = dataclasses.field(default_factory=_default_blas_threads)
    max_streams: int = 0
    idle_timeout: float = 0.0
    ingest_hwm: int = 100_000
    publish_hwm: int = 100_000
    max_message_bytes: int = 16 * 1024 * 1024
    log_format: str = "plain"
    log_level: str = "info"
    curve_secret_key: str | None = None
    curve_clients: str | None = None
    alert_threshold: float = 0.3
    alert_close: float = 0.2
    alert_min_duration: int = 1
    alert_cooldown: int = 30
    alert_warmup: int = 0
    alert_error_gate: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            # NaN compares false with everything, so it would pass the `< 0` checks below and
            # turn a feature off unnoticed; inf means nothing either (0 is "off" where needed).
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        choices = {
            "publish_mode": ("each", "batch", "both"),
            "log_format": ("plain", "json"),
            "log_level": ("debug", "info", "warning", "error"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        for name in ("max_batch", "max_message_bytes", "ingest_hwm", "publish_hwm", "blas_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("checkpoint_every", "idle_timeout", "max_streams", "max_wait_us"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 turns it off)")
        self._check_endpoints_differ()
        if self.metrics_port < 0 or self.metrics_port > 65535:
            raise ValueError("metrics_port must be 0 (off) or a TCP port")
        if (self.curve_secret_key is None) != (self.curve_clients is None):
            raise ValueError("curve_secret_key and curve_clients must be given together")
        if not 0 < self.alert_close <= self.alert_threshold <= 1:
            raise ValueError("need 0 < alert_close <= alert_threshold <= 1")
        if self.alert_error_gate < 0:
            raise ValueError("alert_error_gate must not be negative (0 turns it off)")
        if self.alert_min_duration < 1 or self.alert_cooldown < 0 or self.alert_warmup < 0:
            raise ValueError(
                "alert_min_duration must be >= 1, alert_cooldown and alert_warmup >= 0"
            )

    def _check_endpoints_differ(self) -> None:
        # Two sockets on one endpoint fail at bind as "address in use", which reads like
        # another daemon holding it; the mistake is in these settings, so say so here.
        named = (("ingest", self.ingest), ("publish", self.publish), ("control", self.control))
        for i, (first, endpoint) in enumerate(named):
            for second, other in named[i + 1 :]:
                if endpoint == other:
                    raise ValueError(
                        f"{first} and {second} are both {endpoint}: give each socket its own "
                        "endpoint"
                    )


_HELP = {
    "model": "model file (.npz); default: the model built into the package",
    "ingest": "ZeroMQ endpoint of the PULL socket producers send readings to",
    "publish": "ZeroMQ endpoint of the PUB socket predictions, alerts and errors go out on",
    "control": "ZeroMQ endpoint of the REP control socket (rnnstream ctl)",
    "state_dir": "directory for state snapshots (restored at start)",
    "checkpoint_every": "seconds between periodic snapshots (0: only at shutdown)",
    "metrics_port": "serve Prometheus metrics over HTTP on this port (0: off)",
    "metrics_host": "address the metrics HTTP server binds to",
    "publish_mode": "each: one pred.<stream> message per reading; batch: one columnar "
    "batch.pred message per processed batch; both",
    "max_batch": "most intake messages drained into one engine call",
    "max_wait_us": "under load, microseconds to wait for more messages before stepping (0: step "
    "what is queued at once; a wait saves CPU at moderate load and adds to every latency)",
    "blas_threads": "BLAS threads for big matrix products (an LSTM H=64's gates from 512 readings "
    "on); smaller ones use one, as waking a thread costs more than it saves",
    "max_streams": "evict the least recently used streams beyond this many, a 64th of it at a "
    "time (0: no limit)",
    "idle_timeout": "evict streams idle for this many seconds (0: never)",
    "ingest_hwm": "intake queue high-water mark, in messages",
    "publish_hwm": "per-subscriber queue high-water mark; a slow subscriber loses messages "
    "beyond it instead of blocking intake",
    "max_message_bytes": "largest intake message accepted (ZMQ_MAXMSGSIZE)",
    "log_format": "plain or json (one JSON object per line) on stderr",
    "log_level": "debug, info, warning or error",
    "curve_secret_key": "server certificate file (with secret key) to enable CURVE encryption",
    "curve_clients": "directory of client public certificates allowed to connect (CURVE)",
    "alert_threshold": "anomaly score at or above which an alert opens (below the score's 1.0 "
    "so that strong forecast errors alert, not only new extremes; bench/results/alerts.md)",
    "alert_close": "anomaly score below which an open alert closes; when not set, never above "
    "alert_threshold",
    "alert_min_duration": "readings the score must stay high before an alert opens",
    "alert_cooldown": "readings after a close before the same stream can alert again",
    "alert_warmup": "a stream's first readings during which no alert opens (it is still "
    "learning its range; 0: only the score's own probation)",
    "alert_error_gate": "an alert opens only on a reading whose forecast error is at least this "
    "many times the stream's typical error (0: off); keeps a barely-new extreme from paging",
}


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    """Convert a TOML or environment value to the field's type, or raise ValueError."""
    try:
        if kind is int and not isinstance(value, bool | float):
            return int(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind in (str, str | None) and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    kind_name = {int: "whole number", float: "number"}.get(kind, "string")
    raise ValueError(f"{source}: {name} = {value!r} is not a valid {kind_name}")


def load_config(
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ServeConfig:
    """Merge defaults, a TOML file, RNNSTREAM_* environment variables and flags, in that order.

    The TOML file holds the settings at top level or under a [serve] table, not both; an unknown
    key is an error that names it. An empty environment variable counts as not set.
    """
    hints = get_type_hints(ServeConfig)
    known = {f.name for f in fields(ServeConfig)}
    values: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
        if "serve" in data:
            outside = sorted(key for key in data if key != "serve")
            if not isinstance(data["serve"], dict):
                raise ValueError(f"config file {path}: 'serve' must be a table, [serve]")
            if outside:
                raise ValueError(
                    f"config file {path}: with a [serve] table every setting goes in it; "
                    f"{', '.join(map(repr, outside))} would be ignored"
                )
            data = data["serve"]
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(
                    f"config file {path}: unknown setting {key!r} "
                    f"(known: {', '.join(sorted(known))})"
                )
            values[name] = _coerce(name, hints[name], value, str(path))
    env = os.environ if env is None else env
    for name in known:
        var = f"RNNSTREAM_{name.upper()}"
        if env.get(var):  # VAR= (as a unit file or compose file may leave it): not set
            values[name] = _coerce(name, hints[name], env[var], f"environment {var}")
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value
    _close_level_follows_a_lower_threshold(values)
    try:
        return ServeConfig(**values)
    except ValueError as exc:
        raise ValueError(f"invalid setting: {exc}") from None


def _close_level_follows_a_lower_threshold(values: dict[str, Any]) -> None:
    """An alert threshold set below the default close level, the close level left unset, lowers
    the close level to it, as `rnnstream ctl threshold` does on a running daemon; both set the
    wrong way round stay an error."""
    threshold = values.get("alert_threshold")
    if "alert_close" not in values and isinstance(threshold, float | int):
        values["alert_close"] = min(ServeConfig.alert_close, threshold)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per ServeConfig field; an unset flag leaves the attribute absent."""
    hints = get_type_hints(ServeConfig)
    defaults = ServeConfig()
    parser.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    for f in fields(ServeConfig):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        parser.add_argument(
            flag,
            dest=f.name,
            type=kind if kind in (int, float) else str,
            default=argparse.SUPPRESS,  # absent unless given, so it never overrides the file
            metavar=f.name.upper() if kind in (int, float) else None,
            help=f"{_HELP[f.name]} (default: {default}; env RNNSTREAM_{f.name.upper()})",
        )


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    flags = {f.name: getattr(args, f.name, None) for f in fields(ServeConfig)}
    return load_config(args.config, flags=flags)
