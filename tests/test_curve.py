"""`rnnstream serve` with CURVE: only clients whose public keys are in --curve-clients get through.

An unauthorised client's handshake is refused by the daemon's authenticator, which the client's
socket monitor reports; after that, a fence sent by an authorised client shows that the
daemon published nothing for the refused reading. Producers, subscribers and their command
lines say why they got nowhere.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
import zmq.auth
from daemon_harness import (
    RECV_TIMEOUT,
    DaemonProcess,
    predictions_by_stream,
    reference_outputs,
    save_model,
)
from zmq.utils.monitor import recv_monitor_message

from consumers import cli as consume_cli
from engine import protocol
from engine.model import Model
from producers import cli as produce_cli

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
REFUSED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.random("rnn", 2, 5, output_size=1, seed=4)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("certs")
    folders = {name: base / name for name in ("server", "client", "intruder", "allowed")}
    for folder in folders.values():
        folder.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(folders["server"], "server")
    client_public, client_secret = zmq.auth.create_certificates(folders["client"], "client")
    _, intruder_secret = zmq.auth.create_certificates(folders["intruder"], "intruder")
    shutil.copy(client_public, folders["allowed"])  # only the client's public key is allowed
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "client_secret": client_secret,
        "intruder_secret": intruder_secret,
        "allowed": str(folders["allowed"]),
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model, keys):
    folder = tmp_path_factory.mktemp("curve-daemon")
    proc = DaemonProcess(
        save_model(model, folder),
        folder / "state",
        args=["--curve-secret-key", keys["server_secret"], "--curve-clients", keys["allowed"]],
        curve=(keys["server_public"], keys["client_secret"]),
    )
    with proc.start():
        yield proc


def intruder_keys(keys: dict[str, str]) -> dict[str, object]:
    return {
        "server_public_key": keys["server_public"],
        "client_secret_key": keys["intruder_secret"],
    }


NO_CURVE = {"server_public_key": None}


def handshake_event(sock: zmq.Socket, send) -> int:
    """Run `send()`, then return the first handshake outcome `sock`'s monitor reports.

    A refused client retries (and fails) every reconnect interval, so attaching the monitor after
    the socket connected still sees a refusal.
    """
    monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
    monitor.rcvtimeo = int(RECV_TIMEOUT * 1000)
    try:
        send()
        return recv_monitor_message(monitor)["event"]
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


def test_authorised_client_round_trips_over_curve(daemon, model):
    sub = daemon.subscriber(("pred.",))
    producer = daemon.producer()
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], np.float32)
    producer.send("friend", X[0])
    producer.send_many(["friend", "friend"], X[1:])
    got = predictions_by_stream(daemon.until_fence(sub, producer))
    problems = [c.connection_problem(wait=RECV_TIMEOUT) for c in (producer, sub)]

    assert problems == [None, None]
    assert [p["seq"] for p in got["friend"]] == [1, 2, 3]
    np.testing.assert_allclose(
        np.array([p["prediction"] for p in got["friend"]]),
        np.array(reference_outputs(model, [("friend", x) for x in X])),
        rtol=0,
        atol=1e-5,
    )
    assert daemon.control("health")["status"] == "ready"


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_unauthorised_producer_gets_no_reading_through(daemon, keys, who):
    curve = intruder_keys(keys) if who == "unknown_keys" else NO_CURVE
    stream = f"intruder-{who}"
    sub = daemon.subscriber(("pred.", "error"))
    before = daemon.stats()
    intruder = daemon.push(connect=False, **curve)

    def connect_and_send() -> None:
        intruder.connect(daemon.ingest)
        intruder.send(protocol.encode_reading(stream, [1.0, 1.0]))

    event = handshake_event(intruder, connect_and_send)
    friend = daemon.producer()
    friend.send(f"friend-after-{who}", [1.0, 1.0])
    got = daemon.until_fence(sub, friend)
    straggler = sub.recv(timeout=1.0)  # a late intruder prediction would show up here
    after = daemon.stats()

    assert event in REFUSED
    assert [(k, p["stream"]) for k, p in got] == [("pred", f"friend-after-{who}")]
    assert straggler is None
    assert after["frames_in"] - before["frames_in"] == 2  # the friend's reading and the fence
    assert stream not in daemon.control("streams", limit=100000)["streams"]


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_unauthorised_subscriber_receives_nothing(daemon, keys, who):
    """While an authorised subscriber gets each of several rounds, the spy gets none of them.

    The Subscriber connects in its constructor, before a monitor could be attached, so its
    refusal is shown by what it misses: an authorised subscriber joins within milliseconds.
    """
    curve = intruder_keys(keys) if who == "unknown_keys" else NO_CURVE
    friend_sub = daemon.subscriber(("pred.",))
    spy = daemon.subscriber(("",), sync=False, **curve)
    producer = daemon.producer()
    spied = []
    for round_ in range(5):
        stream = f"friend-secret-{who}-{round_}"
        producer.send(stream, [2.0, 2.0])
        got = daemon.until_fence(friend_sub, producer)
        assert [(k, p["stream"]) for k, p in got] == [("pred", stream)]
        spied.append(spy.recv(timeout=0.25))
    assert spied == [None] * 5


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_unauthorised_control_request_gets_no_reply(daemon, keys, who):
    curve = intruder_keys(keys) if who == "unknown_keys" else NO_CURVE
    with pytest.raises(AssertionError, match="no control reply"):
        daemon.control_raw([protocol.encode_control("shutdown")], timeout=1.0, **curve)
    assert daemon.control("health")["status"] == "ready"


def says_which_key_does_not_fit(reason: str, who: str) -> bool:
    """Whether `reason` names the trouble of a client with `who`'s keys (see intruder_keys)."""
    if who == "unknown_keys":
        return reason.startswith("the daemon refused this client's CURVE key: ")
    # libzmq reports a mechanism mismatch, or just a failed handshake, depending on who reads first
    return reason in (
        "the daemon uses CURVE: give --server-public-key (and --client-secret-key)",
        "the handshake failed: is --endpoint the daemon's ingest socket? (one with CURVE needs "
        "--server-public-key)",
        "the handshake failed: is --endpoint the daemon's publish socket? (one with CURVE needs "
        "--server-public-key)",
    )


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_refused_producer_and_subscriber_say_why(daemon, keys, who):
    curve = intruder_keys(keys) if who == "unknown_keys" else NO_CURVE
    # Sent at once, while the connection is being made: once the daemon has refused it, libzmq
    # drops the connection and a PUSH with none blocks (here: zmq.Again after send_timeout).
    producer = daemon.producer(linger=RECV_TIMEOUT, send_timeout=RECV_TIMEOUT, **curve)
    producer.send("refused", [1.0, 1.0])
    spy = daemon.subscriber(("",), sync=False, **curve)
    problems = [c.connection_problem(wait=RECV_TIMEOUT) for c in (producer, spy)]
    began = time.monotonic()
    left_unsent = producer.close()
    closing = time.monotonic() - began

    for problem in problems:
        assert problem is not None and problem.handshake_failed, problem
        assert says_which_key_does_not_fit(problem.reason, who), problem.reason
    assert left_unsent == problems[0]
    assert closing < 1.0  # a refused handshake leaves no reason to wait out the linger


def command_line(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def curve_argv(keys: dict[str, str], who: str) -> list[str]:
    if who == "no_curve":
        return []
    intruder = ["--client-secret-key", keys["intruder_secret"]]
    return ["--server-public-key", keys["server_public"], *intruder]


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_rnnstream_produce_with_a_refused_key_says_so_and_exits_1(daemon, keys, who, capsys):
    argv = ["synthetic", "--streams", "2", "--rate", "0", "--ticks", "3", "--progress", "0"]
    args = command_line(produce_cli, [*argv, "--endpoint", daemon.ingest, *curve_argv(keys, who)])
    began = time.monotonic()
    code = produce_cli.run(args)
    took = time.monotonic() - began
    err = capsys.readouterr().err.splitlines()

    assert code == 1
    # Nothing got through: every reading was only queued, and is lost.
    assert err[-2].startswith("queued "), err
    sent = err[-2].split()[1]
    prefix = f"rnnstream produce: all {sent} readings for {daemon.ingest} were left unsent and are "
    prefix += "lost: "
    assert err[-1].startswith(prefix), err
    assert says_which_key_does_not_fit(err[-1].removeprefix(prefix), who), err[-1]
    assert took < produce_cli.LINGER  # it did not wait the linger out


@pytest.mark.parametrize("rate", ["0", "50"])
def test_rnnstream_produce_stops_early_once_the_daemon_refused_its_key(daemon, keys, rate):
    # Unpaced, the queue fills and a send blocks at the high-water mark for good; paced, the run
    # would go on for its whole --duration: either way the refusal ends it within seconds. A
    # subprocess, so that a run that does not stop fails the test instead of hanging it.
    argv = ["synthetic", "--streams", "50", "--rate", rate, "--duration", "60", "--progress", "0"]
    argv += ["--endpoint", daemon.ingest, *curve_argv(keys, "unknown_keys")]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "produce", *argv],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1, done.stderr
    assert "refused this client's CURVE key" in done.stderr.splitlines()[-1], done.stderr


@pytest.mark.parametrize("who", ["unknown_keys", "no_curve"])
def test_rnnstream_consume_with_a_refused_key_says_so_and_exits_1(daemon, keys, who, capsys):
    argv = ["tail", "--endpoint", daemon.publish, "--duration", "20", *curve_argv(keys, who)]
    out = io.StringIO()
    began = time.monotonic()
    code = consume_cli.run(command_line(consume_cli, argv), out=out)
    took = time.monotonic() - began
    err = capsys.readouterr().err.splitlines()

    assert code == 1 and out.getvalue() == ""
    prefix = f"rnnstream consume: no publications from {daemon.publish}: "
    assert len(err) == 1 and err[0].startswith(prefix), err
    assert says_which_key_does_not_fit(err[0].removeprefix(prefix), who), err[0]
    assert took < 10.0  # well before --duration: it did not wait in silence
