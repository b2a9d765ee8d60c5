"""engine.process: endpoints on this host for child daemons (demo, benchmarks, tests), and
stopping them in order."""

from __future__ import annotations

import shutil
import time

import pytest
import zmq

from engine.ctl import control
from engine.keys import generate
from engine.model import Model
from engine.process import TRANSPORTS, ServeProcess, local_endpoints
from producers.client import Producer

DEADLINE = 10.0  # seconds any single expectation may take before the test fails


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_local_endpoints_are_distinct_and_can_all_be_bound_at_once(transport, tmp_path):
    endpoints = local_endpoints(transport, tmp_path, 3) + local_endpoints(transport, tmp_path, 3)
    assert len(set(endpoints)) == 6
    context = zmq.Context()
    try:
        for endpoint in endpoints:
            sock = context.socket(zmq.PULL)
            sock.linger = 0
            sock.bind(endpoint)  # raises if taken or not a valid endpoint
    finally:
        context.destroy(linger=0)


def test_tcp_endpoints_are_on_the_loopback_and_ipc_ones_in_the_folder(tmp_path):
    assert all(e.startswith("tcp://127.0.0.1:") for e in local_endpoints("tcp", tmp_path, 2))
    for endpoint in local_endpoints("ipc", tmp_path, 2):
        assert endpoint.startswith(f"ipc://{tmp_path}/") and endpoint.endswith(".sock")


def test_an_unknown_transport_is_refused(tmp_path):
    with pytest.raises(ValueError, match="transport must be one of tcp, ipc, not 'udp'"):
        local_endpoints("udp", tmp_path, 1)


def test_stop_ends_a_curve_daemon_in_order_with_a_snapshot(tmp_path):
    # Its control socket admits no client without keys, so stop() must not need it.
    certs = tmp_path / "certs"
    generate(certs, ["server", "client"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(certs / "client.key", allowed)
    model = tmp_path / "m.npz"
    Model.random("gru", 2, 4, seed=0).save(model)
    curve = [
        "--curve-secret-key",
        str(certs / "server.key_secret"),
        "--curve-clients",
        str(allowed),
    ]
    server = ServeProcess(model, tmp_path, extra=curve).start()
    keys = {
        "server_public_key": certs / "server.key",
        "client_secret_key": certs / "client.key_secret",
    }
    try:
        with Producer(server.ingest, linger=DEADLINE, **keys) as producer:
            producer.send("kept", [1.0, 2.0])
        deadline = time.monotonic() + DEADLINE
        while "kept" not in control(server.control, "streams", **keys)["streams"]:
            assert time.monotonic() < deadline, "the daemon never took the reading"
            time.sleep(0.05)
        began = time.monotonic()
        code = server.stop()
        took = time.monotonic() - began
    finally:
        server.kill()
    assert code == 0, server.log_text()[-2000:]
    assert took < 5.0  # no control timeout waited out first
    assert "why=shutdown streams=1" in server.log_text()
    (state,) = tmp_path.glob("state-*/state.npz")
    assert state.is_file()
