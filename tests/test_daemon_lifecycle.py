"""`rnnstream serve` lifecycle: signals, shutdown, restarts, checkpoints, start-up failures, config.

Each test runs its own daemon process(es); ipc:// endpoints are used where a daemon is restarted
so clients can stay connected across the restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest
from conftest import FakeClock
from daemon_harness import (
    REPO,
    START_TIMEOUT,
    DaemonProcess,
    ipc_endpoints,
    predictions_by_stream,
    recv_count,
    reference_outputs,
    save_model,
)

from engine.config import ServeConfig, load_config
from engine.daemon import Daemon
from engine.model import Model
from engine.stream import StreamEngine

N_IN = 2


def make_model(seed: int = 7) -> Model:
    return Model.random("gru", N_IN, 6, output_size=1, seed=seed)


@pytest.fixture
def model() -> Model:
    return make_model()


@pytest.fixture
def model_path(tmp_path, model) -> Path:
    return save_model(model, tmp_path)


def ipc_dir(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can get long.
    folder = tmp_path / "s"
    folder.mkdir()
    return folder


def send_readings(producer, streams: list[str], X: np.ndarray, batch: int = 1) -> list[str]:
    """Send X's rows round-robin over `streams`, `batch` rows per message; return row streams."""
    names = [streams[i % len(streams)] for i in range(len(X))]
    for start in range(0, len(X), batch):
        part = slice(start, start + batch)
        if batch == 1:
            producer.send(names[start], X[start])
        else:
            producer.send_many(names[part], X[part])
    return names


def records(daemon: DaemonProcess, msg: str) -> list[dict]:
    return [r for r in daemon.log_records() if r.get("msg") == msg]


def assert_outputs(got: dict[str, list[dict]], model: Model, names: list[str], X: np.ndarray):
    """Every stream's published predictions equal one in-process engine fed all rows in order."""
    expected = reference_outputs(model, zip(names, X, strict=True))
    for stream in set(names):
        mine = [i for i, s in enumerate(names) if s == stream]
        assert [p["seq"] for p in got[stream]] == list(range(1, len(mine) + 1)), stream
        np.testing.assert_allclose(
            np.array([p["prediction"] for p in got[stream]]),
            np.array([expected[i] for i in mine]),
            rtol=0,
            atol=1e-5,
        )


# ----------------------------------------------------------------------------- stopping


@pytest.mark.parametrize(
    "signum",
    # SIGHUP (a closed terminal, or a `kill -HUP` meant as a reload) used to end the daemon
    # at once, without a snapshot
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_stop_signal_publishes_every_reading_sent_before_it_snapshots_and_exits_0(
    tmp_path, model, model_path, signum
):
    streams = [f"term-{i}" for i in range(25)]
    X = np.random.default_rng(0).normal(0, 1, (3000, N_IN)).astype(np.float32)
    with DaemonProcess(
        model_path, tmp_path / "state", endpoints=ipc_endpoints(ipc_dir(tmp_path))
    ) as daemon:
        daemon.start()
        sub = daemon.subscriber(("pred.",))
        producer = daemon.producer()
        names = send_readings(producer, streams, X[:500])
        names += send_readings(producer, streams, X[500:], batch=50)
        daemon.signal(signum)
        got = recv_count(sub, len(X), kind="pred", daemon=daemon)
        code = daemon.wait()

        assert code == 0, daemon.stderr_text()
        assert_outputs(predictions_by_stream(got), model, names, X)
        (snap,) = records(daemon, "snapshot written")
        assert snap["why"] == "shutdown" and snap["streams"] == len(streams)
        (stopped,) = records(daemon, "stopped")
        assert stopped["predictions"] >= len(X)  # plus the subscriber's sync probes
        assert "Traceback" not in daemon.stderr_text()
    restored = StreamEngine.restore(daemon.state_path, model)
    assert sorted(restored.streams()) == sorted(streams)
    for stream in streams:
        mine = X[[i for i, s in enumerate(names) if s == stream]]
        engine = StreamEngine(model)
        for x in mine:
            engine.step(stream, x)
        np.testing.assert_allclose(
            restored.state_of(stream)["h"], engine.state_of(stream)["h"], rtol=0, atol=1e-5
        )


def _flood(endpoint: str, context, stop: threading.Event, batch: int) -> None:
    """Send readings as fast as possible until `stop` is set."""
    from producers.client import Producer

    X = np.ones((batch, N_IN), np.float32)
    names = [f"flood-{i}" for i in range(batch)]
    with Producer(endpoint, context=context, linger=0, send_timeout=0.2) as producer:
        while not stop.is_set():
            try:
                if batch == 1:
                    producer.send(names[0], X[0])
                else:
                    producer.send_many(names, X)
            except Exception:  # zmq.Again when the queues are full, or the context going away
                continue


def test_second_signal_exits_at_once_without_a_snapshot(tmp_path, model_path):
    """Hold the daemon stopped while a backlog builds up, so its orderly stop takes a while."""
    with DaemonProcess(
        model_path,
        tmp_path / "state",
        endpoints=ipc_endpoints(ipc_dir(tmp_path)),
        args=["--max-batch", "1", "--checkpoint-every", "0"],
    ) as daemon:
        daemon.start()
        producer = daemon.producer(hwm=200_000)
        daemon.signal(signal.SIGSTOP)
        try:
            for i in range(50_000):
                producer.send(f"backlog-{i % 10}", [1.0, 2.0])
            mark = daemon.log_count()
            daemon.signal(signal.SIGTERM)
        finally:
            daemon.signal(signal.SIGCONT)
        daemon.wait_for_log(lambda r: r["msg"].startswith("stopping"), after=mark)
        daemon.signal(signal.SIGTERM)
        code = daemon.wait()

        assert code == 128 + signal.SIGTERM
        assert records(daemon, "snapshot written") == []
        assert records(daemon, "stopped") == []
        assert not daemon.state_path.exists()


@contextlib.contextmanager
def _flooded(daemon: DaemonProcess) -> Iterator[None]:
    """Keep batches of 200 readings flowing into a started daemon while the block runs."""
    stop = threading.Event()
    flood = threading.Thread(target=_flood, args=(daemon.ingest, daemon.context, stop, 200))
    flood.start()
    try:
        sub = daemon.subscriber(("pred.flood-0",), sync=False)
        assert sub.recv(timeout=15) is not None, "the flood never got through"
        yield
    finally:
        stop.set()
        flood.join(10)


def test_sigterm_under_sustained_load_still_stops_and_snapshots(tmp_path, model_path):
    with DaemonProcess(
        model_path, tmp_path / "state", endpoints=ipc_endpoints(ipc_dir(tmp_path))
    ) as daemon:
        daemon.start()
        with _flooded(daemon):
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(timeout=15)
        assert code == 0
        assert [r["why"] for r in records(daemon, "snapshot written")] == ["shutdown"]


def test_while_it_drains_at_shutdown_the_daemon_answers_probes_and_refuses_changes(
    tmp_path, model_path
):
    # A flood keeps intake busy, so the drain lasts up to DRAIN_LIMIT_S: a health probe then
    # got no reply at all and timed out.
    with DaemonProcess(
        model_path, tmp_path / "state", endpoints=ipc_endpoints(ipc_dir(tmp_path))
    ) as daemon:
        daemon.start()
        with _flooded(daemon):
            assert daemon.control("shutdown") == {"ok": True, "status": "stopping"}
            health = daemon.control("health", timeout=2)
            reset = daemon.control("reset", stream="flood-0", timeout=2)
            again = daemon.control("shutdown", timeout=2)
        code = daemon.wait(timeout=15)

        assert health["ok"] and health["status"] == "stopping"
        assert reset == {"ok": False, "error": "the daemon is stopping: reset refused"}
        assert again == {"ok": True, "status": "stopping"}
        assert code == 0, daemon.stderr_text()
        assert [r["why"] for r in records(daemon, "snapshot written")] == ["shutdown"]


def test_a_second_daemon_on_a_state_directory_in_use_is_refused_until_the_first_stops(
    tmp_path, model_path
):
    with DaemonProcess(model_path, tmp_path / "state") as first:
        first.start()
        second = DaemonProcess(model_path, tmp_path / "state")  # other ports, same folder
        second.close()  # only its argv is used; it runs to completion here
        result = _run_serve(second.command(), {})
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"rnnstream serve: error: state directory {tmp_path / 'state'} is in use by another "
            f"rnnstream serve (pid {first.proc.pid}); give each daemon its own --state-dir"
        ]
        first.kill()  # however it ends, the folder is free again
    with DaemonProcess(model_path, tmp_path / "state") as third:
        third.start()
        assert third.control("health")["ok"]


def test_a_second_daemon_on_ipc_endpoints_in_use_is_refused_and_the_first_keeps_serving(
    tmp_path, model, model_path
):
    # ZeroMQ replaces an ipc:// socket file on bind: unchecked, the second daemon would take
    # the endpoints and leave the first serving nobody.
    endpoints = ipc_endpoints(ipc_dir(tmp_path))
    with DaemonProcess(model_path, tmp_path / "state", endpoints=endpoints) as first:
        first.start()
        second = DaemonProcess(model_path, tmp_path / "other-state", endpoints=endpoints)
        second.close()  # only its argv is used; it runs to completion here
        result = _run_serve(second.command())
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith(
            f"rnnstream serve: error: cannot bind the ingest socket to {endpoints['ingest']}: "
        ), lines
        assert "another rnnstream serve" in lines[0] and "--ingest" in lines[0], lines
        assert first.control("health")["pid"] == first.proc.pid
        sub = first.subscriber()
        first.producer().send("s", [0.5, -0.5])
        assert recv_count(sub, 1, kind="pred", daemon=first)[0][1]["stream"] == "s"
        first.kill()  # leaves its socket files behind, with nobody listening
    with DaemonProcess(model_path, tmp_path / "state", endpoints=endpoints) as third:
        third.start()
        assert third.control("health")["pid"] == third.proc.pid


def test_a_snapshot_left_unfinished_by_a_kill_is_removed_at_start(tmp_path, model_path):
    state = tmp_path / "state"
    state.mkdir()
    leftover = state / ".state.npz.k53qzg0y.tmp"  # as a kill mid-snapshot leaves it
    leftover.write_bytes(b"half a snapshot")
    unrelated = state / "notes.txt"
    unrelated.write_text("mine")
    with DaemonProcess(model_path, state) as daemon:
        daemon.start()
        assert not leftover.exists() and unrelated.read_text() == "mine"
        assert records(daemon, "removed an unfinished snapshot")[0]["path"] == str(leftover)


def test_shutdown_command_stops_the_daemon_with_exit_code_0(tmp_path, model_path):
    with DaemonProcess(model_path, tmp_path / "state") as daemon:
        daemon.start()
        producer = daemon.producer()
        sub = daemon.subscriber(("pred.",))
        producer.send("bye", [1.0, 1.0])
        daemon.until_fence(sub, producer)
        reply = daemon.control("shutdown")
        code = daemon.wait()

        assert reply == {"ok": True, "status": "stopping"}
        assert code == 0, daemon.stderr_text()
        assert [r["why"] for r in records(daemon, "snapshot written")] == ["shutdown"]
        assert records(daemon, "stopped")[0]["snapshot"] == "written"
        assert daemon.state_path.is_file()
        assert "Traceback" not in daemon.stderr_text()


def test_a_stop_whose_snapshot_fails_exits_1_and_says_so(tmp_path, model_path):
    # It exited 0, as after a clean stop, with the readings since the last snapshot lost.
    state = tmp_path / "state"
    with DaemonProcess(model_path, state, args=["--checkpoint-every", "0"]) as daemon:
        daemon.start()
        producer = daemon.producer()
        sub = daemon.subscriber(("pred.",))
        producer.send("lost", [1.0, 1.0])
        daemon.until_fence(sub, producer)
        shutil.rmtree(state)
        state.write_text("the state directory's path, taken by a file")
        code = daemon.stop()

        assert code == 1, daemon.stderr_text()
        (failed,) = records(daemon, "snapshot failed")
        assert failed["level"] == "error" and failed["error"]
        (stopped,) = records(daemon, "stopped")
        assert stopped["snapshot"] == "failed"
        assert "Traceback" not in daemon.stderr_text()


# ----------------------------------------------------------------------------- restarts


def test_restart_after_sigterm_continues_every_stream_as_if_never_stopped(
    tmp_path, model, model_path
):
    streams = ["cont-a", "cont-b", "cont-c"]
    X = np.random.default_rng(1).normal(0, 1, (60, N_IN)).astype(np.float32)
    with DaemonProcess(
        model_path, tmp_path / "state", endpoints=ipc_endpoints(ipc_dir(tmp_path))
    ) as daemon:
        daemon.start()
        sub = daemon.subscriber(("pred.", "error"))
        producer = daemon.producer()  # stays connected, and keeps numbering, across the restart
        names = send_readings(producer, streams, X[:25], batch=5)
        first = daemon.until_fence(sub, producer)
        assert daemon.stop() == 0

        daemon.start()
        (restored,) = records(daemon, "state restored")
        assert restored["streams"] == len(streams)
        daemon.sync_subscriber(sub)
        names += send_readings(producer, streams, X[25:])
        second = daemon.until_fence(sub, producer)

    assert [p for k, p in first + second if k == "error"] == []
    assert_outputs(predictions_by_stream(first + second), model, names, X)


def test_periodic_checkpoint_copies_once_its_memory_is_ready_and_keeps_later_steps_out(
    tmp_path, model
):
    daemon = Daemon(ServeConfig(state_dir=str(tmp_path)), logging.getLogger("test"))
    daemon.engine = engine = StreamEngine(model)
    X = np.random.default_rng(4).normal(0, 1, (6, N_IN)).astype(np.float32)
    engine.step_many(["a", "b", "a"], X[:3])

    daemon._checkpoint_in_background()  # faults the copy's memory in on a thread
    daemon._snapshot_thread.join()
    engine.step_many(["b"], X[3:4])  # before the copy: in the snapshot
    expected = {s: engine.state_of(s) for s in engine.streams()}
    daemon._copy_for_checkpoint()
    engine.step_many(["a", "c"], X[4:6])  # after it: not
    daemon._wait_for_snapshot_writer()

    restored = StreamEngine.restore(daemon.state_path, model)
    assert restored.streams() == ["a", "b"]
    for stream, state in expected.items():
        for name, array in state.items():
            np.testing.assert_array_equal(restored.state_of(stream)[name], array)
    assert daemon.metrics.snapshots == 1
    # memory made ready for a copy that a requested snapshot overtakes is let go
    daemon._checkpoint_in_background()
    assert daemon._checkpoint("requested")["streams"] == 3
    assert daemon._snapshot_memory is None and daemon._snapshot_thread is None


def test_a_checkpoint_whose_memory_is_ready_is_copied_even_when_the_timer_comes_round_again(
    tmp_path, model
):
    # With --checkpoint-every under the loop's 0.1 s poll, an idle daemon's timer came round
    # again before the loop copied: each time, the ready memory was dropped for a new one, and
    # periodic snapshots all but stopped (1 in 3 s at --checkpoint-every 0.05).
    daemon = Daemon(ServeConfig(state_dir=str(tmp_path)), logging.getLogger("test"))
    daemon.engine = StreamEngine(model)
    daemon.engine.step("a", np.ones(N_IN, np.float32))
    daemon._checkpoint_in_background()
    daemon._snapshot_thread.join()
    ready = daemon._snapshot_memory

    daemon._checkpoint_in_background()  # the timer, before the loop's next copy

    assert daemon._snapshot_memory is ready and not daemon._snapshot_thread.is_alive()
    daemon._copy_for_checkpoint()
    daemon._wait_for_snapshot_writer()
    assert daemon.metrics.snapshots == 1


def test_kill_9_restart_restores_the_last_periodic_checkpoint(tmp_path, model, model_path):
    X = np.random.default_rng(2).normal(0, 1, (40, N_IN)).astype(np.float32)
    with DaemonProcess(
        model_path,
        tmp_path / "state",
        endpoints=ipc_endpoints(ipc_dir(tmp_path)),
        args=["--checkpoint-every", "0.5"],
    ) as daemon:
        daemon.start()
        sub = daemon.subscriber(("pred.", "error"))
        producer = daemon.producer()
        names = send_readings(producer, ["ck-a", "ck-b"], X[:20], batch=4)
        first = daemon.until_fence(sub, producer)

        # A periodic checkpoint is copied in the loop and written on a thread, so the first one
        # logged from now on may have been copied before; the second holds ck-a and ck-b as
        # they are now.
        def periodic_snapshots() -> int:
            records = daemon.log_records()
            return sum(
                r.get("msg") == "snapshot written" and r.get("why") == "periodic" for r in records
            )

        wanted, deadline = periodic_snapshots() + 2, time.monotonic() + 15
        while periodic_snapshots() < wanted:
            assert time.monotonic() < deadline, daemon.stderr_text()
            time.sleep(0.05)
        producer.send("ck-late", [5.0, 5.0])  # may or may not make a checkpoint; not checked
        daemon.kill()
        assert records(daemon, "stopped") == []

        daemon.start()
        (restored,) = records(daemon, "state restored")
        assert restored["streams"] in (2, 3)
        daemon.sync_subscriber(sub)
        names += send_readings(producer, ["ck-a", "ck-b"], X[20:])
        second = daemon.until_fence(sub, producer)

    assert [p for k, p in first + second if k == "error"] == []
    got = predictions_by_stream(first + second)
    got.pop("ck-late", None)
    assert_outputs(got, model, names, X)


def _snapshot_of_another_model(path: Path) -> None:
    engine = StreamEngine(make_model(seed=99))
    engine.step("old", np.ones(N_IN, np.float32))
    engine.snapshot(path)


def _corrupt_snapshot(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is not a zip archive at all")


def _truncated_snapshot(path: Path) -> None:
    engine = StreamEngine(make_model())
    engine.step("old", np.ones(N_IN, np.float32))
    engine.snapshot(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "spoil",
    [_snapshot_of_another_model, _corrupt_snapshot, _truncated_snapshot],
    ids=["another_model", "corrupt", "truncated"],
)
def test_unusable_snapshot_is_set_aside_and_the_daemon_starts_empty(
    tmp_path, model, model_path, spoil
):
    state = tmp_path / "state"
    state.mkdir()
    spoil(state / "state.npz")
    original = (state / "state.npz").read_bytes()
    with DaemonProcess(model_path, state) as daemon:
        daemon.start()
        (error,) = [r for r in daemon.log_records() if r["level"] == "error"]
        health = daemon.control("health")
        sub = daemon.subscriber(("pred.",))
        producer = daemon.producer()
        producer.send("old", [1.0, 1.0])
        (pred,) = [p for _, p in daemon.until_fence(sub, producer)]

    assert "snapshot" in error["msg"] and error["reason"]
    aside = list(state.glob("state.npz.rejected-*"))
    assert [str(p) for p in aside] == [error["moved_to"]]
    assert aside[0].read_bytes() == original
    assert health["status"] == "ready" and health["streams"] == 0
    fresh = reference_outputs(model, [("old", [1.0, 1.0])])[0]
    np.testing.assert_allclose(pred["prediction"], fresh, rtol=0, atol=1e-5)


def test_a_snapshot_with_more_streams_than_max_streams_keeps_the_most_recently_used(
    tmp_path, model, model_path
):
    # It was set aside whole, as if corrupt: a lowered --max-streams lost every stream's state.
    state = tmp_path / "state"
    state.mkdir()
    clock = FakeClock()
    engine = StreamEngine(model, clock=clock)
    for stream in ["s0", "s1", "s2", "s3", "s4"]:
        engine.step(stream, np.ones(N_IN, np.float32))
        clock.advance(1.0)
    engine.snapshot(state / "state.npz")
    with DaemonProcess(model_path, state, args=["--max-streams", "3"]) as daemon:
        daemon.start()
        (restored,) = records(daemon, "state restored")
        (evicted,) = [r for r in daemon.log_records() if r["level"] != "info"]
        stats = daemon.control("stats")
        streams = daemon.control("streams")["streams"]

    assert restored["streams"] == 3 and sorted(streams) == ["s2", "s3", "s4"]
    assert evicted["evicted"] == 2 and evicted["max_streams"] == 3
    assert stats["evicted_lru"] == 2
    assert list(state.glob("state.npz.rejected-*")) == []


# ----------------------------------------------------------------------------- user errors


def _occupied_port() -> tuple[socket.socket, int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def _run_serve(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )


def test_user_errors_exit_non_zero_with_one_clear_line(tmp_path, model_path):
    """Each case fails at start-up: exit status 2, one `error:` line, no traceback."""
    holder, busy = _occupied_port()
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text('[serve]\ningest = "tcp://127.0.0.1:1"\nbogus_setting = 3\n')
    cases = {
        "ingest port in use": (["--ingest", f"tcp://127.0.0.1:{busy}"], {}, "--ingest"),
        "metrics port in use": (["--metrics-port", str(busy)], {}, "--metrics-port"),
        "missing model": (["--model", str(tmp_path / "nope.npz")], {}, "nope.npz"),
        "unwritable state dir": (["--state-dir", str(not_a_dir / "state")], {}, "--state-dir"),
        "state dir is a file": (["--state-dir", str(not_a_dir)], {}, "is a file, not a directory"),
        "one endpoint for two sockets": (
            ["--ingest", "tcp://127.0.0.1:1", "--publish", "tcp://127.0.0.1:1"],
            {},
            "ingest and publish are both tcp://127.0.0.1:1: give each socket its own endpoint",
        ),
        "unknown toml key": (["--config", str(unknown_key)], {}, "bogus_setting"),
        "bad flag value": (["--publish-mode", "sideways"], {}, "publish_mode"),
        "bad env value": ([], {"RNNSTREAM_MAX_BATCH": "lots"}, "RNNSTREAM_MAX_BATCH"),
        "nan env value": ([], {"RNNSTREAM_CHECKPOINT_EVERY": "nan"}, "checkpoint_every"),
        "missing curve key": (
            ["--curve-secret-key", str(tmp_path / "no.key_secret"), "--curve-clients", "."],
            {},
            "curve",
        ),
    }
    try:
        for name, (args, env, mention) in cases.items():
            daemon = DaemonProcess(model_path, tmp_path / "state", args=args)
            daemon.close()  # only its argv is used; the test runs it to completion
            result = _run_serve(daemon.command(), env)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (name, result.stderr)
            assert len(lines) == 1, (name, result.stderr)
            assert lines[0].startswith("rnnstream serve: error: "), (name, lines)
            assert mention in lines[0], (name, lines)
            assert "Traceback" not in result.stderr
            assert result.stdout == ""
    finally:
        holder.close()


def test_a_snapshot_that_cannot_be_opened_stops_the_start_and_stays_in_place(tmp_path, model_path):
    # It was read as a corrupt snapshot, set aside and replaced by an empty state: what the
    # daemon cannot open (here a folder; for a daemon that is not root, a file it may not
    # read, such as a backup copied back by root with mode 0600) is no fault of its content.
    state = tmp_path / "state"
    (state / "state.npz").mkdir(parents=True)
    daemon = DaemonProcess(model_path, state)
    daemon.close()  # only its argv is used
    result = _run_serve(daemon.command())

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rnnstream serve: error: cannot read snapshot {state / 'state.npz'}: Is a directory; "
        "make it a file this user can read, or move it away to start with no stream state"
    ]
    assert sorted(p.name for p in state.iterdir()) == ["serve.lock", "state.npz"]


def test_a_pytorch_file_given_as_the_model_says_to_convert_it_first(tmp_path, model_path):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "weights.pt"
    torch.save(torch.nn.GRU(N_IN, 6).state_dict(), weights)
    convert = f"convert it first: rnnstream convert {weights} --out model.npz"
    daemon = DaemonProcess(weights, tmp_path / "state")
    daemon.close()  # only its argv is used; it runs to completion here
    result = _run_serve(daemon.command())
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"rnnstream serve: error: cannot load model {weights}: {weights}: a PyTorch file "
        f"(torch.save), not an rnnstream model file; {convert}"
    ]
    with DaemonProcess(model_path, tmp_path / "state") as running:
        running.start()
        reply = running.control("reload", path=str(weights))
        assert not reply["ok"] and convert in reply["error"], reply


# ----------------------------------------------------------------------------- config layers

FLOAT_SETTINGS = [name for name, kind in get_type_hints(ServeConfig).items() if kind is float]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_non_finite_float_settings_are_refused_from_every_layer(tmp_path, name, text):
    # NaN passes any `< 0` check, so unrefused it would silently turn e.g. checkpoints off
    toml = tmp_path / "serve.toml"
    toml.write_text(f"[serve]\n{name} = {text}\n")  # TOML spells nan and inf like this too
    layers = {
        "file": {"file": toml, "env": {}},
        "environment": {"env": {f"RNNSTREAM_{name.upper()}": text}},
        "flag": {"env": {}, "flags": {name: float(text)}},
    }
    for layer, sources in layers.items():
        with pytest.raises(ValueError, match=f"{name} must be a finite number, got {text}"):
            load_config(**sources)
            pytest.fail(f"{name} = {text} from the {layer} was accepted")


def test_a_fraction_for_a_whole_number_setting_is_refused_saying_a_whole_number(tmp_path):
    # "max_streams = 1.5 is not a valid number" left the reader wondering what 1.5 was then
    toml = tmp_path / "serve.toml"
    toml.write_text("max_streams = 1.5\n")
    with pytest.raises(ValueError, match=r"max_streams = 1.5 is not a valid whole number$"):
        load_config(toml, env={})
    with pytest.raises(ValueError, match=r"max_streams = '1.5' is not a valid whole number$"):
        load_config(env={"RNNSTREAM_MAX_STREAMS": "1.5"})
    with pytest.raises(ValueError, match=r"idle_timeout = 'soon' is not a valid number$"):
        load_config(env={"RNNSTREAM_IDLE_TIMEOUT": "soon"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ingest = "x"\n[serve]\nlog_format = "json"\n', "every setting goes in it; 'ingest'"),
        ('serve = "yes"\n', "'serve' must be a table"),
    ],
    ids=["top-level key beside [serve]", "serve not a table"],
)
def test_a_config_file_with_a_serve_table_has_every_setting_in_it(tmp_path, text, message):
    toml = tmp_path / "serve.toml"
    toml.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(toml, env={})


def test_an_empty_environment_variable_counts_as_not_set(tmp_path):
    toml = tmp_path / "serve.toml"
    toml.write_text('[serve]\nmodel = "from-file.npz"\n')
    config = load_config(toml, env={"RNNSTREAM_MODEL": "", "RNNSTREAM_MAX_BATCH": ""})
    assert config.model == "from-file.npz" and config.max_batch == ServeConfig().max_batch


def test_a_threshold_below_the_default_close_level_lowers_it_unless_both_are_set():
    # as `ctl threshold 0.1` does on a running daemon
    lowered = load_config(env={}, flags={"alert_threshold": 0.1})
    assert (lowered.alert_threshold, lowered.alert_close) == (0.1, 0.1)
    kept = load_config(env={}, flags={"alert_threshold": 0.5})
    assert kept.alert_close == ServeConfig().alert_close
    with pytest.raises(ValueError, match="alert_close <= alert_threshold"):
        load_config(env={}, flags={"alert_threshold": 0.1, "alert_close": 0.2})


def test_float_settings_cover_the_timers_that_nan_would_turn_off():
    assert {"checkpoint_every", "idle_timeout", "alert_error_gate"} <= set(FLOAT_SETTINGS)


def test_flags_override_environment_which_overrides_the_config_file(tmp_path, model, model_path):
    folder = ipc_dir(tmp_path)  # ipc endpoints: no port can be taken between picking and binding
    from_toml, from_env, from_flag = (
        ipc_endpoints(folder / layer) for layer in ("toml", "env", "flag")
    )
    for layer in ("toml", "env", "flag"):
        (folder / layer).mkdir()
    config = tmp_path / "serve.toml"
    config.write_text(
        "[serve]\n"
        f'ingest = "{from_toml["ingest"]}"\n'
        f'publish = "{from_toml["publish"]}"\n'
        f'control = "{from_toml["control"]}"\n'
        "checkpoint-every = 0\n"  # dashed keys are accepted like the flags' spelling
    )
    env = {"RNNSTREAM_PUBLISH": from_env["publish"], "RNNSTREAM_CONTROL": from_env["control"]}
    effective = {
        "ingest": from_toml["ingest"],
        "publish": from_env["publish"],
        "control": from_flag["control"],
    }
    with DaemonProcess(
        model_path,
        tmp_path / "state",
        endpoints=effective,
        endpoint_flags=("control",),
        args=["--config", str(config)],
        env=env,
    ) as daemon:
        daemon.start()
        (ready,) = records(daemon, "ready")
        assert {k: ready[k] for k in effective} == effective
        sub = daemon.subscriber(("pred.",))
        producer = daemon.producer()
        producer.send("layered", [0.5, 0.5])
        (pred,) = [p for _, p in daemon.until_fence(sub, producer)]
        assert daemon.control("health")["status"] == "ready"
    np.testing.assert_allclose(
        pred["prediction"], reference_outputs(model, [("x", [0.5, 0.5])])[0], rtol=0, atol=1e-5
    )
