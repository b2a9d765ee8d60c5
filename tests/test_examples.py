"""examples/feed.py and examples/subscribe.py, run as scripts against a real daemon.

The scripts use only pyzmq and msgpack, so these tests show that the wire protocol stands on its
own: what the feeder sends comes back from the subscriber as the predictions an in-process
StreamEngine makes for the same readings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from engine import protocol
from engine.model import Model
from engine.process import ServeProcess
from engine.stream import StreamEngine

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
N_INPUTS = 3
WAIT_S = 60.0  # generous: the machine is shared; a healthy run takes well under a second


class Script:
    """An example script running as a subprocess, its stdout collected line by line."""

    def __init__(self, name: str, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()

    def wait_for(self, done: Callable[[list[dict]], bool], what: str) -> list[dict]:
        """Wait until `done(lines)` holds; fail with what was printed when WAIT_S pass first."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while not done(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {what}; printed: {self.lines}\n{self.stderr()}")
                self._cond.wait(min(left, 0.2))
            return list(self.lines)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.random("gru", N_INPUTS, 8, output_size=2, seed=3)


@pytest.fixture(scope="module")
def daemon(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("examples")
    model.save(folder / "model.npz")
    with ServeProcess(folder / "model.npz", folder) as serve:
        yield serve


@pytest.fixture
def subscriber() -> Iterator[Callable[..., Script]]:
    started: list[Script] = []

    def start(*argv: str) -> Script:
        started.append(Script("subscribe.py", *argv))
        return started[-1]

    yield start
    for script in started:
        script.stop()


def warm_up(daemon: ServeProcess, sub: Script, stream: str) -> None:
    """Send readings of `stream` until `sub` prints one: its subscription has reached the PUB.

    ZeroMQ drops what a PUB sends before a subscription arrives, so without this the first
    readings the feeder sends could go unseen.
    """
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.linger = 0
    push.connect(daemon.ingest)
    try:
        deadline = time.monotonic() + WAIT_S
        while not any(line.get("stream") == stream for line in sub.lines):
            assert time.monotonic() < deadline, f"subscriber never saw {stream}: {sub.lines}"
            push.send(protocol.encode_reading(stream, np.zeros(N_INPUTS), end=True))
            time.sleep(0.1)
    finally:
        push.close()
        context.term()


def feed(daemon: ServeProcess, *argv: str) -> list[dict]:
    """Run feed.py to completion and return the readings it says it sent."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "feed.py"), "--endpoint", daemon.ingest, *argv],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def reference(model: Model, sent: list[dict]) -> list[tuple[str, np.ndarray]]:
    """Return (stream, prediction) for each sent reading, from an in-process engine."""
    engine = StreamEngine(model)
    return [(r["stream"], engine.step(r["stream"], np.float32(r["values"]))) for r in sent]


def predictions(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["topic"].startswith("pred.") and line["seq"]]


def test_subscriber_prints_the_prediction_of_every_reading_the_feeder_sent(
    daemon, subscriber, model
):
    sub = subscriber("--endpoint", daemon.publish)
    warm_up(daemon, sub, "warm-up-a")

    sent = feed(daemon, "--stream", "pump-7", "--count", "5", "--inputs", str(N_INPUTS))

    # five single readings of pump-7, then one batch: pump-70, pump-71 and pump-7's sixth
    assert [(r["stream"], r["seq"]) for r in sent] == [
        *[("pump-7", seq) for seq in range(1, 6)],
        ("pump-70", 1),
        ("pump-71", 1),
        ("pump-7", 6),
    ]
    lines = sub.wait_for(lambda ls: len(predictions(ls)) >= len(sent), "prediction per reading")
    got = predictions(lines)
    assert [(p["topic"], p["stream"], p["seq"]) for p in got] == [
        (f"pred.{r['stream']}", r["stream"], r["seq"]) for r in sent
    ]
    assert [p["ts"] for p in got] == [r["ts"] for r in sent]
    for p, (stream, expected) in zip(got, reference(model, sent), strict=True):
        assert p["stream"] == stream
        np.testing.assert_allclose(p["prediction"], expected, rtol=1e-5, atol=1e-6)
        assert p["score"] is None  # a random model does not score anomalies


def test_subscriber_with_stream_keeps_only_that_exact_stream(daemon, subscriber, model):
    # pred.tank-3 also matches pred.tank-30 and pred.tank-31, which the feeder's batch holds
    sub = subscriber("--endpoint", daemon.publish, "--stream", "tank-3", "--stream", "warm-up-b")
    warm_up(daemon, sub, "warm-up-b")

    sent = feed(daemon, "--stream", "tank-3", "--count", "4", "--inputs", str(N_INPUTS))

    # tank-3's last reading is the batch's last row, published after its neighbours'
    lines = sub.wait_for(
        lambda ls: any(p["stream"] == "tank-3" and p["seq"] == 5 for p in predictions(ls)),
        "prediction of tank-3's last reading",
    )
    got = [line for line in lines if line["stream"] != "warm-up-b"]
    mine = [r for r in sent if r["stream"] == "tank-3"]
    assert [(p["topic"], p["stream"], p["seq"]) for p in got] == [
        ("pred.tank-3", "tank-3", seq) for seq in range(1, 6)
    ]
    expected = [y for stream, y in reference(model, sent) if stream == "tank-3"]
    assert len(mine) == len(expected) == 5
    for p, y in zip(got, expected, strict=True):
        np.testing.assert_allclose(p["prediction"], y, rtol=1e-5, atol=1e-6)


def test_subscriber_prints_errors_for_readings_of_the_wrong_width(daemon, subscriber):
    sub = subscriber("--endpoint", daemon.publish, "--stream", "valve-2", "--stream", "warm-up-c")
    warm_up(daemon, sub, "warm-up-c")

    feed(daemon, "--stream", "valve-2", "--count", "3", "--inputs", str(N_INPUTS - 1))

    # three single readings name their stream; the batch is refused whole, without a stream
    lines = sub.wait_for(lambda ls: sum(ln["topic"] == "error" for ln in ls) >= 4, "4 errors")
    errors = [line for line in lines if line["topic"] == "error"]
    assert [(e["reason"], e.get("stream")) for e in errors] == [
        *[("wrong_length", "valve-2")] * 3,
        ("wrong_length", None),
    ]
    assert not predictions([line for line in lines if line.get("stream") == "valve-2"])


def test_subscriber_exits_after_count_messages(daemon, subscriber):
    sub = subscriber("--endpoint", daemon.publish, "--count", "2")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.linger = 0
    push.connect(daemon.ingest)
    try:
        deadline = time.monotonic() + WAIT_S
        while sub.proc.poll() is None:  # keep publishing until the subscriber has had enough
            assert time.monotonic() < deadline, f"subscriber did not exit: {sub.lines}"
            push.send(protocol.encode_reading("count-probe", np.zeros(N_INPUTS), end=True))
            time.sleep(0.05)
    finally:
        push.close()
        context.term()
    sub.stop()
    assert sub.proc.returncode == 0
    assert [line["stream"] for line in sub.lines] == ["count-probe", "count-probe"]


def test_subscriber_exits_after_timeout_without_messages(daemon, subscriber):
    sub = subscriber("--endpoint", daemon.publish, "--stream", "nobody", "--timeout", "0.3")
    assert sub.proc.wait(WAIT_S) == 0
    sub.stop()
    assert sub.lines == []
