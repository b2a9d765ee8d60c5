"""engine.process: endpoints on this host for child daemons (demo, benchmarks, tests)."""

from __future__ import annotations

import pytest
import zmq

from engine.process import TRANSPORTS, local_endpoints


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
