"""`rnnstream bench e2e` (engine/bench/e2e.py): its plumbing against a real daemon and its
report's arithmetic. A tiny run checks every prediction is counted and every row reported, not
its speed."""

from __future__ import annotations

import argparse
import os
import re
import time

import msgpack
import numpy as np
import pytest
import zmq

from engine import protocol
from engine.bench import e2e as bench_e2e
from engine.bench.e2e import (
    Harness,
    Pacing,
    Settings,
    SingleReadingLoad,
    _result,
    _steal_share,
    markdown_report,
)
from engine.cli import UserError
from engine.process import ServeProcess, free_ports


def test_bench_single_reading_load_sends_what_producer_send_would():
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = 5000
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    streams = ["a", "b", "ç" * 40]
    pool = np.arange(64 * 3, dtype=np.float32).reshape(64, 3) / 7
    load = SingleReadingLoad(context, f"tcp://127.0.0.1:{port}", streams, pool)
    try:
        before = time.time()
        sums = [load.send(7, 0), load.send(2, 7)]
        after = time.time()
        frames = [pull.recv() for _ in range(9)]
    finally:
        load.close()
        pull.close(linger=0)
        context.term()
    seqs = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert sums == [sum(seqs[:7]), sum(seqs[7:])]
    for i, frame in enumerate(frames):
        ts = msgpack.unpackb(frame)["ts"]
        assert before <= ts <= after
        values = [float(v) for v in pool[i]]
        assert frame == protocol.encode_reading(streams[i % 3], values, seq=seqs[i], ts=ts)


def test_bench_e2e_tiny_run_reports_every_phase_with_nothing_lost(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_e2e.add_arguments(parser)
    out = tmp_path / "e2e.md"
    args = parser.parse_args(
        ["--streams", "40", "--producers", "2", "--single-readings", "400"]
        + ["--batch-readings", "2000", "--batch-size", "64", "--latency-seconds", "0.2"]
        + ["--baseline", "off", "--max-runs", "3", "--stall-seconds", "0.2", "--out", str(out)]
    )
    assert bench_e2e.run(args) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert "- the machine's own stalls, just before (a spinner on every core for 0.2 s" in printed
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| rnn")]
    phases = [(r[1].strip(), r[2].strip()) for r in rows]
    assert phases == [
        (messages, load)
        for messages in ("single", "batch 64")
        for load in ("max", "25%", "50%", "90%")
    ]
    for r in rows:
        delivered, sent = r[4].strip().replace(",", "").split("/")
        assert delivered == sent and int(sent) > 0
        assert r[5].strip() == "yes"
        steal = r[15].strip()  # the host's share of the cores during the phase
        if os.path.exists("/proc/stat") and steal != "-":  # "-": too short to tell
            assert 0.0 <= float(steal.rstrip("%")) <= 100.0
        late = r[16].strip()  # paced phases: how far behind its schedule the generator sent
        if r[2].strip() == "max":
            assert late == "-"
        else:
            assert re.fullmatch(r"\d+\.\d%, max \d+\.\d ms", late), late
    assert "producers and subscriber at niceness +5 to the server's" in printed
    assert "server on loopback TCP" in printed
    assert "rnnstream bench e2e" in printed and "- machine: " in printed
    # the max row is the median of the three flat-out runs listed in the header
    runs_line = next(line for line in printed.splitlines() if "flat-out runs" in line)
    for row in (r for r in rows if r[2].strip() == "max"):
        label = f"rnnstream {row[1].strip()} "
        listed = runs_line.split(label)[1].split(";")[0].split(")")[0].split(", ")
        runs = sorted(int(x.replace(",", "")) for x in listed)
        assert len(runs) == 3 and int(row[6].strip().replace(",", "")) == runs[1]


def test_bench_e2e_fixed_rates_replace_the_loads_and_may_skip_the_flat_out_runs(
    tmp_path, capsys, monkeypatch
):
    servers = []

    class RecordedServeProcess(ServeProcess):
        def start(self, timeout: float = 120.0) -> ServeProcess:
            servers.append((self.ingest, self.publish, self.control))
            return super().start(timeout)

    monkeypatch.setattr(bench_e2e, "ServeProcess", RecordedServeProcess)
    parser = argparse.ArgumentParser()
    bench_e2e.add_arguments(parser)
    args = parser.parse_args(
        ["--streams", "40", "--single-readings", "400", "--batch-readings", "2000"]
        + ["--batch-size", "64", "--latency-seconds", "0.2", "--baseline", "off"]
        + ["--max-runs", "0", "--single-rates", "500,1000", "--batch-rates", "3000"]
        + ["--stall-seconds", "0", "--transport", "ipc"]
    )
    assert bench_e2e.run(args) == 0
    printed = capsys.readouterr().out
    assert "own stalls" not in printed
    assert "server on ipc:// sockets" in printed
    assert len(servers) == 2  # one per message kind, each on socket files of its own
    assert all(e.startswith("ipc://") for endpoints in servers for e in endpoints)
    assert len({e for endpoints in servers for e in endpoints}) == 6
    rows = [line.split("|")[1:-1] for line in printed.splitlines() if line.startswith("| rnn")]
    assert [(r[1].strip(), r[2].strip(), r[3].strip()) for r in rows] == [
        ("single", "500/s", "500"),
        ("single", "1,000/s", "1,000"),
        ("batch 64", "3,000/s", "3,000"),
    ]
    assert all(r[5].strip() == "yes" for r in rows) and "flat-out runs" not in printed
    with pytest.raises(UserError, match="--max-runs 0 needs"):
        bench_e2e.settings_from_args(parser.parse_args(["--max-runs", "0"]))
    with pytest.raises(UserError, match="--stall-seconds must not be negative"):
        bench_e2e.settings_from_args(parser.parse_args(["--stall-seconds", "-1"]))


def test_bench_e2e_host_steal_needs_a_phase_long_enough_for_the_counters_ticks():
    cores = os.cpu_count() or 1
    assert _steal_share(5.0, 5.02, 2.0) == pytest.approx(0.02 / (2.0 * cores))
    assert _steal_share(5.0, 5.01, 0.003) is None  # one 10 ms tick in 3 ms: not a share
    assert _steal_share(None, 5.0, 2.0) is None and _steal_share(5.0, None, 2.0) is None


def test_bench_e2e_pacing_counts_the_readings_sent_over_a_millisecond_after_due():
    pacing = Pacing(start_at=100.0, rate=1000.0)  # reading k due at 100 s + k ms
    pacing.record(100.0105, 0, 20)  # 0-9 were due by 100.0095 s, 1 ms before this send
    assert pacing.late == 10 and pacing.max_lag == pytest.approx(0.0105)
    pacing.record(100.0205, 20, 21)  # due at 100.020: 0.5 ms after, not late
    assert pacing.late == 10 and pacing.max_lag == pytest.approx(0.0105)
    flat_out = Pacing(start_at=100.0, rate=0.0)
    flat_out.record(200.0, 0, 4096)
    assert flat_out.late == 0 and flat_out.max_lag == 0.0


def test_bench_e2e_generator_processes_run_nicer_than_the_bench():
    ingest, publish = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))  # nobody there: fine
    own = os.getpriority(os.PRIO_PROCESS, 0)
    harness = Harness(
        ingest, publish, ["a", "b"], producers=2, n_inputs=8, idle_timeout=1.0, nice=3
    )
    try:
        for pid in (harness.pids["subscriber"], *harness.producer_pids):
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(own + 3, 19)
    finally:
        harness.close()


def test_bench_e2e_result_flags_a_missing_or_duplicated_prediction():
    info = {"sent": 3, "seq_sum": 6, "wall": 1.0, "cpu": {}, "stats_before": None}
    info["stats_after"] = None
    latency = np.array([0.001, 0.002])
    lost = _result("rnnstream", "single", "max", 0.0, info, _received(2, 3, latency))
    assert not lost.complete and lost.delivered == 2
    # Right count but a duplicate in place of a lost one: the seq sum tells.
    dup = _result("rnnstream", "single", "max", 0.0, info, _received(3, 5, np.r_[latency, 0.003]))
    assert not dup.complete
    ok = _result("rnnstream", "single", "max", 0.0, info, _received(3, 6, np.r_[latency, 0.003]))
    assert ok.complete and ok.p50_ms == pytest.approx(2.0)
    settings = Settings(3, 1, 3, 3, 3, 1, 1.0, (0.5,), 64, 8, 8, 1.0, False)
    table = markdown_report([lost, ok], settings, "cmd", "machine", "today")
    assert "| 2/3 | **NO** |" in table and "| 3/3 | yes |" in table


def test_bench_e2e_result_splits_the_readings_over_the_p99_target_by_where_they_got_late():
    def latency_stats(count: int, within_5ms: int) -> dict:
        return {
            "count": count,
            "sum": 0.0,
            "p50": None,
            "p99": None,
            "buckets": [[1e-3, 0], [5e-3, within_5ms], [1e-2, count]],
        }

    info = {"sent": 4, "seq_sum": 10, "wall": 1.0, "cpu": {"server": 0.5}}
    info["stats_before"] = {
        "latency_seconds": latency_stats(10, 10),  # an earlier phase's, all in time
        "batch_size": {"count": 0, "sum": 0},
        "step_seconds": {"count": 0, "sum": 0.0},
    }
    # of this phase's 4 readings, 1 was published over 5 ms after its ts; 2 arrived over 5 ms
    info["stats_after"] = {
        "latency_seconds": latency_stats(14, 13),
        "batch_size": {"count": 2, "sum": 4},
        "step_seconds": {"count": 2, "sum": 0.1},
    }
    latency = np.array([0.001, 0.002, 0.006, 0.009])
    paced = _result("rnnstream", "single", "50%", 4.0, info, _received(4, 10, latency))
    assert paced.over_target_published == pytest.approx(0.25)
    assert paced.over_target_received == pytest.approx(0.5)
    flat_out = _result("rnnstream", "single", "max", 0.0, info, _received(4, 10, latency))
    assert flat_out.over_target_published is None and flat_out.over_target_received is None
    # a daemon whose stats carry no buckets: the receiving side only
    for stats in (info["stats_before"], info["stats_after"]):
        del stats["latency_seconds"]["buckets"]
    older = _result("rnnstream", "single", "50%", 4.0, info, _received(4, 10, latency))
    assert older.over_target_published is None and older.over_target_received == 0.5
    settings = Settings(4, 1, 4, 4, 4, 1, 1.0, (0.5,), 64, 8, 8, 1.0, False)
    table = markdown_report([paced, older, flat_out], settings, "cmd", "machine", "today")
    assert "| 25.00% / 50.00% |" in table and "| - / 50.00% |" in table


def _received(count: int, seq_sum: int, latency: np.ndarray) -> dict:
    return {
        "count": count,
        "seq_sum": seq_sum,
        "errors": 0,
        "first": 0.0,
        "last": 1.0,
        "latency": latency,
    }
