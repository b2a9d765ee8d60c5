"""Alerts from a real daemon: an incident whose stream's state goes closes once, saying why.

A stream leaves with its alert open when it ends, is dropped or reset, is evicted (idle, or least
recently used at --max-streams), or a reload discards the alert states; each time the daemon
publishes one `close` with the incident's peak and length and a `reason`, and a stream without an
open alert gets none. The metrics' opens minus closes are the incidents open now.
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest
from daemon_harness import FENCE_PREFIX, RECV_TIMEOUT, DaemonProcess, recv_until, scrape

from engine import protocol
from engine.default_model import default_model_path

# A fresh stream of the built-in model takes QUIET readings quietly (its probation is 300),
# then two new extremes: the first opens an alert (score 1) and the second keeps it open.
QUIET = 310
INCIDENT = [10.0 + math.sin(i / 3) for i in range(QUIET)] + [60.0, 70.0]
T0 = 1.7e9
OPENED_TS = T0 + QUIET
READING_FIELDS = ("seq", "ts", "score", "value", "expected", "feature", "surprise", "severity")


def start(tmp_path_factory, name: str, *args: str) -> DaemonProcess:
    folder = tmp_path_factory.mktemp(name)
    return DaemonProcess(
        default_model_path(),
        folder / "state",
        args=["--checkpoint-every", "0", *args],
        metrics=True,
    ).start()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with start(tmp_path_factory, "alerts") as proc:
        yield proc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Watch:
    """A PUSH socket and a subscriber of alerts and fences on one daemon."""

    def __init__(self, proc: DaemonProcess) -> None:
        self.proc = proc
        self.push = proc.push()
        self.sub = proc.subscriber(("alert.", f"pred.{FENCE_PREFIX}"))

    def open_incident(self, stream: str) -> None:
        """Drive a new stream into an open alert and wait for the open."""
        n = len(INCIDENT)
        self.push.send(
            protocol.encode_batch(
                [stream] * n,
                np.array(INCIDENT).reshape(-1, 1),
                seq=list(range(1, n + 1)),
                ts=(T0 + np.arange(n)).tolist(),
            )
        )
        got = recv_until(
            self.sub,
            lambda kind, p: kind == "alert" and p["stream"] == stream,
            what=f"the alert of {stream} to open",
            daemon=self.proc,
        )
        alert = got[-1][1]
        assert alert["event"] == "open" and alert["seq"] == QUIET + 1, alert
        assert [k for k, p in got[:-1] if k == "alert"] == []

    def calm(self, stream: str) -> None:
        """Give a stream a few readings that open nothing (it is in probation)."""
        self.push.send(protocol.encode_batch([stream] * 5, np.ones((5, 1))))

    def alerts(self) -> list[dict]:
        """Every alert published before a fence sent now."""
        return [p for kind, p in self.proc.until_fence(self.sub, self.push) if kind == "alert"]


def assert_close(alert: dict, stream: str, reason: str, readings: int = 2) -> None:
    assert alert["stream"] == stream and alert["event"] == "close", alert
    assert alert["reason"] == reason and alert["peak"] == 1.0 and alert["readings"] == readings


def assert_no_reading(alert: dict) -> None:
    assert all(alert[key] is None for key in READING_FIELDS), alert
    assert alert["duration"] is None


def open_minus_closed(stats: dict) -> int:
    return stats["alerts"].get("open", 0) - stats["alerts"].get("close", 0)


# ------------------------------------------------------------------------ end, drop, reset


def test_a_stream_that_ends_with_its_alert_open_gets_one_close_with_its_last_reading(daemon):
    watch = Watch(daemon)
    stream, calm = unique("ends"), unique("ends-calm")
    watch.open_incident(stream)
    watch.calm(calm)
    ts = OPENED_TS + 7.5
    watch.push.send(protocol.encode_reading(stream, [80.0], seq=QUIET + 3, ts=ts, end=True))
    watch.push.send(protocol.encode_reading(calm, [1.0], end=True))

    (close,) = watch.alerts()

    assert_close(close, stream, "end", readings=3)  # the ending reading is the incident's too
    assert (close["seq"], close["ts"], close["value"]) == (QUIET + 3, ts, [80.0])
    assert close["score"] == 1.0 and close["feature"] == "value" and close["surprise"] > 0
    assert close["duration"] == 7.5 and close["severity"] in ("minor", "major", "critical")
    assert stream not in daemon.control("streams")["streams"]


def test_drop_closes_an_open_alert_once_and_a_calm_or_unknown_stream_gets_no_close(daemon):
    watch = Watch(daemon)
    stream, calm = unique("dropped"), unique("dropped-calm")
    watch.open_incident(stream)
    watch.calm(calm)
    watch.alerts()  # the calm readings are in

    for name in (stream, calm, stream):
        daemon.control("drop", stream=name)
    (close,) = watch.alerts()

    assert_close(close, stream, "dropped")
    assert_no_reading(close)


@pytest.mark.parametrize("how", ["control", "reading"])
def test_reset_closes_an_open_alert_before_the_stream_starts_afresh(daemon, how):
    watch = Watch(daemon)
    stream, calm = unique(f"reset-{how}"), unique(f"reset-{how}-calm")
    watch.open_incident(stream)
    watch.calm(calm)
    watch.alerts()

    for name in (stream, calm):
        if how == "control":
            assert daemon.control("reset", stream=name)["existed"]
        else:
            watch.push.send(protocol.encode_reading(name, [10.0], seq=1, reset=True))
    (close,) = watch.alerts()

    assert_close(close, stream, "reset")
    assert_no_reading(close)  # the reset reading belongs to the fresh state, not the incident
    assert stream in daemon.control("streams")["streams"]


def test_opens_minus_closes_are_the_open_incidents_stats_and_metrics_serve(daemon):
    watch = Watch(daemon)
    streams = [unique("counted"), unique("counted")]
    before = daemon.stats()
    assert open_minus_closed(before) == before["open_alerts"]
    for stream in streams:
        watch.open_incident(stream)

    stats = daemon.stats()
    assert stats["open_alerts"] == before["open_alerts"] + 2 == open_minus_closed(stats)
    assert scrape(daemon.metrics_port)[("rnnstream_open_alerts", ())] == stats["open_alerts"]

    daemon.control("drop", stream=streams[0])
    watch.push.send(protocol.encode_reading(streams[1], [10.0], end=True))
    assert len(watch.alerts()) == 2
    stats = daemon.stats()
    assert stats["open_alerts"] == before["open_alerts"] == open_minus_closed(stats)
    page = scrape(daemon.metrics_port)
    assert page[("rnnstream_open_alerts", ())] == stats["open_alerts"]
    assert page[("rnnstream_alerts_total", (("event", "close"),))] == stats["alerts"]["close"]


# ------------------------------------------------------------------------------- eviction


def test_an_idle_stream_evicted_with_its_alert_open_gets_one_close(tmp_path_factory):
    with start(tmp_path_factory, "idle", "--idle-timeout", "1.5") as proc:
        watch = Watch(proc)
        stream, calm = unique("idle"), unique("idle-calm")
        watch.open_incident(stream)
        watch.calm(calm)

        got = recv_until(
            watch.sub,
            lambda kind, p: kind == "alert",
            what="the close of the idle stream",
            daemon=proc,
        )
        assert_close(got[-1][1], stream, "evicted")
        assert_no_reading(got[-1][1])
        deadline = time.monotonic() + RECV_TIMEOUT
        while proc.control("health")["streams"]:  # "calm" goes too, in this sweep or the next
            assert time.monotonic() < deadline, "the calm stream was never evicted"
            time.sleep(0.1)
        assert watch.alerts() == []
        stats = proc.stats()
        assert stats["evicted_idle"] == 2 and stats["alerts"] == {"open": 1, "close": 1}
        assert stats["open_alerts"] == 0


def test_streams_evicted_at_max_streams_close_only_their_open_alerts(tmp_path_factory):
    with start(tmp_path_factory, "lru", "--max-streams", "3") as proc:
        watch = Watch(proc)
        old, calm = unique("lru-old"), unique("lru-calm")
        watch.open_incident(old)
        watch.calm(calm)
        assert watch.alerts() == []  # the fence took the third place, then ended

        watch.calm(unique("lru-new"))
        watch.calm(unique("lru-new"))  # evicts "old", the least recently used
        (close,) = watch.alerts()  # and the fence evicts "calm"

        assert_close(close, old, "evicted")
        assert_no_reading(close)
        stats = proc.stats()
        assert stats["evicted_lru"] == 2 and stats["open_alerts"] == 0
        assert stats["alerts"] == {"open": 1, "close": 1}


# --------------------------------------------------------------------------------- reload


def test_reload_keeps_open_alerts_with_the_states_and_reload_reset_closes_them(tmp_path_factory):
    with start(tmp_path_factory, "reload") as proc:
        watch = Watch(proc)
        streams = [unique("reload"), unique("reload")]
        for stream in streams:
            watch.open_incident(stream)
        watch.calm(unique("reload-calm"))

        assert proc.control("reload")["ok"]
        assert watch.alerts() == []  # and the calm readings are in
        kept = proc.stats()
        assert kept["open_alerts"] == 2
        assert kept["streams"] == 3 and kept["evicted_reload"] == 0  # the states carried over
        assert proc.control("reload", reset=True)["ok"]
        closes = watch.alerts()

        assert [c["stream"] for c in closes] == streams
        for close, stream in zip(closes, streams, strict=True):
            assert_close(close, stream, "reload")
            assert_no_reading(close)
        stats = proc.stats()
        assert stats["open_alerts"] == 0 and stats["alerts"] == {"open": 2, "close": 2}
        # The reset forgot every stream: each is an eviction for "reload", none idle or lru
        assert stats["streams"] == 0 and stats["evictions"] == stats["evicted_reload"] == 3
        page = scrape(proc.metrics_port)
        for cause, count in (("reload", 3), ("idle", 0), ("lru", 0)):
            assert page[("rnnstream_evictions_total", (("cause", cause),))] == count
