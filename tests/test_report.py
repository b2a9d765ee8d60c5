"""rnnstream report: the data it draws equals online processing, the PNGs it writes, its errors."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine import demo, report
from engine.alerts import EVENT_CLOSE, EVENT_NONE, EVENT_OPEN, AlertPolicy
from engine.cli import UserError
from engine.default_model import load_default_model
from engine.model import Model
from engine.stream import StreamEngine
from producers.synthetic import Anomaly, series

NAB_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "nab"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Seed 8's sensor has a dropout at readings 637..655 that the built-in model alerts on.
SEED, LENGTH = 8, 700


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args(argv)


def assert_png(path: Path, min_bytes: int = 15_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # two panels of lines, not an empty canvas


def online(values: np.ndarray, ts: np.ndarray | None, policy: AlertPolicy) -> dict[str, list]:
    """Send readings to a StreamEngine the way the daemon does: one process call per reading."""
    engine = StreamEngine(load_default_model(), alerts=policy)
    out: dict[str, list] = {"expected": [], "scores": [], "events": []}
    for i, value in enumerate(values.tolist()):
        stamp = None if ts is None else [ts[i]]
        result = engine.process(["sensor"], np.array([[value]], np.float32), stamp)
        out["expected"].append(float(result.expected[0, 0]))
        out["scores"].append(float(result.scores[0]))
        out["events"].append(int(result.events[0]))
    return out


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize(
    "policy",
    [
        AlertPolicy(),
        AlertPolicy(0.05, 0.02, min_duration=2, cooldown=0, warmup=100, error_gate=0.0),
    ],
    ids=["default-policy", "eager-policy"],
)
def test_trace_equals_online_stream_engine_processing(policy: AlertPolicy) -> None:
    values, _ = series(LENGTH, SEED)
    ts = 1.7e9 + 300.0 * np.arange(LENGTH)
    traced = report.trace(values, ts=ts, policy=policy)
    reference = online(values, ts, policy)

    np.testing.assert_array_equal(traced.values, values)
    assert np.isnan(traced.expected[0])  # nothing was forecast before the first reading
    np.testing.assert_array_equal(traced.expected[1:], reference["expected"][1:])
    np.testing.assert_array_equal(traced.scores, reference["scores"])
    np.testing.assert_array_equal(traced.events, reference["events"])
    assert traced.open_level == policy.open_level
    opens = [lo for lo, _ in traced.alert_spans]
    assert opens == [i for i, e in enumerate(reference["events"]) if e == EVENT_OPEN]
    assert opens, "the test stream should raise at least one alert"


def test_trace_expectation_is_the_previous_readings_forecast_in_stream_units() -> None:
    values, _ = series(LENGTH, SEED)
    engine = StreamEngine(load_default_model())
    forecasts = [float(engine.step("s", [v])[0]) for v in values.tolist()]
    traced = report.trace(values)
    np.testing.assert_allclose(traced.expected[1:], forecasts[:-1], rtol=1e-6)
    # a forecaster in the stream's units: its expectation tracks the readings' level
    assert abs(np.nanmedian(traced.expected) - np.median(values)) < np.std(values)


def test_trace_refuses_a_model_that_does_not_score() -> None:
    model = Model.random("gru", 1, 4, output_size=1)
    with pytest.raises(ValueError, match="does not score.*without --no-scoring"):
        report.trace(np.ones(10), model=model)


def test_a_model_trained_with_no_scoring_is_told_to_train_without_it() -> None:
    model = Model.random("gru", 1, 4, output_size=1)
    model = replace(model, metadata={"trained_by": "rnnstream train"})
    with pytest.raises(ValueError, match="trained with --no-scoring: train it again without"):
        report.check_scoring_model(model)


def test_alert_spans_pair_opens_with_closes_and_leave_the_last_one_open() -> None:
    events = np.full(20, EVENT_NONE, np.int8)
    events[[3, 12]] = EVENT_OPEN
    events[7] = EVENT_CLOSE
    assert report.alert_spans(events) == [(3, 7), (12, None)]
    assert report.alert_spans(np.zeros(5, np.int8)) == []


def test_a_window_is_caught_by_an_alert_opening_inside_it_or_just_after_it() -> None:
    windows = [(10, 20), (50, 60), (100, 110), (150, 160)]
    spans = [(5, 12), (60 + report.MATCH_GRACE, 75), (140, 145), (158, None)]
    # (10, 20): the alert open since 5 opened for something else; (50, 60): opened just within
    # the grace; (100, 110): missed; (150, 160): opened inside, still open
    assert report.windows_caught(windows, spans) == 2
    assert report.windows_caught(windows, [(61 + report.MATCH_GRACE, 80)]) == 0
    assert report.windows_caught(windows, [(10, 11)]) == 1


def test_demo_and_report_count_the_same_windows_as_caught() -> None:
    from engine.demo import match_alerts
    from producers.synthetic import Anomaly

    labels = [Anomaly("s", "spike", start, end) for start, end in [(10, 20), (50, 60), (150, 160)]]
    opens = [5, 60 + report.MATCH_GRACE, 158]
    match = match_alerts(labels, [("s", t) for t in opens], probation=0, ticks=200)
    spans = [(t, None) for t in opens]
    assert match.caught == report.windows_caught([(a.start, a.end) for a in labels], spans) == 2


def test_reading_index_takes_an_index_or_a_timestamp() -> None:
    ts = 1_600_000_000.0 + 60.0 * np.arange(10)  # 2020-09-13 12:26:40 UTC, one a minute
    assert report.reading_index("3", ts, 10, end=False) == 3
    assert report.reading_index("2020-09-13 12:28:40", ts, 10, end=False) == 2
    assert report.reading_index("2020-09-13 12:29:10", ts, 10, end=False) == 3  # next reading
    assert report.reading_index("2020-09-13 12:29:10", ts, 10, end=True) == 2  # last before
    with pytest.raises(ValueError, match="outside"):
        report.reading_index("10", ts, 10, end=False)
    with pytest.raises(ValueError, match="no timestamps"):
        report.reading_index("2020-09-13", None, 10, end=False)


def test_reading_index_digits_are_an_index_and_a_time_is_written_as_one() -> None:
    ts = 1_600_000_000.0 + 60.0 * np.arange(10)
    assert report.reading_index("@1600000120", ts, 10, end=False) == 2  # epoch seconds
    assert report.reading_index("2020-09-13T14:28:40+02:00", ts, 10, end=False) == 2
    # Epoch seconds without @ are digits, so an index: refused, saying how to write a time.
    with pytest.raises(ValueError, match="outside 0..9; digits alone are a reading index.*@"):
        report.reading_index("1600000120", ts, 10, end=False)
    for text in ("5.5", "-1", "@soon", "@inf"):
        with pytest.raises(ValueError, match="reading index|epoch seconds"):
            report.reading_index(text, ts, 10, end=False)


def test_reading_index_refuses_a_time_with_no_reading_on_its_side() -> None:
    ts = 1_600_000_000.0 + 60.0 * np.arange(10)  # 2020-09-13 12:26:40 .. 12:35:40 UTC
    with pytest.raises(ValueError, match="no reading at or before 2000-01-01 00:00:00 UTC"):
        report.reading_index("2000-01-01", ts, 10, end=True)
    with pytest.raises(ValueError, match="run from 2020-09-13 12:26:40 UTC to .* 12:35:40 UTC"):
        report.reading_index("2030-01-01", ts, 10, end=False)
    # A time before the data is a fine start, and one after it a fine end.
    assert report.reading_index("2000-01-01", ts, 10, end=False) == 0
    assert report.reading_index("2030-01-01", ts, 10, end=True) == 9


# ----------------------------------------------------------------------------- CSV


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_series_sorts_by_time_and_places_labelled_windows(tmp_path: Path) -> None:
    rows = [f"2020-01-01 00:{m:02d}:00,{m}" for m in range(10)]
    rows[4], rows[5] = rows[5], rows[4]  # one pair out of order
    path = write_csv(tmp_path / "realTest" / "x.csv", "timestamp,value", rows)
    labels = tmp_path / "windows.json"
    labels.write_text(
        json.dumps(
            {"realTest/x.csv": [["2020-01-01 00:02:30.000000", "2020-01-01 00:06:00.000000"]]}
        )
    )
    got = report.csv_series(path, windows_file=labels)
    assert got.name == "x"
    np.testing.assert_array_equal(got.values, np.arange(10.0))
    assert np.all(np.diff(got.ts) == 60.0)
    assert got.windows == [(3, 6)]  # readings at minutes 3..6 lie inside the window


def test_csv_series_picks_the_only_value_column_and_works_without_time(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "load.csv", "load", ["1.5", "", "2.5", "3"])
    got = report.csv_series(path)
    assert got.ts is None
    np.testing.assert_array_equal(got.values, [1.5, 2.5, 3.0])
    path = write_csv(tmp_path / "two.csv", "when,a,b", ["1,2,3", "2,4,5"])
    got = report.csv_series(path, value_column="b", time_column="when")
    np.testing.assert_array_equal(got.values, [3.0, 5.0])
    np.testing.assert_array_equal(got.ts, [1.0, 2.0])


def sensors_csv(path: Path) -> Path:
    """README's `sensor,time,value` file: two streams, interleaved, pump-8 50 above pump-7."""
    rows = []
    for i in range(6):
        for sensor, offset in (("pump-7", 0), ("pump-8", 50)):
            rows.append(f"{sensor},2024-05-01 00:{5 - i:02d}:00,{offset + i}")  # newest first
    return write_csv(path, "sensor,time,value", rows)


def test_csv_series_of_several_streams_is_refused_unless_one_is_chosen(tmp_path: Path) -> None:
    path = sensors_csv(tmp_path / "readings.csv")
    with pytest.raises(ValueError, match=r"column 'sensor' holds several texts .*"
                       r"--stream-column sensor --stream ID"):  # fmt: skip
        report.csv_series(path)
    with pytest.raises(ValueError, match=r"column 'sensor' holds 2 streams .*--stream ID"):
        report.csv_series(path, stream_column="sensor")
    with pytest.raises(ValueError, match=r"no stream 'pump-9' in column 'sensor'"):
        report.csv_series(path, stream_column="sensor", stream="pump-9")
    got = report.csv_series(path, stream_column="sensor", stream="pump-8")
    assert got.name == "pump-8"
    np.testing.assert_array_equal(got.values, [55, 54, 53, 52, 51, 50])  # in time order
    assert got.ts is not None and np.all(np.diff(got.ts) == 60.0)  # found the `time` column


def test_csv_series_with_one_stream_in_its_stream_column_needs_no_stream(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", "sensor,time,value", ["a,1,1.0", "a,2,2.0"])
    got = report.csv_series(path, stream_column="sensor")
    assert got.name == "a"
    np.testing.assert_array_equal(got.values, [1.0, 2.0])


@pytest.mark.parametrize("column", ["timestamp", "time", "date", "datetime", "Time"])
def test_csv_series_finds_the_time_columns_train_finds(tmp_path: Path, column: str) -> None:
    path = write_csv(tmp_path / "x.csv", f"value,{column}", ["2,1970-01-01 00:00:02", "1,1"])
    got = report.csv_series(path)
    np.testing.assert_array_equal(got.ts, [1.0, 2.0])
    np.testing.assert_array_equal(got.values, [1.0, 2.0])


def test_report_draws_the_chosen_stream_of_readmes_csv(tmp_path: Path, capsys) -> None:
    path = sensors_csv(tmp_path / "readings.csv")
    out = tmp_path / "p.png"
    with pytest.raises(UserError, match="--stream-column sensor --stream ID"):
        report.run(parse(["--csv", str(path), "--out", str(out)]))
    argv = ["--csv", str(path), "--stream-column", "sensor", "--stream", "pump-7"]
    assert report.run(parse([*argv, "--out", str(out)])) == 0
    assert capsys.readouterr().out.splitlines() == [str(out), "pump-7: 6 readings, 0 alerts"]
    assert_png(out, min_bytes=5_000)


@pytest.mark.parametrize(
    ("header", "rows", "options", "message"),
    [
        ("timestamp,a,b", ["2020-01-01,1,2"], {}, "--value-column"),
        ("timestamp,value", ["2020-01-01,1"], {"value_column": "v"}, "no column 'v'"),
        (
            "timestamp,value",
            ["2020-01-01,1", "2020-01-02,high"],
            {},
            r"x\.csv:3: column 'value' is not a number: 'high'",
        ),
        ("timestamp,value", ["yesterday,1"], {}, "cannot parse timestamp"),
        ("timestamp,value", ["2020-01-01,nan"], {}, "finite"),
        ("timestamp,value", ["2020-01-01,1", "2020-01-02,-1e300"], {}, r"x\.csv:3: .*float32"),
        ("timestamp,value", ["2020-01-01,1", "2020-01-02,2,3"], {}, r"x\.csv:3: 3 fields, .* 2"),
        ("timestamp,value", ["2020-01-01,1", "2020-01-02"], {}, r"x\.csv:3: 1 fields, .* 2"),
        ("timestamp,value", [], {}, "no readings"),
    ],
)
def test_csv_series_says_what_is_wrong_with_a_file(
    tmp_path: Path, header: str, rows: list[str], options: dict, message: str
) -> None:
    path = write_csv(tmp_path / "x.csv", header, rows)
    with pytest.raises(ValueError, match=message):
        report.csv_series(path, **options)


def test_csv_series_ignores_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("\ufefftimestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n")
    got = report.csv_series(path)
    np.testing.assert_array_equal(got.ts, [1577836800.0, 1577837100.0])
    np.testing.assert_array_equal(got.values, [1.0, 2.0])


def test_csv_series_needs_the_files_key_in_the_windows_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cat" / "x.csv", "timestamp,value", ["2020-01-01,1"])
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"other/x.csv": []}))
    with pytest.raises(ValueError, match="no entry 'cat/x.csv'"):
        report.csv_series(path, windows_file=labels)


# ----------------------------------------------------------------------------- command


def test_synthetic_report_writes_a_png_and_prints_a_summary(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.png"
    args = parse(["--synthetic", str(SEED), "--length", str(LENGTH), "--out", str(out)])
    assert report.run(args) == 0
    assert_png(out)
    s = report.synthetic_series(SEED, LENGTH)
    spans = report.trace(s.values).alert_spans
    caught = report.windows_caught(s.windows, spans)
    assert capsys.readouterr().out.splitlines() == [
        str(out),
        f"synthetic-{SEED}: {LENGTH} readings, {len(spans)} alert{'s' * (len(spans) != 1)}, "
        f"labelled windows caught {caught} of {len(s.windows)}",
    ]
    assert len(spans) >= 1 and caught >= 1


def test_a_drawn_range_gets_its_own_summary_line(tmp_path: Path, capsys) -> None:
    # Seed 8's only labelled window (637..655) and alert (637..638) lie after reading 300.
    argv = ["--synthetic", str(SEED), "--length", str(LENGTH), "--out", str(tmp_path / "r.png")]
    assert report.run(parse([*argv, "--start", "0", "--end", "300"])) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"synthetic-{SEED}: {LENGTH} readings, 1 alert, labelled windows caught 1 of 1",
        "drawn: readings 0 to 300, 0 alerts, no labelled windows",
    ]
    assert report.run(parse([*argv, "--start", "600"])) == 0
    assert capsys.readouterr().out.splitlines()[2] == (
        f"drawn: readings 600 to {LENGTH - 1}, 1 alert, labelled windows caught 1 of 1"
    )


def test_a_csv_without_windows_says_nothing_about_labelled_windows(tmp_path: Path, capsys) -> None:
    rows = [f"{i},{np.sin(i / 5):.4f}" for i in range(60)]
    path = write_csv(tmp_path / "plain.csv", "i,value", rows)
    assert report.run(parse(["--csv", str(path), "--out", str(tmp_path / "p.png")])) == 0
    assert capsys.readouterr().out.splitlines()[1] == "plain: 60 readings, 0 alerts"


@pytest.mark.parametrize("name", ["x.txt", "x.svg", "x.png.pdf"])
def test_out_must_be_a_png(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    with pytest.raises(UserError, match=r"the picture is a PNG; give a name ending in \.png"):
        report.run(parse(["--synthetic", "3", "--length", "50", "--out", str(out)]))
    assert list(tmp_path.iterdir()) == []


def test_out_prints_the_path_written_for_a_bare_name_and_a_folder(tmp_path: Path, capsys) -> None:
    argv = ["--synthetic", "3", "--length", "50", "--out"]
    assert report.run(parse([*argv, str(tmp_path / "noext")])) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(tmp_path / "noext.png")
    assert_png(tmp_path / "noext.png", min_bytes=5_000)
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert report.run(parse([*argv, str(folder)])) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(folder / "synthetic-3.png")
    assert_png(folder / "synthetic-3.png", min_bytes=5_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noext.png", "pictures"]


def test_alert_options_reach_the_alert_policy(tmp_path: Path, capsys) -> None:
    eager = AlertPolicy(0.05, 0.02, min_duration=1, cooldown=0, warmup=100, error_gate=0.5)
    values, _ = series(LENGTH, SEED)
    want = len(report.trace(values, policy=eager).alert_spans)
    assert want != len(report.trace(values).alert_spans)
    argv = ["--synthetic", str(SEED), "--length", str(LENGTH), "--out", str(tmp_path / "e.png")]
    options = ["--threshold", "0.05", "--close", "0.02", "--min-duration", "1", "--cooldown", "0"]
    options += ["--warmup", "100", "--error-gate", "0.5"]
    assert report.run(parse(argv + options)) == 0
    assert f" {want} alerts," in capsys.readouterr().out


def test_report_writes_name_png_in_the_current_folder_by_default(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report.run(parse(["--synthetic", "3", "--length", "400", "--start", "100"])) == 0
    assert capsys.readouterr().out.splitlines()[0] == "synthetic-3.png"
    assert_png(tmp_path / "synthetic-3.png")


def test_csv_report_with_time_axis_windows_and_zoom_writes_a_png(tmp_path: Path, capsys) -> None:
    values, _ = series(600, 4)
    values[450:470] += 15 * values.std()  # a level shift inside the labelled window
    start = np.datetime64("2021-03-01T00:00:00", "s")
    stamps = [str(start + np.timedelta64(300 * i, "s")).replace("T", " ") for i in range(600)]
    rows = [f"{t},{v!r}" for t, v in zip(stamps, values.tolist(), strict=True)]
    path = write_csv(tmp_path / "realTest" / "plant.csv", "timestamp,value", rows)
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"realTest/plant.csv": [[stamps[440], stamps[480]]]}))
    out = tmp_path / "plant.png"
    argv = ["--csv", str(path), "--windows", str(labels), "--out", str(out)]
    assert report.run(parse([*argv, "--start", stamps[300], "--end", "599"])) == 0
    assert_png(out)
    summary, drawn = capsys.readouterr().out.splitlines()[1:]
    assert summary.startswith("plant: 600 readings, ")
    assert summary.endswith("labelled windows caught 1 of 1")
    assert drawn.startswith("drawn: readings 300 to 599 (2021-03-02 01:00:00 UTC to ")
    assert drawn.endswith("labelled windows caught 1 of 1")


@pytest.mark.skipif(
    not (NAB_DIR / "data" / "realKnownCause" / "nyc_taxi.csv").is_file(),
    reason="NAB data not found next to the repo",
)
def test_nab_file_report_shades_its_labelled_windows(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taxi.png"
    args = parse(
        [
            "--csv",
            str(NAB_DIR / "data" / "realKnownCause" / "nyc_taxi.csv"),
            "--windows",
            str(NAB_DIR / "windows.json"),
            "--start",
            "2014-10-25",
            "--end",
            "2014-11-10",
            "--out",
            str(out),
        ]
    )
    assert report.run(args) == 0
    assert_png(out)
    labelled = json.loads((NAB_DIR / "windows.json").read_text())["realKnownCause/nyc_taxi.csv"]
    summary = capsys.readouterr().out.splitlines()[1]
    assert summary.startswith("nyc_taxi: 10320 readings, ")
    assert summary.endswith(f" of {len(labelled)}")


def test_missing_matplotlib_is_a_user_error_naming_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(UserError, match=r"pip install 'rnnstream\[plot\]'"):
        report.plot_stream(tmp_path / "x.png", values=[1.0], expected=[1.0], scores=[0.0])
    out = tmp_path / "s.png"
    with pytest.raises(UserError, match=r"rnnstream\[plot\]"):
        report.run(parse(["--synthetic", "1", "--length", "50", "--out", str(out)]))
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one source"),
        (["--synthetic", "1", "--csv", "x.csv"], "exactly one source"),
        (["--csv", "no/such/file.csv"], "not found"),
        (["--synthetic", "1", "--length", "1"], "--length"),
        (["--synthetic", "1", "--anomaly-rate", "2"], "--anomaly-rate"),
        (["--synthetic", "1", "--windows", "w.json"], "go with --csv"),
        (["--synthetic", "1", "--threshold", "0.5", "--close", "0.8"], "--close <= --threshold"),
        (["--synthetic", "1", "--min-duration", "0"], "--min-duration"),
        (["--synthetic", "1", "--warmup", "-1"], "--warmup"),
        (["--synthetic", "1", "--error-gate", "-1"], "--error-gate"),
        (["--synthetic", "1", "--length", "50", "--start", "40", "--end", "10"], "no reading"),
        (["--synthetic", "1", "--length", "50", "--start", "99"], "outside"),
        (["--synthetic", "1", "--length", "50", "--end", "2020-01-01"], "no timestamps"),
        (["--synthetic", "1", "--length", "50", "--start", "5.5"], "--start 5.5: '5.5' is neither"),
        (["--csv", "."], r"\. is a folder; give --csv a CSV file"),
        (["--synthetic", "1", "--length", "50", "--out", "no/such/dir/x.png"], "not a folder"),
        (["--synthetic", "1", "--model", "no/such/model.npz"], "not found"),
    ],
)
def test_bad_arguments_are_user_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        report.run(parse(argv))


def test_a_model_that_does_not_score_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    Model.random("gru", 1, 4, output_size=1).save(path)
    with pytest.raises(UserError, match="does not score"):
        report.run(parse(["--synthetic", "1", "--model", str(path)]))


def test_a_bad_windows_file_is_a_user_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cat" / "x.csv", "timestamp,value", ["2020-01-01,1"])
    labels = tmp_path / "windows.json"
    labels.write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        report.run(parse(["--csv", str(path), "--windows", str(labels)]))


# ----------------------------------------------------------------------------- drawing


def test_plot_stream_draws_numbers_times_and_spans_past_the_end(tmp_path: Path) -> None:
    n = 300
    values = np.sin(np.arange(n) / 10.0)
    expected = np.concatenate(([np.nan], values[:-1]))
    scores = np.clip(np.abs(np.diff(values, prepend=0.0)), 0, 1)
    times = np.datetime64("2022-05-01T00:00", "s") + np.arange(n) * np.timedelta64(60, "s")
    for name, x in (("index.png", None), ("time.png", times)):
        path = report.plot_stream(
            tmp_path / name,
            values=values,
            expected=expected,
            scores=scores,
            x=x,
            windows=[(100, 120), (290, 400)],  # the second runs past the data
            alert_spans=[(101, 103), (295, None)],
            open_level=0.9,
            title="sine",
        )
        assert path == tmp_path / name
        assert_png(path)
    with pytest.raises(ValueError, match="same length"):
        report.plot_stream(tmp_path / "bad.png", values=values, expected=values[:-1], scores=scores)
    with pytest.raises(ValueError, match="no readings"):
        report.plot_stream(tmp_path / "empty.png", values=[], expected=[], scores=[])


def test_demo_picture_is_drawn_by_plot_stream(tmp_path: Path, monkeypatch) -> None:
    values = np.linspace(0.0, 1.0, 50)
    history = {t: (float(values[min(t + 1, 49)]), 0.1) for t in range(50)}
    drawn: dict = {}
    real = report.plot_stream

    def spy(path, **kwargs):
        drawn.update(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(report, "plot_stream", spy)
    path = demo._plot(
        tmp_path / "demo.png",
        "sensor-0001",
        values,
        history,
        [Anomaly("sensor-0001", "spike", 20, 60)],  # still running past the last tick
        [(21, 24), (40, None)],
    )
    assert_png(path, min_bytes=5_000)
    assert np.isnan(drawn["expected"][0])
    np.testing.assert_array_equal(drawn["expected"][1:], values[1:])  # forecast t is for t + 1
    assert drawn["windows"] == [(20, 49)]
    assert drawn["alert_spans"] == [(21, 24), (40, None)]
    assert drawn["open_level"] == AlertPolicy().open_level
