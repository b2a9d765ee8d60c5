"""`rnnstream ctl` against a real `rnnstream serve` subprocess on free loopback ports."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import cli, ctl
from engine.cli import UserError
from engine.default_model import default_model_path
from engine.keys import generate
from engine.model import Model
from engine.process import ServeProcess, free_ports
from producers.client import Producer

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 10.0  # seconds any single expectation may take before the test fails


def run_ctl(*argv: str) -> int:
    """Run `rnnstream ctl ARGV` in this process the way engine.cli does; return the exit code."""
    parser = argparse.ArgumentParser(prog="rnnstream ctl")
    ctl.add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        return ctl.run(args)
    except UserError as exc:
        print(f"rnnstream ctl: error: {exc}", file=sys.stderr)
        return 2


def fields_of(out: str) -> dict[str, str]:
    """Map each top-level `key: value` line of ctl's output to its value."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+):\s*(.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.npz"
    Model.random("lstm", 3, 8, output_size=2, seed=1).save(path)
    return path


@pytest.fixture(scope="module")
def daemon(model_path, tmp_path_factory):
    server = ServeProcess(model_path, tmp_path_factory.mktemp("serve"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def producer(daemon):
    with Producer(daemon.ingest, linger=1.0) as p:
        yield p


def wait_for_streams(daemon: ServeProcess, names: set[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        reply = ctl.control(daemon.control, "streams", limit=100_000)
        if names <= set(reply["streams"]):
            return
        time.sleep(0.02)
    pytest.fail(f"the daemon never listed streams {sorted(names)}")


def feed(producer: Producer, daemon: ServeProcess, *names: str) -> None:
    for name in names:
        producer.send(name, [0.1, 0.2, 0.3])
    wait_for_streams(daemon, set(names))


def test_health_prints_aligned_status_uptime_streams_and_model(daemon, capsys):
    code = run_ctl("--endpoint", daemon.control, "health")
    out = capsys.readouterr().out
    assert code == 0
    fields = fields_of(out)
    assert fields["status"] == "ready"
    assert re.fullmatch(r"[\d.]+ (us|ms|s)", fields["uptime"])
    assert re.fullmatch(r"[0-9a-f]{64}", fields["model"])
    assert fields["pid"] == str(daemon.pid)
    assert "ok" not in fields
    # Aligned: every value starts in the same column.
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(columns) == 1


def test_json_prints_the_raw_reply(daemon, capsys):
    assert run_ctl("--endpoint", daemon.control, "--json", "health") == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] is True
    assert reply["status"] == "ready"
    assert reply["pid"] == daemon.pid


def test_stats_shows_histograms_on_one_line_and_nested_counters_indented(daemon, producer, capsys):
    feed(producer, daemon, "stats-a", "stats-b")
    # A reading of the wrong width is rejected and counted under rejects.wrong_length.
    producer.send("stats-bad", [1.0])
    deadline = time.monotonic() + DEADLINE
    while not ctl.control(daemon.control, "stats")["rejects"]:
        assert time.monotonic() < deadline, "the bad reading was never counted"
        time.sleep(0.02)
    assert run_ctl("--endpoint", daemon.control, "stats") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    batch = next(line for line in lines if line.startswith("batch_size:"))
    assert re.search(r"count=\d+ mean=[\d.]+ p50<=\d+ p99<=\d+$", batch)
    latency = next(line for line in lines if line.startswith("latency_seconds:"))
    assert re.search(r"count=\d+ mean=\S+ (us|ms|s) p50<=\S+ (us|ms|s) p99<=", latency)
    assert next(line for line in lines if line.startswith("snapshot_seconds:")).endswith("count=0")
    i = lines.index("rejects:")
    assert re.fullmatch(r"  wrong_length:\s+1", lines[i + 1])
    fields = fields_of(out)
    assert int(fields["readings_in"]) >= 2
    assert fields["status"] == "ready"


def test_streams_lists_ids_one_per_line_up_to_the_limit(daemon, producer, capsys):
    feed(producer, daemon, "list-a", "list-b", "list-c")
    assert run_ctl("--endpoint", daemon.control, "streams") == 0
    out = capsys.readouterr().out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert {"list-a", "list-b", "list-c"} <= set(listed)
    assert int(fields_of(out)["count"]) == len(listed)

    assert run_ctl("--endpoint", daemon.control, "streams", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("  ")]) == 1
    assert int(fields_of(out)["count"]) >= 3


@pytest.mark.parametrize(
    "layout",
    [
        ["health", "--endpoint", "{control}", "--timeout", "7", "--json"],
        ["--json", "health", "--endpoint", "{control}"],
        ["--endpoint", "{control}", "health", "--json"],  # no default after COMMAND overrides
        ["--endpoint", "tcp://127.0.0.1:1", "--json", "health", "--endpoint", "{control}"],
    ],
)
def test_ctl_options_go_before_or_after_the_command(daemon, layout, capsys):
    argv = [a.format(control=daemon.control) for a in layout]
    assert cli.main(["ctl", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == daemon.pid


def test_reset_and_drop_say_whether_the_stream_existed(daemon, producer, capsys):
    feed(producer, daemon, "rd-a")
    assert run_ctl("--endpoint", daemon.control, "reset", "rd-a") == 0
    assert fields_of(capsys.readouterr().out) == {"existed": "yes"}
    assert run_ctl("--endpoint", daemon.control, "drop", "rd-a") == 0
    assert fields_of(capsys.readouterr().out) == {"existed": "yes"}
    assert "rd-a" not in ctl.control(daemon.control, "streams", limit=100_000)["streams"]
    assert run_ctl("--endpoint", daemon.control, "drop", "rd-a") == 0
    assert fields_of(capsys.readouterr().out) == {"existed": "no"}
    assert run_ctl("--endpoint", daemon.control, "reset", "never-seen") == 0
    assert fields_of(capsys.readouterr().out) == {"existed": "no"}


def test_snapshot_writes_the_state_file_and_reports_it(daemon, producer, capsys):
    feed(producer, daemon, "snap-a")
    assert run_ctl("--endpoint", daemon.control, "snapshot") == 0
    fields = fields_of(capsys.readouterr().out)
    assert Path(fields["path"]).is_file()
    assert int(fields["streams"]) >= 1
    assert re.fullmatch(r"[\d.]+ (us|ms|s)", fields["seconds"])


def test_reload_same_shape_model_keeps_streams(daemon, producer, model_path, tmp_path, capsys):
    feed(producer, daemon, "reload-a")
    other = tmp_path / "other.npz"
    Model.random("lstm", 3, 8, output_size=2, seed=2).save(other)
    assert run_ctl("--endpoint", daemon.control, "reload", str(other)) == 0
    fields = fields_of(capsys.readouterr().out)
    assert fields["model"] == Model.load(other).fingerprint
    assert "reload-a" in ctl.control(daemon.control, "streams", limit=100_000)["streams"]
    # With no PATH the daemon reloads its own --model.
    assert run_ctl("--endpoint", daemon.control, "reload") == 0
    assert fields_of(capsys.readouterr().out)["model"] == Model.load(model_path).fingerprint


def test_reload_relative_path_is_resolved_here(daemon, model_path, tmp_path, monkeypatch, capsys):
    Model.random("lstm", 3, 8, output_size=2, seed=3).save(tmp_path / "rel.npz")
    monkeypatch.chdir(tmp_path)
    assert run_ctl("--endpoint", daemon.control, "reload", "rel.npz") == 0
    assert fields_of(capsys.readouterr().out)["model"] == Model.load("rel.npz").fingerprint
    ctl.control(daemon.control, "reload", path=str(model_path))


def test_reload_of_a_missing_relative_path_says_where_the_daemon_looked(
    daemon, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # not there either: ctl sends the path as given
    assert run_ctl("--endpoint", daemon.control, "reload", "missing.npz") == 1
    error = capsys.readouterr().err
    assert "model file missing.npz does not exist in the daemon's directory /" in error


def test_reload_other_shape_needs_reset(daemon, model_path, tmp_path, capsys):
    bigger = tmp_path / "bigger.npz"
    Model.random("lstm", 3, 16, output_size=2, seed=4).save(bigger)
    assert run_ctl("--endpoint", daemon.control, "reload", str(bigger)) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnstream ctl: reload failed: ")
    # It names the option to type, not the engine's keyword.
    assert err[0].endswith(
        f"use `rnnstream ctl reload {bigger} --reset` (reset: true) to restart every stream "
        "from zeros"
    )
    assert run_ctl("--endpoint", daemon.control, "reload", str(bigger), "--reset") == 0
    assert fields_of(capsys.readouterr().out)["model"] == Model.load(bigger).fingerprint
    assert ctl.control(daemon.control, "reload", path=str(model_path), reset=True)["ok"]


def test_daemon_error_exits_1_with_its_message(daemon, tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    assert run_ctl("--endpoint", daemon.control, "reload", str(missing)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"rnnstream ctl: reload failed: model file {missing} does not exist\n"


def test_json_error_reply_is_printed_and_exits_1(daemon, tmp_path, capsys):
    code = run_ctl("--endpoint", daemon.control, "--json", "reload", str(tmp_path / "no.npz"))
    assert code == 1
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] is False and "does not exist" in reply["error"]


def test_control_function_returns_the_decoded_reply(daemon):
    reply = ctl.control(daemon.control, "health", timeout=5.0)
    assert reply["ok"] is True and reply["status"] == "ready"
    reply = ctl.control(daemon.control, "no-such-command")
    assert reply == {"ok": False, "error": "unknown command 'no-such-command'"}


def test_unreachable_daemon_gives_one_line_and_exit_1(capsys):
    (port,) = free_ports(1)
    endpoint = f"tcp://127.0.0.1:{port}"
    assert run_ctl("--endpoint", endpoint, "--timeout", "0.3", "health") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"rnnstream ctl: no reply from {endpoint} within 0.3 s: nothing accepted the connection: "
        "is rnnstream serve running?\n"
    )
    with pytest.raises(ctl.NoReply):
        ctl.control(endpoint, "health", timeout=0.2)


def test_unreachable_daemon_in_a_real_process_prints_no_traceback():
    (port,) = free_ports(1)
    script = (
        "import argparse, sys\n"
        "from engine import ctl\n"
        "p = argparse.ArgumentParser()\n"
        "ctl.add_arguments(p)\n"
        "sys.exit(ctl.run(p.parse_args(sys.argv[1:])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "--endpoint", f"tcp://127.0.0.1:{port}"]
        + ["--timeout", "0.5", "stats"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert "within 0.5 s: nothing accepted the connection: is rnnstream serve running?" in (
        proc.stderr
    )


def test_bad_endpoint_is_a_usage_error(capsys):
    assert run_ctl("--endpoint", "not-an-endpoint", "health") == 2
    assert "cannot connect to 'not-an-endpoint'" in capsys.readouterr().err


def test_client_secret_key_without_server_public_key_is_a_usage_error(tmp_path, capsys):
    assert run_ctl("--client-secret-key", str(tmp_path / "c.key_secret"), "health") == 2
    assert "--client-secret-key needs --server-public-key" in capsys.readouterr().err


def test_shutdown_stops_the_daemon_in_order(model_path, tmp_path, capsys):
    server = ServeProcess(model_path, tmp_path).start()
    try:
        with Producer(server.ingest, linger=1.0) as p:
            p.send("last", [1.0, 2.0, 3.0])
        wait_for_streams(server, {"last"})
        assert run_ctl("--endpoint", server.control, "shutdown") == 0
        assert fields_of(capsys.readouterr().out) == {"status": "stopping"}
        assert server.process.wait(30) == 0
        assert "stopped" in server.log_text()
        assert (tmp_path / next(p.name for p in tmp_path.glob("state-*")) / "state.npz").is_file()
    finally:
        server.kill()


def test_timeout_is_refused_unless_zeromq_can_hold_it_in_milliseconds(daemon, capsys):
    for value in ("inf", "1e12", "nan", "-1", "0"):
        assert run_ctl("--endpoint", daemon.control, "--timeout", value, "health") == 2, value
        assert "--timeout must be a positive number of seconds" in capsys.readouterr().err
    # the documented maximum itself is taken (the reply comes at once)
    assert run_ctl("--endpoint", daemon.control, "--timeout", "2147483", "health") == 0
    with pytest.raises(ValueError, match="timeout"):
        ctl.control(daemon.control, "health", timeout=math.inf)


def test_json_is_strict_with_non_finite_numbers_written_as_prometheus_does(monkeypatch, capsys):
    # p50 is +Inf once half the observations lie beyond the highest bucket
    reply = {
        "ok": True,
        "latency_seconds": {
            "count": 3,
            "sum": 300.0,
            "p50": math.inf,
            "p99": math.inf,
            "buckets": [[5.0, 1]],
        },
        "snapshot_seconds": {"count": 0, "sum": 0.0, "p50": None, "p99": None, "buckets": []},
        "low": -math.inf,
        "odd": [math.nan, 1.5],
    }
    monkeypatch.setattr(ctl, "control", lambda *args, **kwargs: reply)
    assert run_ctl("--json", "stats") == 0

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    got = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert got["latency_seconds"] == {
        "count": 3,
        "sum": 300.0,
        "p50": "+Inf",
        "p99": "+Inf",
        "buckets": [[5.0, 1]],
    }
    assert got["snapshot_seconds"]["p50"] is None  # before any observation, as the daemon says
    assert (got["low"], got["odd"]) == ("-Inf", ["NaN", 1.5])


@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_output_into_a_closed_pipe_exits_quietly(daemon, json_flag):
    # `rnnstream ctl --json stats | head -1`: the reader is gone before ctl prints it all
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli", "ctl", "--endpoint", daemon.control]
            + [*json_flag, "stats"],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 1


@pytest.fixture(scope="module")
def curve_daemon(model_path, tmp_path_factory):
    """A daemon that admits only `client`'s key; yields (server, folder of the certificates)."""
    keys = tmp_path_factory.mktemp("keys")
    generate(keys, ["server", "client", "intruder"])
    allowed = keys / "allowed"
    allowed.mkdir()
    shutil.copy(keys / "client.key", allowed)
    server = ServeProcess(
        model_path,
        tmp_path_factory.mktemp("curve-serve"),
        extra=[
            "--curve-secret-key",
            str(keys / "server.key_secret"),
            "--curve-clients",
            str(allowed),
        ],
    )
    with server:
        yield server, keys


@pytest.mark.parametrize(
    ("curve_argv", "needles"),
    [
        ([], ["CURVE", "--server-public-key"]),  # which side sees the mismatch is a race
        (
            ["--server-public-key", "intruder.key"],
            ["the CURVE handshake failed", "and --server-public-key its public key?"],
        ),
        (
            ["--server-public-key", "server.key", "--client-secret-key", "intruder.key_secret"],
            ["the daemon refused this client's CURVE key", "--curve-clients"],
        ),
        (
            ["--server-public-key", "server.key"],  # a throwaway key pair: refused as well
            ["the daemon refused this client's CURVE key", "--client-secret-key"],
        ),
    ],
)
def test_no_reply_from_a_curve_daemon_says_which_key_does_not_fit(
    curve_daemon, curve_argv, needles, capsys
):
    server, keys = curve_daemon
    argv = [a if a.startswith("--") else str(keys / a) for a in curve_argv]
    assert run_ctl("--endpoint", server.control, "--timeout", "0.5", *argv, "health") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"rnnstream ctl: no reply from {server.control} within 0.5 s: ")
    assert captured.err.count("\n") == 1
    for needle in needles:
        assert needle in captured.err
    assert "is rnnstream serve running?" not in captured.err  # it is: the keys are wrong


def test_admitted_curve_client_gets_its_reply(curve_daemon, capsys):
    server, keys = curve_daemon
    argv = ["--server-public-key", str(keys / "server.key")]
    argv += ["--client-secret-key", str(keys / "client.key_secret")]
    assert run_ctl("--endpoint", server.control, *argv, "health") == 0
    assert fields_of(capsys.readouterr().out)["status"] == "ready"


def test_curve_keys_after_the_command_are_used(curve_daemon, capsys):
    server, keys = curve_daemon
    argv = ["health", "--endpoint", server.control, "--server-public-key", str(keys / "server.key")]
    argv += ["--client-secret-key", str(keys / "client.key_secret")]
    assert cli.main(["ctl", *argv]) == 0
    assert fields_of(capsys.readouterr().out)["status"] == "ready"


def test_no_reply_says_when_the_daemon_does_not_use_curve(daemon, tmp_path, capsys):
    generate(tmp_path, ["server"])
    argv = ["--server-public-key", str(tmp_path / "server.key")]
    assert run_ctl("--endpoint", daemon.control, "--timeout", "0.5", *argv, "health") == 1
    err = capsys.readouterr().err
    # libzmq reports a mechanism mismatch, or just a hang-up, depending on who reads first
    assert (
        "the daemon does not use CURVE: leave out --server-public-key" in err
        or "is --endpoint the control socket of a daemon with CURVE" in err
    )


def test_no_reply_from_a_socket_that_is_not_the_control_one_says_so(daemon, capsys):
    assert run_ctl("--endpoint", daemon.ingest, "--timeout", "0.5", "health") == 1
    err = capsys.readouterr().err
    assert "is --endpoint the daemon's control socket?" in err
    assert "is rnnstream serve running?" not in err


def test_format_reply_prints_a_stream_id_on_one_line_whatever_it_holds():
    # Ids come from producers: "a\nb" was listed as two streams, and ESC reached the terminal.
    lines = ctl.format_reply({"count": 2, "streams": ["a\nb", "c\x1b[2K"]})
    assert lines == ["count:   2", "streams:", "  a\\nb", "  c\\x1b[2K"]


def test_format_reply_handles_empty_histograms_lists_and_infinities():
    lines = ctl.format_reply(
        {
            "ok": True,
            "latency_seconds": {"count": 0, "sum": 0.0, "p50": None, "p99": None},
            "step_seconds": {
                "count": 4,
                "sum": 0.002,
                "p50": 0.0005,
                "p99": float("inf"),
                "buckets": [[0.0005, 3]],  # left to --json
            },
            "streams": [],
            "rejects": {},
            "ratio": 0.125,
        }
    )
    assert lines == [
        "latency_seconds: count=0",
        "step_seconds:    count=4 mean=500 us p50<=500 us p99=inf",
        "streams:         -",
        "rejects:         -",
        "ratio:           0.125",
    ]


def test_threshold_lowers_the_close_level_only_while_the_open_level_is_below_it(tmp_path):
    # The default model scores; the daemon's configured close level is 0.2.
    with ServeProcess(default_model_path(), tmp_path) as server:
        lowered = ctl.control(server.control, "threshold", level=0.1)
        raised = ctl.control(server.control, "threshold", level=0.5)
    assert (lowered["level"], lowered["close_level"]) == (0.1, 0.1)
    assert (raised["level"], raised["close_level"]) == (0.5, 0.2)


def test_a_global_threshold_outside_0_to_1_is_refused_naming_the_level(tmp_path):
    # It was refused as "need 0 < close_level <= open_level <= 1": a close level nobody sent.
    with ServeProcess(default_model_path(), tmp_path) as server:
        replies = [ctl.control(server.control, "threshold", level=v) for v in (1.5, 0, -1.0)]
        kept = ctl.control(server.control, "stats")
    assert [r["error"] for r in replies] == [
        "alert level must be in (0, 1], got 1.5",
        "alert level must be in (0, 1], got 0",
        "alert level must be in (0, 1], got -1.0",
    ]
    assert kept["control_commands"]["threshold"] == {"error": 3}
