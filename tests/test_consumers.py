"""Subscriber client over real sockets and the `rnnstream consume` programs."""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from consumers import cli
from consumers.client import Subscriber
from engine import protocol
from engine.cli import UserError

DEADLINE = 5.0  # seconds any single expectation may take before the test fails


@pytest.fixture
def pub(context):
    """A bound PUB socket standing in for the daemon's publisher; returns (socket, endpoint)."""
    sock = context.socket(zmq.PUB)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)


def pred(stream: str, seq: int, score: float | None = 0.5) -> list[bytes]:
    payload = protocol.encode_prediction(stream, seq, 1700000000.0 + seq, [float(seq)], score)
    return [protocol.prediction_topic(stream), payload]


def alert(stream: str, event: str = "open", **fields: object) -> list[bytes]:
    payload = protocol.encode_alert(
        {
            "stream": stream,
            "seq": 9,
            "ts": 1700000000.0,
            "event": event,
            "score": 0.99,
            "value": [5.0],
            "expected": [1.0],
            "feature": 0,
            "severity": "high",
            **fields,
        }
    )
    return [protocol.alert_topic(stream), payload]


# A close that no reading caused, as the daemon publishes for an evicted stream
NO_READING = dict.fromkeys(
    ("seq", "ts", "score", "value", "expected", "feature", "surprise", "severity", "duration")
)
EVICTED = {**NO_READING, "peak": 1.0, "readings": 2, "reason": "evicted"}


def batch(streams: list[str]) -> list[bytes]:
    n = len(streams)
    predictions = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    scores = np.array([0.25] * (n - 1) + [np.nan], np.float32)
    payload = protocol.encode_prediction_batch(
        streams, list(range(1, n + 1)), [10.0] * n, predictions, scores
    )
    return [protocol.BATCH_TOPIC, payload]


def recv_until(sub: Subscriber, pub_sock: zmq.Socket, frames: list[bytes]) -> tuple[str, dict]:
    """Publish `frames` until the subscriber (joining late) gets something; fail on timeout."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        pub_sock.send_multipart(frames)
        item = sub.recv(timeout=0.05)
        if item is not None:
            return item
    pytest.fail(f"subscriber got nothing within {DEADLINE} s")


def drain(sub: Subscriber) -> None:
    while sub.recv(timeout=0.1) is not None:
        pass


# ----------------------------------------------------------------------------- Subscriber


def test_subscriber_receives_and_decodes_predictions(pub, context):
    sock, endpoint = pub
    with Subscriber(endpoint, context=context) as sub:
        kind, payload = recv_until(sub, sock, pred("pump-7", 1))
        assert kind == "pred"
        assert payload == {
            "stream": "pump-7",
            "seq": 1,
            "ts": 1700000001.0,
            "prediction": [1.0],
            "score": 0.5,
        }


def test_subscriber_recv_returns_none_on_timeout(pub, context):
    _, endpoint = pub
    with Subscriber(endpoint, context=context) as sub:
        assert sub.recv(timeout=0.05) is None


def test_exact_streams_exclude_streams_that_share_the_prefix(pub, context):
    sock, endpoint = pub
    with (
        Subscriber(endpoint, ("pred.",), exact_streams=["pump-7"], context=context) as sub,
        context.socket(zmq.SUB) as raw,
    ):
        # a bare prefix subscription shows the problem the Subscriber solves
        raw.linger = 0
        raw.setsockopt(zmq.SUBSCRIBE, protocol.exact_subscription("pump-7"))
        raw.connect(endpoint)
        assert sub.subscriptions == [b"pred.pump-7"]
        recv_until(sub, sock, pred("pump-7", 0))
        drain(sub)
        for seq in range(1, 4):
            sock.send_multipart(pred("pump-70", seq))
            sock.send_multipart(pred("pump-7", seq))
            sock.send_multipart(pred("pump-8", seq))
        got = []
        while (item := sub.recv(timeout=0.3)) is not None:
            got.append((item[1]["stream"], item[1]["seq"]))
        assert got == [("pump-7", 1), ("pump-7", 2), ("pump-7", 3)]
        raw_streams = set()
        while raw.poll(300):
            raw_streams.add(protocol.decode_publication(*raw.recv_multipart())[1]["stream"])
        assert "pump-70" in raw_streams


def test_exact_streams_cut_batches_down_to_the_wanted_rows(pub, context):
    sock, endpoint = pub
    with Subscriber(endpoint, ("batch.pred",), exact_streams=["b", "d"], context=context) as sub:
        kind, payload = recv_until(sub, sock, batch(["a", "b", "c", "d"]))
        assert kind == "batch"
        assert payload["streams"] == ["b", "d"] and payload["seq"] == [2, 4]
        np.testing.assert_array_equal(payload["prediction"], [[2.0, 3.0], [6.0, 7.0]])
        assert payload["score"][0] == 0.25 and np.isnan(payload["score"][1])
        drain(sub)
        sock.send_multipart(batch(["a", "c"]))  # nothing wanted: dropped entirely
        assert sub.recv(timeout=0.3) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"topics": "alert."}, {"topics": b"alert."}, {"exact_streams": "pump-7"}],
    ids=["topics-str", "topics-bytes", "exact-streams-str"],
)
def test_subscriber_refuses_one_string_where_a_collection_is_meant(pub, context, kwargs):
    # Taken letter by letter, topics="alert." would subscribe to "e" and so yield errors, and
    # exact_streams="pump-7" would keep only streams named "p", "u", ...
    _, endpoint = pub
    with pytest.raises(TypeError, match="collection"):
        Subscriber(endpoint, context=context, **kwargs)


def test_subscriber_skips_and_counts_malformed_publications(pub, context):
    sock, endpoint = pub
    with Subscriber(endpoint, ("pred.",), context=context) as sub:
        recv_until(sub, sock, pred("a", 0))
        drain(sub)
        sock.send_multipart([b"pred.a", b"\xc1 not msgpack"])
        sock.send_multipart([b"pred.a"])  # one frame only
        sock.send_multipart(pred("a", 5))
        kind, payload = sub.recv(timeout=DEADLINE)
        assert payload["seq"] == 5 and sub.malformed == 2


def test_subscriber_counts_an_extra_frame_and_stays_in_step(pub, context):
    sock, endpoint = pub
    with Subscriber(endpoint, ("pred.",), context=context) as sub:
        recv_until(sub, sock, pred("a", 0))
        drain(sub)
        sock.send_multipart([*pred("a", 6), b"extra"])
        sock.send_multipart(pred("a", 7))
        assert sub.recv(timeout=DEADLINE)[1]["seq"] == 6
        assert sub.recv(timeout=DEADLINE)[1]["seq"] == 7
        assert sub.malformed == 1


def test_subscriber_iterates_alerts_and_errors(pub, context):
    sock, endpoint = pub
    rejection = protocol.Rejection(protocol.RejectReason.BAD_VALUES, "no", stream="x")
    with Subscriber(endpoint, ("alert.", "error"), context=context) as sub:
        recv_until(sub, sock, alert("a"))
        drain(sub)
        sock.send_multipart([protocol.ERROR_TOPIC, protocol.encode_error(rejection)])
        sock.send_multipart(alert("a", "close"))
        sock.send_multipart(pred("a", 1))  # not subscribed
        sock.send_multipart(alert("a", "close", **EVICTED))
        it = iter(sub)
        assert next(it) == ("error", {"reason": "bad_values", "detail": "no", "stream": "x"})
        kind, payload = next(it)
        assert kind == "alert" and payload["event"] == "close"
        assert next(it) == ("alert", {"stream": "a", "event": "close", **EVICTED})
        assert sub.recv(timeout=0.2) is None


# ----------------------------------------------------------------------------- CLI


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def run_while_publishing(
    args: argparse.Namespace, sock: zmq.Socket, messages: list[list[bytes]]
) -> str:
    """Run the consumer in a thread, publishing `messages` in a cycle until it stops."""
    out = io.StringIO()
    result: dict = {}

    def target() -> None:
        try:
            result["rc"] = cli.run(args, out=out)
        except BaseException as exc:  # surfaced to the test below
            result["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    i = 0
    while thread.is_alive() and time.monotonic() < deadline:
        sock.send_multipart(messages[i % len(messages)])
        i += 1
        time.sleep(0.002)
    thread.join(DEADLINE)
    if thread.is_alive():
        pytest.fail("consumer did not stop after --count")
    if "exc" in result:
        raise result["exc"]
    assert result["rc"] == 0
    return out.getvalue()


def test_consume_tail_prints_predictions_alerts_and_errors(pub):
    sock, endpoint = pub
    rejection = protocol.Rejection(protocol.RejectReason.NON_FINITE, "NaN", stream="p", row=2)
    messages = [pred("pump-7", 3), alert("pump-7"), [b"error", protocol.encode_error(rejection)]]
    args = parse(["tail", "--endpoint", endpoint, "--count", "3", "--color", "always"])
    lines = run_while_publishing(args, sock, messages).splitlines()
    assert len(lines) == 3
    text = "\n".join(lines)
    assert "pump-7  seq=3  pred=[3]  score=0.5" in text
    assert "\033[1;31m" in text and "ALERT OPEN  pump-7" in text and "severity=high" in text
    assert "ERROR non_finite  stream=p  row=2  NaN" in text


def test_consume_tail_prints_one_line_a_record_whatever_the_stream_id_holds(pub):
    # Stream ids come from producers: a newline in one printed a forged line of its own, and an
    # escape sequence reached the operator's terminal.
    sock, endpoint = pub
    forged = "pump-1\n08:00:00.000  pump-9  seq=1  pred=[0]  score=-\x1b[2K"
    rejection = protocol.Rejection(protocol.RejectReason.BAD_VALUES, "x", stream=forged)
    messages = [pred(forged, 3), alert(forged), [b"error", protocol.encode_error(rejection)]]
    args = parse(["tail", "--endpoint", endpoint, "--count", "3", "--color", "never"])
    lines = run_while_publishing(args, sock, messages).splitlines()
    assert len(lines) == 3 and not any("\x1b" in line for line in lines), lines
    assert all(
        "pump-1\\n08:00:00.000  pump-9  seq=1  pred=[0]  score=-\\x1b[2K" in line for line in lines
    )


def test_a_close_line_says_why_and_shows_the_reading_only_when_one_closed_it():
    closed = {"stream": "p", "event": "close", "peak": 1.0, "readings": 3, "duration": 7.5}
    by_score = {**closed, "reason": "score", "seq": 9, "score": 0.1, "value": [5.0]}
    line = cli.format_record("alert", by_score)
    assert "ALERT CLOSE  p  reason=score  peak=1  readings=3  duration=7.5  seq=9" in line
    assert "value=[5]" in line
    line = cli.format_record("alert", {"stream": "p", "event": "close", **EVICTED})
    assert line.endswith("ALERT CLOSE  p  reason=evicted  peak=1  readings=2  duration=-")
    opened = cli.format_record("alert", {"stream": "p", "event": "open", "seq": 9, "value": [5.0]})
    assert "reason" not in opened and "seq=9" in opened


def test_consume_record_csv_expands_batches(pub, tmp_path):
    sock, endpoint = pub
    out_file = tmp_path / "preds.csv"
    args = parse(["record", "--endpoint", endpoint, "--out", str(out_file), "--count", "3"])
    summary = run_while_publishing(args, sock, [batch(["a", "b", "c"])])
    assert "recorded 3 predictions" in summary
    rows = list(csv.DictReader(out_file.open()))
    assert [(r["stream"], r["seq"], r["y0"], r["y1"]) for r in rows] == [
        ("a", "1", "0.0", "1.0"),
        ("b", "2", "2.0", "3.0"),
        ("c", "3", "4.0", "5.0"),
    ]
    assert rows[0]["score"] == "0.25" and rows[2]["score"] == ""


def test_consume_record_takes_each_prediction_once_from_a_daemon_publishing_both_ways(
    pub, tmp_path
):
    # --publish-mode both: a pass's pred.<stream> messages, then the same rows as a batch.pred
    sock, endpoint = pub
    out_file = tmp_path / "preds.jsonl"
    args = parse(["record", "--endpoint", endpoint, "--out", str(out_file), "--count", "30"])
    run_while_publishing(args, sock, [pred("a", 1), pred("b", 2), batch(["a", "b"])])
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    from_batches = [len(r["prediction"]) == 2 for r in rows]  # batch() rows carry two outputs
    first_pred = from_batches.index(False)  # a late joiner may take one batch before any pred.
    assert not any(from_batches[first_pred:]) and first_pred <= 2
    assert [r["stream"] for r in rows[first_pred:]][:2] in (["a", "b"], ["b", "a"])


def test_consume_record_jsonl_keeps_only_the_chosen_streams(pub, tmp_path):
    sock, endpoint = pub
    out_file = tmp_path / "preds.jsonl"
    args = parse(
        ["record", "--endpoint", endpoint, "--out", str(out_file), "--count", "2",
         "--stream", "pump-7"]
    )  # fmt: skip
    run_while_publishing(args, sock, [pred("pump-70", 1), pred("pump-7", 2)])
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [(r["stream"], r["seq"], r["prediction"]) for r in rows] == [("pump-7", 2, [2.0])] * 2


def test_consume_alerts_appends_jsonl(pub, tmp_path):
    sock, endpoint = pub
    log = tmp_path / "alerts.jsonl"
    log.write_text(json.dumps({"stream": "old"}) + "\n")
    args = parse(["alerts", "--endpoint", endpoint, "--count", "2", "--append", str(log)])
    evicted = alert("a", "close", **EVICTED)
    printed = run_while_publishing(args, sock, [alert("a"), pred("a", 1), evicted])
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[0] == {"stream": "old"} and len(entries) == 3
    assert {e["event"] for e in entries[1:]} <= {"open", "close"}
    assert all(e["stream"] == "a" and e["received"] > 0 for e in entries[1:])
    for e in entries[1:]:
        if e["event"] == "close":
            assert e["reason"] == "evicted" and e["value"] is None
    assert printed.count("ALERT") == 2


def test_consume_stops_after_duration_with_nothing_published(pub):
    _, endpoint = pub
    args = parse(["tail", "--endpoint", endpoint, "--duration", "0.2"])
    out = io.StringIO()
    assert cli.run(args, out=out) == 0 and out.getvalue() == ""


def test_consume_with_no_daemon_says_once_what_it_waits_for(capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    args = parse(["tail", "--endpoint", endpoint, "--duration", "1.6"])
    out = io.StringIO()
    assert cli.run(args, out=out) == 0 and out.getvalue() == ""  # it waits: a daemon may start
    assert capsys.readouterr().err.splitlines() == [
        f"rnnstream consume: waiting for {endpoint}: nothing accepted the connection: is "
        "rnnstream serve running?"
    ]


def test_consume_with_a_daemon_but_no_publications_waits_without_a_word(pub, capsys):
    _, endpoint = pub
    args = parse(["tail", "--endpoint", endpoint, "--duration", "1.2"])
    assert cli.run(args, out=io.StringIO()) == 0
    assert capsys.readouterr().err == ""


def test_consume_rejects_a_count_below_one():
    with pytest.raises(UserError):
        cli.run(parse(["tail", "--count", "0"]))
