"""Producer client over real sockets, synthetic signals, CSV replay and `rnnstream produce`."""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from engine import protocol
from engine.cli import UserError
from producers import cli
from producers.client import Producer
from producers.csv_replay import Row, merge, paced, parse_timestamp, read_csv
from producers.synthetic import ANOMALY_KINDS, SensorSignal, SyntheticFleet, series

NAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "nab" / "data"
TIMEOUT_MS = 5000
DEADLINE = 10.0  # seconds any single expectation may take before the test fails


@pytest.fixture
def pull(context):
    """A bound PULL socket standing in for the daemon's ingest; returns (socket, endpoint)."""
    sock = context.socket(zmq.PULL)
    sock.linger = 0
    sock.rcvtimeo = TIMEOUT_MS
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)


def receive(sock: zmq.Socket) -> bytes:
    try:
        return sock.recv()
    except zmq.Again:
        pytest.fail(f"no message on the ingest socket within {TIMEOUT_MS} ms")


# ----------------------------------------------------------------------------- Producer


def test_producer_send_numbers_each_stream_from_one(pull, context):
    sock, endpoint = pull
    with Producer(endpoint, context=context, linger=0) as producer:
        assert producer.send("a", [1.0, 2.0]) == 1
        assert producer.send("b", np.array([3.0, 4.0])) == 1
        assert producer.send("a", [5, 6], ts=123.5, reset=True) == 2
        assert producer.send("a", [7.0, 8.0], end=True) == 3
        got = [protocol.decode_ingest(receive(sock), 2) for _ in range(4)]
    assert all(rej == [] for _, rej in got)
    readings = [r for r, _ in got]
    assert [(r.streams[0], r.seq[0]) for r in readings] == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    assert readings[2].ts == [123.5] and readings[2].reset == [True]
    assert readings[3].end == [True] and readings[0].ts[0] > 1.6e9  # defaults to now
    np.testing.assert_array_equal(readings[1].values, [[3.0, 4.0]])


def test_producer_send_takes_one_value_as_any_numpy_scalar_for_a_one_input_model(pull, context):
    # what iterating a 1-D array of a univariate series gives: np.float32 is not a Python float
    sock, endpoint = pull
    values = [np.float32(1.5), np.float64(2.5), np.int64(3), np.array([4.5], np.float32)[0]]
    with Producer(endpoint, context=context, linger=0) as producer:
        assert [producer.send("a", value) for value in values] == [1, 2, 3, 4]
        got = [protocol.decode_ingest(receive(sock), 1) for _ in values]
    assert all(rejections == [] for _, rejections in got)
    assert [readings.values[0, 0] for readings, _ in got] == [1.5, 2.5, 3.0, 4.5]


def test_producer_forgets_an_ended_stream_so_it_starts_again_at_seq_one(pull, context):
    sock, endpoint = pull
    x = np.zeros((3, 2), np.float32)
    with Producer(endpoint, context=context, linger=0) as producer:
        assert producer.send("a", [0.0, 0.0]) == 1
        assert producer.send("a", [0.0, 0.0], end=True) == 2
        assert producer.last_seq("a") == 0 and producer.send("a", [0.0, 0.0]) == 1
        # in a batch, a stream's last row decides: "b" ends, "a" ends then goes on
        assert producer.send_many(["a", "b", "a"], x, end=[True, True, False]) == [2, 1, 3]
        assert producer.last_seq("a") == 3 and producer.last_seq("b") == 0
        for _ in range(4):
            receive(sock)


def test_producer_send_many_gives_per_row_consecutive_seqs(pull, context):
    sock, endpoint = pull
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    with Producer(endpoint, context=context, linger=0) as producer:
        producer.send("a", [0.0, 0.0])
        assert producer.send_many(["a", "b", "a", "c"], x, ts=[1.0, 2.0, 3.0, 4.0]) == [2, 1, 3, 1]
        readings, rejections = protocol.decode_ingest(receive(sock), 2)
        readings, rejections = protocol.decode_ingest(receive(sock), 2)
        assert producer.last_seq("a") == 3 and producer.sent_readings == 5
        assert producer.send_many(["c", "d", "a"], x[:3]) == [2, 1, 4]  # each stream once
        assert [producer.last_seq(s) for s in "abcd"] == [4, 1, 2, 1]
    assert rejections == []
    assert readings.streams == ["a", "b", "a", "c"] and readings.seq_list() == [2, 1, 3, 1]
    assert readings.ts_list() == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(readings.values, x)


@pytest.mark.parametrize("column", ["ts", "reset", "end"])
def test_producer_send_many_refuses_a_column_of_another_length_before_sending(
    pull, context, column
):
    # The daemon drops such a batch whole (an `error` publication only): refuse it here, with
    # nothing sent and no seq used up, so a corrected retry is numbered as if it were the first.
    sock, endpoint = pull
    short = {"ts": [1.0], "reset": [False], "end": [False]}[column]
    with Producer(endpoint, context=context, linger=0) as producer:
        with pytest.raises(ValueError, match=f"{column} has 1 entries for 2 streams"):
            producer.send_many(["a", "b"], [[1.0], [2.0]], **{column: short})
        assert producer.last_seq("a") == 0 and producer.sent_messages == 0
        assert producer.send_many(["a", "b"], [[1.0], [2.0]], **{column: short * 2}) == [1, 1]
        readings, rejections = protocol.decode_ingest(receive(sock), 1)
    assert rejections == [] and readings.seq_list() == [1, 1]


def test_producer_send_many_refuses_a_message_over_the_daemons_size_limit(pull, context):
    # ZeroMQ would disconnect the producer and drop the message, with no error anywhere
    sock, endpoint = pull
    over = np.zeros((2, protocol.DEFAULT_MAX_FRAME_BYTES // 8 + 1), np.float32)
    with Producer(endpoint, context=context, linger=0) as producer:
        with pytest.raises(ValueError, match="over the daemon's limit of 16777216"):
            producer.send_many(["a", "b"], over)
        assert producer.last_seq("a") == 0 and producer.sent_messages == 0
        assert producer.send_many(["a", "b"], over[:, :-8]) == [1, 1]  # just under: sent
        readings, rejections = protocol.decode_ingest(receive(sock), over.shape[1] - 8)
    assert rejections == [] and readings.seq_list() == [1, 1]


def send_until_it_goes(send, *args, timeout: float = TIMEOUT_MS / 1000):
    """Call `send(*args)` again while it raises zmq.Again (the queue is full); return its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return send(*args)
        except zmq.Again:
            if time.monotonic() > deadline:
                pytest.fail(f"still at the high-water mark after {timeout} s")


def test_producer_failed_send_uses_up_no_seq_so_a_retry_leaves_no_gap(context):
    # Bound but not listening, the port refuses connections: nothing can be delivered until the
    # "daemon" binds it below. (A closed ZeroMQ socket would not do: it closes in the
    # background, and may still accept the producer's connection.)
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.bind(("127.0.0.1", 0))
    endpoint = f"tcp://127.0.0.1:{reserved.getsockname()[1]}"
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    producer = Producer(endpoint, context=context, hwm=1, linger=0, send_timeout=0.05)
    with reserved, producer:
        assert producer.send("a", [0.0]) == 1  # queued: the one message the hwm lets wait
        with pytest.raises(zmq.Again):
            producer.send("a", [1.0])
        with pytest.raises(zmq.Again):
            producer.send_many(["a", "b"], x[1:])  # each stream once
        with pytest.raises(zmq.Again):
            producer.send_many(["a", "b", "a"], x)  # a stream repeated
        with pytest.raises(ValueError):
            producer.send("a", [1.0], ts="soon")  # does not encode
        with pytest.raises(ValueError):
            producer.send_many(["a", "b"], x)  # 3 rows for 2 streams
        assert producer.last_seq("a") == 1 and producer.last_seq("b") == 0
        assert producer.sent_messages == producer.sent_readings == 1
        reserved.close()
        daemon = context.socket(zmq.PULL)
        daemon.linger = 0
        daemon.rcvtimeo = TIMEOUT_MS
        daemon.bind(endpoint)
        try:
            assert send_until_it_goes(producer.send, "a", [1.0]) == 2
            assert send_until_it_goes(producer.send_many, ["a", "b", "a"], x) == [3, 1, 4]
            got = [protocol.decode_ingest(receive(daemon), 1)[0] for _ in range(3)]
        finally:
            daemon.close(linger=0)
    assert [r.seq_list() for r in got] == [[1], [2], [3, 1, 4]]
    assert [producer.last_seq(s) for s in "ab"] == [4, 1]


def free_endpoint() -> str:
    """Return a loopback endpoint nothing listens on (a port that was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_producer_close_says_why_readings_were_left_when_nothing_listens():
    producer = Producer(free_endpoint(), linger=0.3)
    producer.send("a", [1.0])
    began = time.monotonic()
    problem = producer.close()
    waited = time.monotonic() - began
    assert problem is not None and not problem.handshake_failed
    assert str(problem) == "nothing accepted the connection: is rnnstream serve running?"
    assert 0.3 <= waited < 0.3 + DEADLINE
    assert producer.close() is problem  # closing again says the same
    assert producer.lost_readings == producer.sent_readings == 1  # nothing got through


def test_producer_that_sent_nothing_closes_at_once_with_nothing_left():
    producer = Producer(free_endpoint(), linger=5.0)
    assert producer.connection_problem() is not None  # nothing listens...
    began = time.monotonic()
    assert producer.close() is None  # ...but nothing was queued
    assert time.monotonic() - began < 1.0


def test_producer_that_got_through_reports_no_problem(pull):
    sock, endpoint = pull
    producer = Producer(endpoint, linger=5.0)  # a context of its own: close times the flush
    producer.send("a", [1.0])
    assert producer.connection_problem(wait=DEADLINE) is None
    assert producer.close() is None
    assert producer.lost_readings == 0
    readings, _ = protocol.decode_ingest(receive(sock), 1)
    assert readings.streams == ["a"]


def test_producer_after_the_daemon_hung_up_reports_only_readings_it_still_held(pull):
    sock, endpoint = pull
    delivered, stranded = Producer(endpoint, linger=0.3), Producer(endpoint, linger=0.3)
    for producer in (delivered, stranded):
        producer.send("a", [1.0])
        receive(sock)
        assert producer.connection_problem(wait=DEADLINE) is None
    sock.close(linger=0)  # the daemon stops
    deadline = time.monotonic() + DEADLINE
    while None in (problems := [p.connection_problem() for p in (delivered, stranded)]):
        assert time.monotonic() < deadline, "the hang-up was never seen"
        time.sleep(0.01)
    # Sent once the hang-up is seen (sent before, it could still go into the dead connection):
    stranded.send("a", [2.0])  # queued, and nothing takes it any more
    for problem in problems:
        assert problem.hung_up and not problem.handshake_failed
        assert "the daemon hung up" in problem.reason
    assert delivered.close() is None  # everything it sent had arrived
    assert stranded.close() == problems[1]
    assert delivered.lost_readings == 0
    assert stranded.lost_readings is None  # ZeroMQ does not tell how many it still held


def test_producer_rejects_a_non_string_stream(pull, context):
    _, endpoint = pull
    with Producer(endpoint, context=context, linger=0) as producer:
        with pytest.raises(TypeError):
            producer.send(7, [1.0])


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_producer_talks_to_a_curve_server(context, tmp_path):
    import zmq.auth

    server_public_file, server_secret_file = zmq.auth.create_certificates(tmp_path, "server")
    public, secret = zmq.auth.load_certificate(server_secret_file)
    server = context.socket(zmq.PULL)
    server.linger = 0
    server.rcvtimeo = TIMEOUT_MS
    server.curve_server = True
    server.curve_publickey = public
    server.curve_secretkey = secret
    port = server.bind_to_random_port("tcp://127.0.0.1")
    try:
        endpoint = f"tcp://127.0.0.1:{port}"
        with Producer(
            endpoint, context=context, linger=0, server_public_key=server_public_file
        ) as producer:
            producer.send("secure", [1.0])
            readings, _ = protocol.decode_ingest(receive(server), 1)
        assert readings.streams == ["secure"]
    finally:
        server.close(linger=0)


def test_producer_refuses_client_keys_without_a_server_key(context):
    with pytest.raises(ValueError):
        Producer("tcp://127.0.0.1:1", context=context, client_secret_key="x" * 40)


# ----------------------------------------------------------------------------- synthetic


def test_series_is_deterministic_per_seed_and_differs_across_seeds():
    a, wa = series(3000, seed=7, anomaly_rate=1 / 300)
    b, wb = series(3000, seed=7, anomaly_rate=1 / 300)
    c, _ = series(3000, seed=8, anomaly_rate=1 / 300)
    np.testing.assert_array_equal(a, b)
    assert wa == wb
    assert not np.array_equal(a, c)


def test_signal_does_not_depend_on_how_samples_are_requested():
    whole = SensorSignal(3, 1, anomaly_rate=1 / 200)
    parts = SensorSignal(3, 1, anomaly_rate=1 / 200)
    x = whole.generate(2000)
    y = np.concatenate([parts.generate(n) for n in (1, 99, 700, 1, 1199)])
    np.testing.assert_array_equal(x, y)
    assert whole.labels == parts.labels


def test_labels_lie_inside_the_series_and_cover_every_kind():
    kinds_seen = set()
    for seed in range(6):
        values, windows = series(4000, seed=seed, anomaly_rate=1 / 250)
        assert values.shape == (4000,) and np.isfinite(values).all()
        for w in windows:
            assert 0 <= w.start <= w.end < 4000 and w.kind in ANOMALY_KINDS
            kinds_seen.add(w.kind)
        starts = [w.start for w in windows]
        assert starts == sorted(starts)
        assert all(a.end < b.start for a, b in zip(windows, windows[1:], strict=False))
    assert kinds_seen == set(ANOMALY_KINDS)


def test_injected_anomalies_change_the_signal_where_labelled():
    clean, none = series(3000, seed=11, anomaly_rate=0.0)
    dirty, windows = series(3000, seed=11, anomaly_rate=1 / 300)
    assert none == [] and windows
    inside = np.zeros(3000, bool)
    for w in windows:
        inside[w.start : w.end + 1] = True
        seg = dirty[w.start : w.end + 1]
        if w.kind == "dropout":
            assert (seg == 0).all()
        elif w.kind == "flatline":
            assert (seg == seg[0]).all()
        else:
            assert not np.array_equal(seg, clean[w.start : w.end + 1]), w
    # outside the windows the anomalies leave the signal alone
    np.testing.assert_array_equal(dirty[~inside], clean[~inside])


def test_normal_behaviour_has_a_daily_cycle():
    period = 96
    values, _ = series(period * 28, seed=2, period=period, anomaly_rate=0.0, index=0)
    x = values - values.mean()
    lag_day = np.corrcoef(x[:-period], x[period:])[0, 1]
    lag_half = np.corrcoef(x[: -period // 2], x[period // 2 :])[0, 1]
    assert lag_day > lag_half


def test_streams_have_varied_character():
    signals = [SensorSignal(0, i) for i in range(30)]
    assert len({s.profile.family for s in signals}) == 3
    levels = [s.profile.base for s in signals]
    assert max(levels) / max(min(abs(v) for v in levels), 1e-9) > 10


def test_fleet_readings_match_the_per_stream_signals_and_labels_have_started():
    fleet = SyntheticFleet(4, seed=5, anomaly_rate=1 / 50, block=16)
    ticks = [fleet.next_readings() for _ in range(200)]
    streams, values = ticks[0]
    assert streams == ["sensor-0000", "sensor-0001", "sensor-0002", "sensor-0003"]
    assert values.shape == (4, 1) and values.dtype == np.float32
    matrix = np.stack([v[:, 0] for _, v in ticks])
    alone = SensorSignal(5, 2, anomaly_rate=1 / 50).generate(200).astype(np.float32)
    np.testing.assert_array_equal(matrix[:, 2], alone)
    assert fleet.labels and all(a.start < 200 and a.stream in streams for a in fleet.labels)
    again = SyntheticFleet(4, seed=5, anomaly_rate=1 / 50)
    np.testing.assert_array_equal(again.next_block(200).astype(np.float32), matrix)


def test_synthetic_rejects_unknown_kinds():
    with pytest.raises(ValueError):
        SensorSignal(kinds=("earthquake",))


# ----------------------------------------------------------------------------- CSV replay


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2015-02-26 21:42:53", 1424986973.0),
        ("2015-02-26T21:42:53", 1424986973.0),
        ("2015-02-26T21:42:53Z", 1424986973.0),
        ("2015-02-26T23:42:53+02:00", 1424986973.0),
        ("2015-02-26 21:42:53.5", 1424986973.5),
        ("1424986973", 1424986973.0),
        (" 1424986973.25 ", 1424986973.25),
    ],
)
def test_parse_timestamp_accepts_the_documented_formats(text, epoch):
    assert parse_timestamp(text) == epoch


@pytest.mark.parametrize("text", ["yesterday", "", "nan", "26/02/2015"])
def test_parse_timestamp_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_read_csv_uses_the_file_stem_and_sorts_by_time(tmp_path):
    path = tmp_path / "machine_temp.csv"
    path.write_text(
        "timestamp,value\n2020-01-01 00:10:00,3\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n"
    )
    rows = read_csv(path)
    assert [r.values for r in rows] == [(1.0,), (2.0,), (3.0,)]
    assert {r.stream for r in rows} == {"machine_temp"}
    assert rows[1].ts - rows[0].ts == 300


def test_read_csv_ignores_a_byte_order_mark_before_the_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("\ufefftimestamp,value\n2020-01-01 00:05:00,2\n2020-01-01 00:00:00,1\n")
    rows = read_csv(path)
    assert rows == [Row(1577836800.0, "excel", (1.0,)), Row(1577837100.0, "excel", (2.0,))]


def test_read_csv_with_stream_and_several_value_columns(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text(
        "id,time,temp,rpm,note\np1,100,20.5,1000,x\np2,100,21.0,1100,y\np1,50,19.0,900,z\n\n"
    )
    rows = read_csv(path, stream_column="id", time_column="time", value_columns=["temp", "rpm"])
    assert rows == [
        Row(50.0, "p1", (19.0, 900.0)),
        Row(100.0, "p1", (20.5, 1000.0)),
        Row(100.0, "p2", (21.0, 1100.0)),
    ]


def test_read_csv_finds_the_time_column_as_train_and_report_do(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text("sensor,time,value\npump-7,100,1.5\npump-8,50,2.5\n")
    rows = read_csv(path, stream_column="sensor")  # no --time-column: "time" is found
    assert rows == [Row(50.0, "pump-8", (2.5,)), Row(100.0, "pump-7", (1.5,))]
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("when,value\n100,1.5\n")
    with pytest.raises(ValueError, match="no column named like a time.*--time-column"):
        read_csv(nameless)
    assert read_csv(nameless, time_column="when") == [Row(100.0, "nameless", (1.5,))]


def test_read_csv_names_the_file_and_line_of_a_bad_cell(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,oops\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3"):
        read_csv(path)
    with pytest.raises(ValueError, match="no column 'when'"):
        read_csv(path, time_column="when")


def test_read_csv_calls_an_empty_cell_a_missing_value_not_a_column_of_ids(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,\n")
    with pytest.raises(ValueError) as caught:
        read_csv(path)
    assert "gap.csv:3: column 'value' has an empty cell" in str(caught.value)
    assert "--stream-column" not in str(caught.value)


def test_merge_interleaves_files_in_time_order():
    a = [Row(1.0, "a", (1.0,)), Row(3.0, "a", (3.0,))]
    b = [Row(2.0, "b", (2.0,)), Row(3.0, "b", (4.0,))]
    assert [(r.ts, r.stream) for r in merge(a, b)] == [
        (1.0, "a"),
        (2.0, "b"),
        (3.0, "a"),
        (3.0, "b"),
    ]


class FakeClock:
    """A clock that only moves when slept on, recording each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


ROWS = [Row(t, "s", (float(t),)) for t in (0.0, 60.0, 60.0, 180.0, 300.0)]


def test_paced_as_fast_as_possible_never_sleeps_and_groups_equal_times():
    clock = FakeClock()
    groups = list(paced(ROWS, speed=None, clock=clock, sleep=clock.sleep))
    assert [[r.ts for r in g] for g in groups] == [[0.0], [60.0, 60.0], [180.0], [300.0]]
    assert clock.sleeps == []


def test_paced_speed_up_divides_the_gaps_between_timestamps():
    clock = FakeClock()
    emitted = []
    for group in paced(ROWS, speed=60.0, clock=clock, sleep=clock.sleep):
        emitted.append((clock.now - 1000.0, group[0].ts))
    assert emitted == [(0.0, 0.0), (1.0, 60.0), (3.0, 180.0), (5.0, 300.0)]
    assert sum(clock.sleeps) == pytest.approx(5.0)


def test_paced_keeps_the_schedule_when_the_consumer_is_slow():
    clock = FakeClock()
    times = []
    for _ in paced(ROWS, speed=1.0, clock=clock, sleep=clock.sleep):
        times.append(clock.now - 1000.0)
        clock.now += 50.0  # the consumer takes 50 s per group
    assert times == [0.0, 60.0, 180.0, 300.0]


def test_paced_max_gap_caps_long_waits():
    clock = FakeClock()
    list(paced(ROWS, speed=1.0, clock=clock, sleep=clock.sleep, max_gap=10.0))
    assert clock.sleeps == [10.0, 10.0, 10.0]


@pytest.mark.parametrize(
    "pacing",
    [
        {"speed": math.nan},
        {"speed": math.inf},
        {"speed": 0.0},
        {"max_gap": math.nan},
        {"max_gap": math.inf},
        {"max_gap": -1.0},
    ],
)
def test_paced_refuses_a_speed_or_max_gap_that_is_not_a_finite_number_in_range(pacing):
    clock = FakeClock()
    with pytest.raises(ValueError, match="must be a finite number"):
        list(paced(ROWS, clock=clock, sleep=clock.sleep, **pacing))


def test_paced_real_clock_with_a_large_speed_up_finishes_quickly():
    rows = [Row(float(t), "s", (1.0,)) for t in range(0, 500, 100)]
    assert len(list(paced(rows, speed=1e5))) == 5


def test_nab_file_reads_as_one_stream_in_order():
    path = NAB / "realKnownCause" / "machine_temperature_system_failure.csv"
    if not path.exists():
        path = next(iter(sorted(NAB.glob("*/*.csv"))), None)
    if path is None:
        pytest.skip("no NAB data beside the checkout")
    rows = read_csv(path)
    assert len(rows) > 1000 and {r.stream for r in rows} == {path.stem}
    ts = np.array([r.ts for r in rows])
    assert (np.diff(ts) >= 0).all()


# ----------------------------------------------------------------------------- CLI


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def drain(sock: zmq.Socket, n_inputs: int = 1) -> list[protocol.Readings]:
    out = []
    while sock.poll(200):
        readings, rejections = protocol.decode_ingest(sock.recv(), n_inputs)
        assert rejections == []
        out.append(readings)
    return out


def test_produce_synthetic_sends_one_batch_per_tick_and_writes_labels(pull, tmp_path, capsys):
    sock, endpoint = pull
    labels = tmp_path / "labels.jsonl"
    args = parse(
        [
            "synthetic",
            "--streams", "3",
            "--rate", "0",
            "--ticks", "400",
            "--anomaly-rate", "0.02",
            "--labels", str(labels),
            "--endpoint", endpoint,
        ]
    )  # fmt: skip
    assert cli.run(args) == 0
    batches = drain(sock)
    assert len(batches) == 400
    assert batches[0].streams == ["sensor-0000", "sensor-0001", "sensor-0002"]
    assert [b.seq[0] for b in batches] == list(range(1, 401))
    expected = SyntheticFleet(3, 0, anomaly_rate=0.02).next_block(400).astype(np.float32)
    np.testing.assert_array_equal(np.stack([b.values[:, 0] for b in batches]), expected)
    written = [json.loads(line) for line in labels.read_text().splitlines()]
    assert written and all(0 <= w["start"] < 400 for w in written)
    assert "sent 1200 readings in 400 messages" in capsys.readouterr().err


def test_produce_synthetic_single_sends_one_message_per_reading(pull):
    sock, endpoint = pull
    args = parse(["synthetic", "--streams", "2", "--rate", "0", "--ticks", "3", "--single"])
    args.endpoint = endpoint
    assert cli.run(args) == 0
    got = drain(sock)
    assert [(r.streams[0], r.seq[0]) for r in got] == [
        ("sensor-0000", 1),
        ("sensor-0001", 1),
        ("sensor-0000", 2),
        ("sensor-0001", 2),
        ("sensor-0000", 3),
        ("sensor-0001", 3),
    ]


def test_produce_synthetic_stops_after_duration(pull):
    sock, endpoint = pull
    args = parse(["synthetic", "--streams", "1", "--rate", "20", "--duration", "0.3"])
    args.endpoint = endpoint
    assert cli.run(args) == 0
    assert 1 <= len(drain(sock)) <= 10


def test_produce_csv_replays_files_in_time_order_with_original_timestamps(pull, tmp_path):
    sock, endpoint = pull
    (tmp_path / "a.csv").write_text(
        "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:10:00,3\n"
    )
    (tmp_path / "b.csv").write_text(
        "timestamp,value\n2020-01-01 00:05:00,2\n2020-01-01 00:10:00,4\n"
    )
    args = parse(
        ["csv", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--speed", "1e6", "--end"]
    )
    args.endpoint = endpoint
    assert cli.run(args) == 0
    got = drain(sock)
    rows = [
        (s, v[0], t, e)
        for r in got
        for s, v, t, e in zip(r.streams, r.values, r.ts, r.end, strict=True)
    ]
    t0 = parse_timestamp("2020-01-01 00:00:00")
    assert rows == [
        ("a", 1.0, t0, False),
        ("b", 2.0, t0 + 300, False),
        ("a", 3.0, t0 + 600, True),
        ("b", 4.0, t0 + 600, True),
    ]
    assert len(got) == 3  # the two readings at 00:10 go as one batch


def test_produce_csv_reports_a_missing_file_as_a_user_error(tmp_path):
    args = parse(["csv", str(tmp_path / "nope.csv"), "--as-fast-as-possible"])
    with pytest.raises(UserError, match="no such file"):
        cli.run(args)


def test_produce_csv_speed_and_as_fast_as_possible_are_exclusive():
    with pytest.raises(SystemExit):
        parse(["csv", "x.csv", "--speed", "2", "--as-fast-as-possible"])


@pytest.mark.parametrize("source", ["synthetic", "csv"])
def test_produce_to_no_daemon_says_readings_were_left_unsent_and_exits_1(
    source, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "LINGER", 0.3, raising=False)  # instead of seconds per test
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    if source == "synthetic":
        argv = ["synthetic", "--streams", "2", "--rate", "0", "--ticks", "3"]
    else:
        rows = "".join(f"2020-01-01 00:00:0{i},{i}\n" for i in range(6))
        (tmp_path / "a.csv").write_text("timestamp,value\n" + rows)
        argv = ["csv", str(tmp_path / "a.csv"), "--as-fast-as-possible"]
    assert cli.run(parse([*argv, "--endpoint", endpoint])) == 1
    err = capsys.readouterr().err.splitlines()
    # Handed to ZeroMQ but never delivered: queued, not sent.
    assert len(err) == 2 and err[0].startswith("queued 6 readings in "), err
    assert err[1] == (
        f"rnnstream produce: all 6 readings for {endpoint} were left unsent and are lost: "
        "nothing accepted the connection: is rnnstream serve running?"
    )


def test_produce_unpaced_to_no_daemon_stops_at_its_duration_though_the_queue_is_full():
    # 100 streams unpaced fill the queue (high-water mark 100,000 messages) in well under a
    # second; a send held up there must not outlast --duration. A subprocess, so that a run that
    # does not stop fails the test instead of hanging it.
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    argv = ["synthetic", "--streams", "100", "--rate", "0", "--duration", "1", "--single"]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "produce", *argv, "--endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "nothing accepted the connection: is rnnstream serve running?"
    )
