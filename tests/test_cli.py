"""`engine.cli.main` as a user meets it: run as `python -m engine.cli ...` subprocesses.

SIGTERM (`kill`, `timeout`, a service manager) must end a client tool the way Ctrl-C does: a
recording keeps what it received, the demo stops the daemon it started.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_harness import DaemonProcess, recv_count

from engine.default_model import default_model_path

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 30.0  # seconds any single expectation may take before the test fails


def start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_consume_record_stopped_by_sigterm_keeps_every_prediction_it_received(tmp_path):
    out = tmp_path / "predictions.csv"
    with DaemonProcess(default_model_path(), tmp_path / "state") as daemon:
        daemon.start()
        watch = daemon.subscriber(("pred.s",))  # the streams s0..s19 below
        recorder = start("consume", "record", "--endpoint", daemon.publish, "--out", str(out))
        try:
            producer = daemon.producer()

            # The recorder flushes a row that comes a second after its last flush: once a probe
            # shows in the file, its subscription is live and what follows waits in its buffer.
            def probe_recorded() -> bool:
                producer.send("probe", [1.0])
                return out.exists() and out.stat().st_size > 0

            wait_until(probe_recorded, "the recorder's first row")
            streams = [f"s{i}" for i in range(20)]
            producer.send_many(streams, np.ones((20, 1)))
            recv_count(watch, len(streams), kind="pred", daemon=daemon)
            time.sleep(0.5)  # the recorder is on the same loopback as `watch`
            recorder.send_signal(signal.SIGTERM)
            stdout, stderr = recorder.communicate(timeout=DEADLINE)
        finally:
            recorder.kill()
    assert recorder.returncode == 0, stderr
    assert "recorded" in stdout
    text = out.read_text()
    assert text.endswith("\n")
    recorded = {row["stream"] for row in csv.DictReader(text.splitlines())}
    assert set(streams) <= recorded


def serving_in(folder: Path) -> list[int]:
    """Return the pids of `rnnstream serve` processes whose command line names `folder`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"serve" in argv and any(str(folder).encode() in arg for arg in argv):
            pids.append(int(cmdline.parent.name))
    return pids


def _ready(folder: Path) -> bool:
    return any(" ready " in log.read_text() for log in folder.glob("serve-*.log"))


@pytest.mark.parametrize("when", ["starting", "running"])
def test_demo_stopped_by_sigterm_stops_its_daemon(tmp_path, when):
    demo = start("demo", "--duration", "300", "--streams", "5", "--no-plot", "--out", str(tmp_path))
    try:
        if when == "starting":  # while the daemon loads the model and the compiled kernels
            wait_until(lambda: serving_in(tmp_path), "the demo to start its daemon")
        else:
            wait_until(lambda: _ready(tmp_path), "the demo's daemon to be ready")
            time.sleep(1.0)  # readings flowing
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=DEADLINE)
        assert serving_in(tmp_path) == [], "the demo left its daemon running"
    finally:
        demo.kill()
        for pid in serving_in(tmp_path):
            os.kill(pid, signal.SIGKILL)
