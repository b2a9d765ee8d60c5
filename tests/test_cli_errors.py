"""Every mistake a user can make on the command line gives one clear line, a non-zero exit and
no Python traceback.

Each case runs `python -m engine.cli ...` as a subprocess, as a user would. `serve` is covered in
tests/test_daemon_lifecycle.py. A UserError exits 2 with `rnnstream COMMAND: error: ...`; `ctl`
exits 1 with `rnnstream ctl: ...` when the daemon does not answer or answers with an error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli import COMMANDS
from engine.default_model import default_model_path
from engine.model import Model
from engine.process import ServeProcess

REPO = Path(__file__).resolve().parents[1]
NOWHERE = "tcp://127.0.0.1:1"  # nothing listens on port 1


def rnnstream(*argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def user_error(*argv: str, code: int = 2) -> str:
    """Run the command; check it failed with one line and no traceback; return that line."""
    result = rnnstream(*argv)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert result.returncode == code, (result.returncode, result.stderr)
    prefix = f"rnnstream {argv[0]}: error: " if code == 2 else f"rnnstream {argv[0]}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def assert_says(line: str, *needles: str) -> None:
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs for the error cases: missing, garbage, ragged and well-formed files."""
    d = tmp_path_factory.mktemp("cli")
    paths = {name: d / name for name in ("missing.csv", "missing.pt", "missing.npz")}

    def write(name: str, content: str | bytes) -> Path:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        paths[name] = path
        return path

    write("garbage", "this is not a model, a torch file or msgpack\n")
    write("binary", b"\xff\xfe\x00\x01 not text")
    write("a_file", "")
    write("ragged.csv", "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00\n")
    # an unquoted thousands separator: 1,234 would be two fields
    write("wide_row.csv", "timestamp,value\n2020-01-01 00:00:00,1,234\n2020-01-01 00:05:00,2\n")
    write("bad_value.csv", "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,x\n")
    write("bad_time.csv", "timestamp,value\nyesterday,1\n")
    write("sensors.csv", "sensor,timestamp,value\npump-7,2020-01-01 00:00:00,1\n")
    write("header_only.csv", "timestamp,value\n")
    write("epoch_ms.csv", "timestamp,value\n1577836800000,1\n1577837100000,2\n")
    write("epoch_huge.csv", "timestamp,value\n1e13,1\n1.0000000003e13,2\n")
    rows = "".join(f"2020-01-01 {h:02d}:00:00,{h}\n" for h in range(6))
    write("short.csv", "timestamp,value\n" + rows)
    # a tiny NAB layout: data/cat/a.csv, windows, profiles, results
    write("nab/data/cat/a.csv", "timestamp,value\n" + rows)
    write("nab/windows.json", json.dumps({"cat/a.csv": []}))
    write("nab/windows_not_list.json", json.dumps({"cat/a.csv": 5}))
    write("nab/windows_bad_time.json", json.dumps({"cat/a.csv": [["x", "y"]]}))
    write(
        "nab/profiles.json", json.dumps({"standard": {"tpWeight": 1, "fpWeight": 1, "fnWeight": 1}})
    )
    write("nab/profiles_list.json", "[]")
    write("nab/results/cat/a.csv", "timestamp,value,anomaly_score\n2020-01-01 00:00:00,1,x\n")
    (d / "nab/empty_results").mkdir()
    paths["dir"] = d
    Model.random("lstm", 1, 8, seed=1).save(d / "other_shape.npz")
    paths["other_shape.npz"] = d / "other_shape.npz"
    return {k: Path(v) for k, v in paths.items()}


def s(path: Path) -> str:
    return str(path)


def fill(argv: list[str], files: dict[str, Path]) -> list[str]:
    """Replace `{name}` in each argument with the path of `files[name]`."""
    return [re.sub(r"\{([^}]+)\}", lambda m: s(files[m.group(1)]), arg) for arg in argv]


# ------------------------------------------------------------------------------------ convert


def test_convert_missing_input_says_no_such_file(files):
    line = user_error("convert", s(files["missing.pt"]), "--out", s(files["dir"] / "o.npz"))
    assert_says(line, "missing.pt", "no such file")


def test_convert_garbage_input_says_it_is_not_a_torch_file(files):
    line = user_error("convert", s(files["garbage"]), "--out", s(files["dir"] / "o.npz"))
    assert_says(line, "garbage", "not a readable torch.save file")


def test_convert_out_in_a_missing_folder_names_the_folder(files):
    out = files["dir"] / "no-such-folder" / "o.npz"
    line = user_error("convert", s(files["garbage"]), "--out", s(out))
    assert_says(line, "no-such-folder", "does not exist")


def test_convert_out_that_is_a_folder_suggests_a_file_path(files):
    line = user_error("convert", s(files["garbage"]), "--out", s(files["dir"]))
    assert_says(line, "is a directory", "model.npz")


@pytest.fixture(scope="module")
def state_dict_file(files) -> Path:
    torch = pytest.importorskip("torch")
    path = files["dir"] / "lstm_state.pt"
    torch.save(torch.nn.LSTM(2, 4).state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--input-mean", "a,b", "--input-std", "1,1"], ["--input-mean", "numbers", "'a,b'"]),
        (["--input-mean", "0,0"], ["--input-mean and --input-std", "give both"]),
        (["--cell", "gru"], ["cell 'gru'", "needs 12 rows, got 16"]),
        (["--feature-names", "a"], ["expected 2 names"]),
        (["--rnn-prefix", "encoder."], ["rnn_prefix 'encoder.'", "no key"]),
    ],
)
def test_convert_bad_options_for_a_state_dict_say_which(files, state_dict_file, flags, needles):
    line = user_error("convert", s(state_dict_file), "--out", s(files["dir"] / "o.npz"), *flags)
    assert_says(line, *needles)


def test_convert_pickled_module_asks_for_trust_pickle(files):
    torch = pytest.importorskip("torch")
    path = files["dir"] / "module.pt"
    torch.save(torch.nn.GRU(2, 4), path)
    line = user_error("convert", s(path), "--out", s(files["dir"] / "o.npz"))
    assert_says(line, "--trust-pickle", "state_dict()")


# -------------------------------------------------------------------------------------- train


@pytest.mark.parametrize(
    ("csv", "flags", "needles"),
    [
        ("missing.csv", [], ["no such CSV file", "missing.csv"]),
        ("binary", [], ["binary", "not a UTF-8 text CSV file"]),
        ("header_only.csv", [], ["no data rows"]),
        ("ragged.csv", [], ["ragged.csv line 3", "has 1 fields; the header has 2"]),
        ("bad_value.csv", [], ["no numeric value columns"]),
        ("short.csv", ["--value-columns", "nope"], ["unknown column(s) nope", "timestamp, value"]),
        ("short.csv", [], ["--seq-len 64 needs at least", "lower --seq-len"]),
        ("short.csv", ["--hidden", "0"], ["hidden_size must be at least 1"]),
        ("short.csv", ["--lr", "nan"], ["lr must be positive"]),
        ("short.csv", ["--validation-fraction", "2"], ["validation_fraction must be in [0, 1)"]),
    ],
)
def test_train_bad_input_says_what_is_wrong(files, csv, flags, needles):
    line = user_error("train", "--csv", s(files[csv]), "--out", s(files["dir"] / "o.npz"), *flags)
    assert_says(line, *needles)


def test_train_out_in_a_missing_folder_names_the_folder(files):
    out = files["dir"] / "no-such-folder" / "o.npz"
    line = user_error("train", "--csv", s(files["short.csv"]), "--out", s(out))
    assert_says(line, "output directory does not exist", "no-such-folder")


def test_train_without_csv_is_a_usage_error_without_traceback(files):
    result = rnnstream("train", "--out", s(files["dir"] / "o.npz"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("the following arguments are required: --csv")
    )


# ---------------------------------------------------------------------------------------- nab


def nab_args(files, windows: str = "nab/windows.json", profiles: str = "nab/profiles.json"):
    return [
        "--data",
        s(files["dir"] / "nab" / "data"),
        "--windows",
        s(files[windows]),
        "--profiles",
        s(files[profiles]),
    ]


def test_nab_missing_data_folder_says_which_flag(files):
    line = user_error("nab", "--data", s(files["dir"] / "nodata"), "--out", s(files["dir"]))
    assert_says(line, "nodata not found", "point --data")


def test_nab_missing_windows_file_says_which_flag(files):
    # an existing --data: the default one (../shared/nab/data) is checked first and may not exist
    data = s(files["dir"] / "nab" / "data")
    line = user_error(
        "nab", "--data", data, "--windows", s(files["missing.csv"]), "--out", s(files["dir"])
    )
    assert_says(line, "missing.csv not found", "point --windows")


def test_nab_missing_profiles_asks_for_profiles(files):
    data = s(files["dir"] / "nab" / "data")
    # no --profiles: nab looks for profiles.json next to --windows, and there is none
    line = user_error("nab", "--data", data, "--windows", s(files["garbage"]), "--out", data)
    assert_says(line, "profiles.json not found", "give --profiles FILE")


@pytest.mark.parametrize(
    ("windows", "profiles", "needles"),
    [
        ("binary", "nab/profiles.json", ["binary is not a JSON file"]),
        ("nab/windows_not_list.json", "nab/profiles.json", ["cat/a.csv", "[start, end] pairs"]),
        ("nab/windows_bad_time.json", "nab/profiles.json", ["cat/a.csv", "pair of timestamps"]),
        ("nab/windows.json", "binary", ["binary is not a JSON file"]),
        ("nab/windows.json", "nab/profiles_list.json", ["profiles_list.json", "JSON object"]),
        ("nab/windows.json", "garbage", ["garbage is not a JSON file"]),
    ],
)
def test_nab_malformed_label_or_profile_files_name_the_file(files, windows, profiles, needles):
    line = user_error("nab", *nab_args(files, windows, profiles), "--out", s(files["dir"] / "r"))
    assert_says(line, *needles)


def test_nab_without_out_asks_for_out(files):
    line = user_error("nab", *nab_args(files))
    assert_says(line, "give --out DIR")


def test_nab_score_only_without_results_says_what_it_looked_for(files):
    line = user_error(
        "nab", *nab_args(files), "--score-only", s(files["dir"] / "nab/empty_results")
    )
    assert_says(line, "no <category>/<name>.csv result files")


def test_nab_score_only_with_a_non_number_names_file_and_column(files):
    line = user_error("nab", *nab_args(files), "--score-only", s(files["dir"] / "nab/results"))
    assert_says(line, "a.csv", "'anomaly_score' holds a non-number")


# ------------------------------------------------------------------------------------ produce


@pytest.mark.parametrize(
    ("csv", "flags", "needles"),
    [
        ("missing.csv", [], ["no such file", "missing.csv"]),
        ("binary", [], ["binary is not a UTF-8 text CSV file"]),
        ("ragged.csv", [], ["ragged.csv:3", "1 fields, the header has 2"]),
        (
            "wide_row.csv",
            ["--as-fast-as-possible"],
            ["wide_row.csv:2", "3 fields, the header has 2"],
        ),
        ("bad_value.csv", [], ["bad_value.csv:3", "column 'value' is not a number: 'x'"]),
        ("sensors.csv", [], ["sensors.csv:2", "'sensor'", "--stream-column sensor"]),
        ("bad_time.csv", [], ["bad_time.csv:2", "cannot parse timestamp 'yesterday'"]),
        ("header_only.csv", [], ["hold no rows"]),
        ("short.csv", ["--value-columns", "nope"], ["no column 'nope'"]),
        ("short.csv", ["--time-column", "when"], ["no column 'when'"]),
        ("short.csv", ["--speed", "0"], ["--speed must be a finite number > 0", "not 0.0"]),
        ("short.csv", ["--speed", "nan"], ["--speed must be a finite number > 0", "not nan"]),
        ("short.csv", ["--speed", "inf"], ["--speed must be a finite", "--as-fast-as-possible"]),
        ("short.csv", ["--max-gap", "nan"], ["--max-gap must be a finite number >= 0"]),
        ("short.csv", ["--max-gap", "-1"], ["--max-gap must be a finite number >= 0"]),
        ("short.csv", ["--progress", "inf"], ["--progress must be a finite number"]),
    ],
)
def test_produce_csv_bad_input_says_what_is_wrong(files, csv, flags, needles):
    line = user_error("produce", "csv", s(files[csv]), "--endpoint", NOWHERE, *flags)
    assert_says(line, *needles)


def test_produce_csv_stream_with_several_files_explains(files):
    short = s(files["short.csv"])
    line = user_error("produce", "csv", short, short, "--stream", "x", "--endpoint", NOWHERE)
    assert_says(line, "--stream names one file's rows")


def test_produce_csv_stream_with_a_stream_column_explains(files):
    # `report` draws the one stream so chosen; `produce` would replay every stream of the column
    sensors = s(files["sensors.csv"])
    argv = ["--stream-column", "sensor", "--stream", "pump-7", "--endpoint", NOWHERE]
    line = user_error("produce", "csv", sensors, *argv)
    assert_says(line, "--stream names the rows of a file without --stream-column")


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--streams", "0"], ["--streams must be at least 1"]),
        (["--rate", "-1"], ["--rate must be a finite number >= 0"]),
        (["--rate", "nan"], ["--rate must be a finite number >= 0", "not nan"]),
        (["--rate", "inf"], ["--rate must be a finite number >= 0", "0 sends as fast"]),
        (["--duration", "nan"], ["--duration must be a finite number"]),
        (["--duration=-inf"], ["--duration must be a finite number"]),
        (["--anomaly-rate", "nan"], ["--anomaly-rate must be a finite number"]),
        (["--progress", "nan"], ["--progress must be a finite number"]),
        (["--kinds", "bogus"], ["unknown anomaly kinds", "spike"]),
        (["--kinds", ","], ["--kinds names no anomaly kind", "--anomaly-rate 0"]),
        (["--anomaly-rate", "-1"], ["--anomaly-rate must be a finite number >= 0"]),
        (["--seed", "-1"], ["--seed must be at least 0"]),
        (["--period", "1"], ["period must be at least 4"]),
        (["--endpoint", "nonsense"], ["cannot connect to 'nonsense'"]),
        (["--server-public-key", "/no/such.key"], ["neither a 40-character Z85 key nor a file"]),
    ],
)
def test_produce_synthetic_bad_options_say_which(flags, needles):
    line = user_error("produce", "synthetic", "--ticks", "1", "--endpoint", NOWHERE, *flags)
    assert_says(line, *needles)


@pytest.mark.parametrize(
    ("labels", "needles"),
    [
        ("{dir}/no-such-folder/l.jsonl", ["cannot write --labels", "l.jsonl: No such file"]),
        ("{dir}", ["cannot write --labels", "Is a directory"]),
    ],
)
def test_produce_synthetic_unwritable_labels_fails_before_sending(files, labels, needles):
    # one line: no "sent N readings" progress line, so the run never started
    argv = fill(["--labels", labels], files)
    line = user_error("produce", "synthetic", "--ticks", "1", "--endpoint", NOWHERE, *argv)
    assert_says(line, *needles)


# ------------------------------------------------------------------------------------ consume


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["tail", "--count", "0"], ["--count must be at least 1"]),
        (["tail", "--endpoint", "nonsense"], ["cannot connect to 'nonsense'"]),
        (["tail", "--server-public-key", "/no/such.key"], ["neither a 40-character Z85 key"]),
        (["record", "--out", "{dir}/no-such-folder/p.csv"], ["cannot write", "no-such-folder"]),
        (["record", "--out", "{dir}"], ["cannot write", "Is a directory"]),
        (["alerts", "--append", "{dir}/no-such-folder/a.jsonl"], ["cannot append to"]),
    ],
)
def test_consume_bad_options_say_which(files, argv, needles):
    argv = fill(argv, files)
    line = user_error("consume", *argv[:1], "--endpoint", NOWHERE, "--duration", "0.1", *argv[1:])
    assert_says(line, *needles)


# ---------------------------------------------------------------------------------------- ctl


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--timeout", "0", "health"], ["--timeout must be a positive number"]),
        (["--timeout", "nan", "health"], ["--timeout must be a positive number"]),
        (["--timeout", "inf", "health"], ["--timeout must be", "at most 2147483"]),
        (["--timeout", "1e12", "health"], ["--timeout must be", "at most 2147483"]),
        (["--endpoint", "nonsense", "health"], ["cannot connect to 'nonsense'"]),
        (["--client-secret-key", "x", "health"], ["--client-secret-key needs --server-public-key"]),
        (["--server-public-key", "/no/such.key", "health"], ["neither a 40-character Z85 key"]),
        (["streams", "--limit", "-1"], ["--limit must not be negative"]),
        (["threshold", "2"], ["LEVEL must be a number in (0, 1]"]),
        (["threshold", "high"], ["LEVEL must be a number in (0, 1]", "'high'"]),
        (["threshold", "default"], ["give --stream STREAM"]),
    ],
)
def test_ctl_usage_mistakes_say_which(argv, needles):
    if "--endpoint" not in argv:
        argv = ["--endpoint", NOWHERE, *argv]
    assert_says(user_error("ctl", *argv), *needles)


def test_ctl_without_a_daemon_says_no_reply_and_exits_1():
    line = user_error("ctl", "--endpoint", NOWHERE, "--timeout", "0.3", "health", code=1)
    assert_says(line, "no reply from", "is rnnstream serve running?")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with ServeProcess(default_model_path(), tmp_path_factory.mktemp("serve")) as serve:
        yield serve


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["reload", "{missing.npz}"], ["reload failed: model file", "does not exist"]),
        (["reload", "{garbage}"], ["reload failed: cannot load model", "garbage"]),
        (["reload", "{other_shape.npz}"], ["reload failed", "state shape differs", "reset"]),
        (["threshold", "--stream", "nobody", "0.5"], ["threshold failed: no stream 'nobody'"]),
    ],
)
def test_ctl_refused_command_prints_the_daemons_reason_and_exits_1(daemon, files, argv, needles):
    argv = fill(argv, files)
    line = user_error("ctl", "--endpoint", daemon.control, *argv, code=1)
    assert_says(line, *needles)


# ------------------------------------------------------------------------------------- keygen


def test_keygen_out_under_a_file_says_it_cannot_write(files):
    line = user_error("keygen", "--out", s(files["a_file"] / "keys"))
    assert_says(line, "cannot write certificates to", "Not a directory")


@pytest.mark.parametrize(
    ("names", "needles"),
    [
        (["../up"], ["certificate name '../up'", "letters, digits"]),
        ([".hidden"], ["not starting with '.'"]),
        (["a", "a"], ["certificate names must differ"]),
    ],
)
def test_keygen_bad_names_say_what_a_name_may_hold(files, names, needles):
    flags = [arg for name in names for arg in ("--name", name)]
    line = user_error("keygen", "--out", s(files["dir"] / "keys-bad"), *flags)
    assert_says(line, *needles)


def test_keygen_refuses_to_overwrite_without_force(files):
    out = s(files["dir"] / "keys")
    assert rnnstream("keygen", "--out", out).returncode == 0
    line = user_error("keygen", "--out", out)
    assert_says(line, "server.key already exists", "use --force")


# --------------------------------------------------------------------------------------- demo


@pytest.mark.parametrize("flag", ["--duration", "--streams", "--rate"])
def test_demo_non_positive_sizes_are_refused(flag):
    assert_says(user_error("demo", flag, "0"), "must be positive")


def test_demo_negative_seed_is_refused_before_the_daemon_starts(files):
    line = user_error("demo", "--seed", "-1", "--out", s(files["dir"] / "demo"))
    assert_says(line, "--seed must be at least 0")
    assert "starting rnnstream serve" not in line


def test_demo_out_under_a_file_asks_for_another_out(files):
    line = user_error("demo", "--duration", "1", "--out", s(files["a_file"] / "demo"))
    assert_says(line, "cannot create", "choose another --out")


# -------------------------------------------------------------------------------------- bench


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--cells", "foo"], ["--cells: unknown cell 'foo'"]),
        (["--hidden", "x"], ["--hidden: expected comma-separated ints"]),
        (["--streams", "10"], ["--streams (10) must be at least --batch (1024)"]),
        (["e2e", "--loads", "x"], ["--loads must be comma-separated numbers"]),
        (["e2e", "--streams", "0"], ["--streams must be at least 1"]),
    ],
)
def test_bench_bad_options_say_which(argv, needles):
    assert_says(user_error("bench", *argv), *needles)


# ------------------------------------------------------------------------------------- report

needs_report = pytest.mark.skipif(
    "report" not in COMMANDS, reason="rnnstream report not registered"
)


@needs_report
@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([], ["give exactly one source"]),
        (["--csv", "{missing.csv}"], ["missing.csv not found", "--csv"]),
        (["--csv", "{bad_value.csv}"], ["bad_value.csv:3"]),
        (["--csv", "{epoch_ms.csv}"], ["epoch_ms.csv:2", "'1577836800000'", "milliseconds"]),
        (["--csv", "{epoch_huge.csv}"], ["epoch_huge.csv:2", "'1e13'", "year 9999"]),
        (["--synthetic", "1", "--model", "{garbage}"], ["--model", "garbage"]),
        (["--synthetic", "1", "--model", "{other_shape.npz}"], ["does not score anomalies"]),
        (["--synthetic", "1", "--length", "0"], ["--length must be at least"]),
        (["--synthetic", "-1"], ["--synthetic SEED must be at least 0"]),
        (["--synthetic", "1", "--threshold", "3"], ["--threshold <= 1"]),
    ],
)
def test_report_bad_input_says_what_is_wrong(files, argv, needles):
    argv = fill(argv, files)
    assert_says(user_error("report", *argv), *needles)


@needs_report
def test_report_out_under_a_file_asks_for_another_out(files):
    out = s(files["a_file"] / "x.png")
    line = user_error("report", "--synthetic", "1", "--length", "400", "--out", out)
    assert_says(line, "a_file is not a folder", "choose another --out")


@needs_report
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, where no file can be made")
def test_report_unwritable_out_says_so():
    line = user_error("report", "--synthetic", "1", "--length", "400", "--out", "/proc/x.png")
    assert_says(line, "cannot write /proc/x.png", "choose another --out")


@needs_report
def test_report_binary_csv_names_the_file(files):
    line = user_error("report", "--csv", s(files["binary"]))
    assert_says(line, "binary", "not a UTF-8 text file")
