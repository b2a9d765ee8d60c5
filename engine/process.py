"""Run `rnnstream serve` as a child process on free loopback ports (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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


class ServeProcess:
    """A `rnnstream serve` subprocess bound to free loopback ports, logging to a file."""

    def __init__(
        self,
        model: str | os.PathLike,
        workdir: str | os.PathLike,
        *,
        publish_mode: str = "each",
        extra: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        ports = free_ports(3)
        self.ingest, self.publish, self.control = (f"tcp://127.0.0.1:{p}" for p in ports)
        self.log_path = self.workdir / f"serve-{ports[0]}.log"
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
            str(self.workdir / f"state-{ports[0]}"),
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
        """Ask the daemon to shut down over its control socket; kill it if it does not."""
        from engine.ctl import NoReply, control

        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        try:
            control(self.control, "shutdown", timeout=5.0)
            return self.process.wait(timeout)
        except (NoReply, subprocess.TimeoutExpired):
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
