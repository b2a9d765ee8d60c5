"""Run `rnnstream serve` as a child process on this host's endpoints (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_ports(n: int) -> list[int]:
    """Return `n` distinct loopback TCP ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# The kinds of endpoint `local_endpoints` makes, and how a report names them.
TRANSPORTS = {"tcp": "loopback TCP", "ipc": "ipc:// sockets (Unix domain)"}


def local_endpoints(transport: str, folder: str | os.PathLike, n: int) -> list[str]:
    """Return `n` distinct endpoints on this host: `tcp` free loopback ports, or `ipc` socket
    files in `folder` (keep it short: an AF_UNIX path has at most 107 bytes)."""
    if transport == "tcp":
        return [f"tcp://127.0.0.1:{p}" for p in free_ports(n)]
    if transport == "ipc":
        tag = uuid.uuid4().hex[:8]
        return [f"ipc://{Path(folder)}/{tag}-{k}.sock" for k in range(n)]
    raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")


class ServeProcess:
    """A `rnnstream serve` subprocess on endpoints of this host, logging to a file."""

    def __init__(
        self,
        model: str | os.PathLike,
        workdir: str | os.PathLike,
        *,
        publish_mode: str = "each",
        extra: Sequence[str] = (),
        transport: str = "tcp",
    ) -> None:
        self.workdir = Path(workdir)
        self.ingest, self.publish, self.control = local_endpoints(transport, self.workdir, 3)
        tag = uuid.uuid4().hex[:8]
        self.log_path = self.workdir / f"serve-{tag}.log"
        self.argv = [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--model",
            str(model),
            "--ingest",
            self.ingest,
            "--publish",
            self.publish,
            "--control",
            self.control,
            "--state-dir",
            str(self.workdir / f"state-{tag}"),
            "--publish-mode",
            publish_mode,
            *extra,
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> ServeProcess:
        """Start the daemon and wait until it logs `ready`; raise RuntimeError if it does not."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready " in self.log_text():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"rnnstream serve did not become ready (exit {self.process.returncode}):\n"
            + self.log_text()[-2000:]
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the daemon in order and return its exit code; kill it if it is not done within
        `timeout` seconds.

        SIGTERM, not the control socket's `shutdown`: a daemon with CURVE admits no control
        client without keys, and SIGTERM makes every daemon drain, publish and snapshot.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
