"""`rnnstream report`: draw a stream's readings, expectation, anomaly score and alerts to a PNG.

The stream is a synthetic sensor (with its injected anomalies as labelled windows) or one value
column of one stream of a CSV file (optionally with NAB's labelled windows for that file). Its
readings go through a `StreamEngine` on a scoring model one at a time, in time order, exactly as
they would online; the picture shows the readings with the model's expectation of each one, the
labelled windows and the alerts above, and the anomaly score with the alert open level below.

`trace` produces the data and `plot_stream` draws it; `rnnstream demo` draws with `plot_stream`
too. matplotlib is an optional extra: `pip install 'rnnstream[plot]'`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.alerts import EVENT_CLOSE, EVENT_OPEN, AlertPolicy
from engine.cli import UserError
from engine.protocol import FLOAT32_MAX

if TYPE_CHECKING:
    from engine.model import Model

DEFAULT_LENGTH = 2016  # one week of the synthetic sensors' 5-minute readings
# An alert that opens within this many readings after a labelled window ends still catches it:
# a level shift's return to normal is itself surprising to a forecaster.
MATCH_GRACE = 10
PLOT_EXTRA_HINT = "pip install 'rnnstream[plot]'"
# The engine computes in float32: a reading beyond its range would become infinite.
RANGE_RULE = (
    "digits alone are a reading index (0 is the first); a time is YYYY-MM-DD[ HH:MM[:SS]] or "
    "ISO 8601 (UTC unless it has an offset), or @SECONDS since the epoch"
)

# The times a time axis can show: datetime's years, which matplotlib's dates share.
_FIRST_TIME = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LAST_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()

Span = tuple[int, int | None]  # (first reading, last reading or None while still open)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare
class Series:
    """One univariate stream to report on, in time order."""

    name: str
    values: np.ndarray  # (n,) float64
    ts: np.ndarray | None = None  # (n,) float64 epoch seconds, non-decreasing; None: no time
    windows: list[tuple[int, int]] = field(default_factory=list)  # labelled, inclusive rows
    source: str = ""  # where the series came from, for the title


@dataclass(frozen=True, eq=False)
class Trace:
    """What a StreamEngine made of a series, row i for reading i."""

    values: np.ndarray  # (n,) float64: the readings
    expected: np.ndarray  # (n,) float64: the forecast made for this reading (NaN for the first)
    scores: np.ndarray  # (n,) float64: anomaly score in [0, 1]
    events: np.ndarray  # (n,) int8: alerts.EVENT_NONE / EVENT_OPEN / EVENT_CLOSE
    open_level: float  # the alert policy's open level

    @property
    def alert_spans(self) -> list[Span]:
        """Return each alert as (opening reading, closing reading or None if still open)."""
        return alert_spans(self.events)


# ----------------------------------------------------------------------------- data


def trace(
    values: Any,
    *,
    ts: Any = None,
    model: Model | None = None,
    policy: AlertPolicy | None = None,
    stream: str = "report",
) -> Trace:
    """Run `values` (n,) through a fresh StreamEngine one reading at a time and collect it all.

    `model` must be a univariate scoring model (default: the built-in one); `ts` (n,) epoch
    seconds only date the alerts, as online. The result equals what `StreamEngine.process`
    returns for the same readings sent one per call.
    """
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    model = model or load_default_model()
    check_scoring_model(model)
    X = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, 1)
    n = X.shape[0]
    stamps = np.full(n, np.nan) if ts is None else np.asarray(ts, np.float64).reshape(n)
    policy = policy or AlertPolicy()
    engine = StreamEngine(model, capacity=1, alerts=policy)
    expected = np.empty(n, np.float64)
    scores = np.empty(n, np.float64)
    events = np.empty(n, np.int8)
    streams = [stream]
    for i in range(n):
        result = engine.process(streams, X[i : i + 1], stamps[i : i + 1])
        expected[i] = result.expected[0, 0]
        scores[i] = result.scores[0]
        events[i] = result.events[0]
    if n:
        expected[0] = np.nan  # no forecast precedes the first reading (its slab row is zeros)
    return Trace(
        np.asarray(values, np.float64).reshape(n), expected, scores, events, policy.open_level
    )


def check_scoring_model(model: Model) -> None:
    """Raise ValueError unless `model` scores anomalies on one input."""
    if model.metadata.get("anomaly") is None:
        if model.metadata.get("trained_by") == "rnnstream train":
            hint = "it was trained with --no-scoring: train it again without --no-scoring"
        else:
            hint = "use a forecaster trained by `rnnstream train` without --no-scoring"
        raise ValueError(
            "the model does not score anomalies (no 'anomaly' section in its metadata); "
            f"{hint}, or use the built-in model"
        )
    if model.input_size != 1:
        raise ValueError(f"the model reads {model.input_size} inputs; a report draws one value")


def alert_spans(events: np.ndarray) -> list[Span]:
    """Return the alerts in a stream's events as (opening reading, closing reading or None)."""
    spans: list[Span] = []
    for i in np.flatnonzero(events != 0).tolist():
        if events[i] == EVENT_OPEN:
            spans.append((i, None))
        elif events[i] == EVENT_CLOSE and spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], i)
    return spans


def catches(opened: int, window: tuple[int, int]) -> bool:
    """Whether an alert that opened at reading `opened` caught the labelled window (first, last):
    it opened inside it or at most MATCH_GRACE readings after its end. An alert already open
    when the window starts opened for something else. The one rule of `rnnstream report`,
    `rnnstream demo` and bench/alert_quality.py."""
    return window[0] <= opened <= window[1] + MATCH_GRACE


def windows_caught(windows: Sequence[tuple[int, int]], spans: Sequence[Span]) -> int:
    """Count the labelled windows some alert caught (`catches`)."""
    return sum(1 for window in windows if any(catches(opened, window) for opened, _ in spans))


def synthetic_series(seed: int, length: int, anomaly_rate: float | None = None) -> Series:
    """Return one synthetic sensor (producers.synthetic.series) with its injected anomalies."""
    from producers.synthetic import DEFAULT_ANOMALY_RATE, series

    rate = DEFAULT_ANOMALY_RATE if anomaly_rate is None else anomaly_rate
    values, labels = series(length, seed, anomaly_rate=rate, stream=f"synthetic-{seed}")
    return Series(
        f"synthetic-{seed}",
        values,
        windows=[(a.start, a.end) for a in labels],
        source=f"synthetic sensor, seed {seed}",
    )


def csv_series(
    path: str | Path,
    *,
    value_column: str | None = None,
    time_column: str | None = None,
    stream_column: str | None = None,
    stream: str | None = None,
    windows_file: str | Path | None = None,
) -> Series:
    """Read one value column (and a time column if any) of one stream of a CSV file, by time.

    Without `value_column` the column is "value", or the only column besides the time and
    stream columns. Without `time_column` it is the one `rnnstream train` finds
    (`producers.csv_replay.find_time_column`: timestamp, time, date, ...), else readings are
    untimed. With `stream_column`, only the rows whose id there is `stream` are read; `stream`
    may be left out when the column holds one id. Without it, `stream` names the file's rows
    (default: the file's stem), and a file whose other columns hold several texts, stream ids
    most likely, is refused rather than drawn as one interleaved series.
    `windows_file` is NAB's labels JSON, keyed `<category>/<name>.csv` (the file's folder and
    name); its windows are placed on the readings whose timestamps they cover. A UTF-8 byte
    order mark is ignored; every row must have as many fields as the header, every value
    must be finite and within float32 range (the engine's), and every time within the years
    1 to 9999 (a time axis's).
    Raise ValueError naming the file (and line) for anything wrong.
    """
    from producers.csv_replay import cell_number, find_time_column, is_number

    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ValueError(f"{path}: the file is empty")
        if time_column is None:
            time_column = find_time_column(
                header, [c for c in (value_column, stream_column) if c is not None]
            )
        for column, flag in (
            (time_column, "--time-column"),
            (value_column, "--value-column"),
            (stream_column, "--stream-column"),
        ):
            if column is not None and column not in header:
                raise ValueError(f"{path}: no column {column!r} ({flag}); the header is {header}")
        if value_column is None:
            others = [h for h in header if h not in (time_column, stream_column)]
            if "value" in others:
                value_column = "value"
            elif len(others) == 1:
                value_column = others[0]
            else:
                raise ValueError(f"{path}: choose the column to draw with --value-column {others}")
        v_idx = header.index(value_column)
        t_idx = None if time_column is None else header.index(time_column)
        s_idx = None if stream_column is None else header.index(stream_column)
        # Texts in the columns not read, to tell a file of several streams (up to a few each)
        texts: dict[int, list[str]] = {
            i: [] for i, h in enumerate(header) if h not in (time_column, value_column)
        }
        ids: dict[str, None] = {}  # the stream column's ids, in file order
        values: list[float] = []
        stamps: list[float] = []
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise ValueError(
                    f"{path}:{line}: {len(cells)} fields, the header has {len(header)}"
                )
            if s_idx is not None:
                row_stream = cells[s_idx].strip()
                ids.setdefault(row_stream)
                if stream is not None and row_stream != stream:
                    continue
            for i, seen in texts.items():
                cell = cells[i].strip()
                if cell and len(seen) < 4 and cell not in seen and not is_number(cell):
                    seen.append(cell)
            try:
                value = cell_number(cells[v_idx], value_column)
                if t_idx is not None:
                    stamps.append(_drawable_time(cells[t_idx]))
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}:{line}: {value_column} is {value}; readings are finite")
            if abs(value) > FLOAT32_MAX:
                raise ValueError(
                    f"{path}:{line}: {value_column} is {value:g}, beyond the float32 range "
                    f"(+-{FLOAT32_MAX:.4g}) the engine computes in"
                )
            values.append(value)
    name = _stream_of(path, header, stream_column, stream, list(ids), texts)
    if not values:
        raise ValueError(f"{path}: no readings")
    array = np.array(values, np.float64)
    ts = None
    if t_idx is not None:
        ts = np.array(stamps, np.float64)
        order = np.argsort(ts, kind="stable")  # time order; equal times keep file order
        array, ts = array[order], ts[order]
    windows: list[tuple[int, int]] = []
    if windows_file is not None:
        windows = _labelled_windows(Path(windows_file), path, ts)
    source = f"{path.resolve().parent.name}/{path.name}"
    if stream_column is not None:
        source += f", stream {name}"
    return Series(name, array, ts, windows, source=source)


def _drawable_time(text: str) -> float:
    """Return a timestamp cell's epoch seconds; raise ValueError unless the time axis can show
    it (years 1 to 9999, as datetime and matplotlib): epoch milliseconds lie far beyond."""
    from producers.csv_replay import parse_timestamp

    seconds = parse_timestamp(text)
    if not _FIRST_TIME <= seconds <= _LAST_TIME:
        when = "after the year 9999" if seconds > _LAST_TIME else "before the year 1"
        raise ValueError(
            f"timestamp {text.strip()!r} read as epoch seconds is {when}, beyond any time axis "
            "(epoch milliseconds? divide them by 1000)"
        )
    return seconds


def _stream_of(
    path: Path,
    header: list[str],
    stream_column: str | None,
    stream: str | None,
    ids: list[str],
    texts: dict[int, list[str]],
) -> str:
    """Return the name of the one stream `csv_series` read, or raise ValueError saying how to
    choose one when the file holds several (`ids`: the stream column's; `texts`: up to four
    non-numbers per column besides time and value)."""

    def some(names: list[str], total: int | None = None) -> str:
        shown = ", ".join(repr(n) for n in names[:3])
        return shown + (", ..." if (total or len(names)) > 3 else "")

    if stream_column is None:
        for i, seen in texts.items():
            if len(seen) > 1:
                raise ValueError(
                    f"{path}: column {header[i]!r} holds several texts ({some(seen)}); if they "
                    f"are stream ids, choose one: --stream-column {header[i]} --stream ID"
                )
        return stream if stream is not None else path.stem
    if stream is None:
        if len(ids) > 1:
            raise ValueError(
                f"{path}: column {stream_column!r} holds {len(ids)} streams "
                f"({some(ids)}); choose one with --stream ID"
            )
        if ids:
            return ids[0]
        return path.stem
    if stream not in ids:
        raise ValueError(
            f"{path}: no stream {stream!r} in column {stream_column!r}, which holds {some(ids)}"
        )
    return stream


def _labelled_windows(
    windows_file: Path, path: Path, ts: np.ndarray | None
) -> list[tuple[int, int]]:
    from producers.csv_replay import parse_timestamp

    key = f"{path.resolve().parent.name}/{path.name}"
    try:
        labels = json.loads(windows_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{windows_file}: not JSON ({exc})") from None
    if not isinstance(labels, dict) or key not in labels:
        raise ValueError(f"{windows_file}: no entry {key!r} (keys are <category>/<name>.csv)")
    if ts is None:
        raise ValueError(f"{path}: labelled windows need a time column (--time-column)")
    rows = []
    for window in labels[key]:
        try:
            start, end = (parse_timestamp(str(t)) for t in window)
        except ValueError as exc:
            raise ValueError(f"{windows_file}: {key}: {exc}") from None
        lo = int(np.searchsorted(ts, start, side="left"))
        hi = int(np.searchsorted(ts, end, side="right")) - 1
        if lo <= hi:
            rows.append((lo, hi))
    return rows


def reading_index(text: str, ts: np.ndarray | None, n: int, *, end: bool) -> int:
    """Turn a --start / --end value into the index of a reading (`RANGE_RULE`).

    Digits alone are a reading index, which must lie in 0..n-1. Anything else is a time: the
    start is the first reading at or after it, the end the last reading at or before it, and
    there must be one. `ts` (n,) are the readings' epoch seconds in time order, None if untimed.
    Raise ValueError saying what is wrong.
    """
    text = text.strip()
    if re.fullmatch(r"[0-9]+", text):
        index = int(text)
        if index >= n:
            raise ValueError(f"reading {index} is outside 0..{n - 1}; {RANGE_RULE}")
        return index
    moment = _moment(text)
    if ts is None:
        raise ValueError(f"{text!r} is a time, and the readings have no timestamps")
    span = f"the readings run from {_utc(ts[0])} to {_utc(ts[-1])}"
    if end:
        index = int(np.searchsorted(ts, moment, side="right")) - 1
        if index < 0:
            raise ValueError(f"no reading at or before {_utc(moment)}; {span}")
    else:
        index = int(np.searchsorted(ts, moment, side="left"))
        if index >= n:
            raise ValueError(f"no reading at or after {_utc(moment)}; {span}")
    return index


def _moment(text: str) -> float:
    """Return the epoch seconds of a time written as `RANGE_RULE` says: as `produce csv` reads
    a timestamp, except that epoch seconds take an @ (bare digits are an index)."""
    from producers.csv_replay import parse_timestamp

    body = text.removeprefix("@")
    try:
        float(body)
        is_number = True
    except ValueError:
        is_number = False
    try:
        if text.startswith("@") != is_number:
            raise ValueError(text)
        return parse_timestamp(body)
    except ValueError:
        raise ValueError(f"{text!r} is neither a reading index nor a time; {RANGE_RULE}") from None


def _utc(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"@{float(seconds):g}"


# ----------------------------------------------------------------------------- drawing


def _pyplot() -> Any:
    """Return matplotlib.pyplot on the file-only Agg backend, or say how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(f"drawing needs matplotlib: {PLOT_EXTRA_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Raise UserError (saying what to install) unless matplotlib can be imported."""
    _pyplot()


def plot_stream(
    path: str | Path,
    *,
    values: Any,
    expected: Any,
    scores: Any,
    x: Any = None,
    windows: Sequence[tuple[int, int]] = (),
    alert_spans: Sequence[Span] = (),
    open_level: float | None = None,
    title: str = "",
) -> Path:
    """Draw readings, expectation, labelled windows, alerts and the anomaly score to a PNG.

    values, expected, scores: (n,) arrays, reading i at position i (NaN leaves a gap).
    x: (n,) positions of the readings: numbers, or datetime64 for a time axis; default 0..n-1.
    windows, alert_spans: inclusive (first, last) reading positions, 0-based into the arrays;
    a span's last may be None (still open at the end). open_level: drawn as a dashed line on the
    score panel. Return the path written. Raise UserError if matplotlib is missing.
    """
    plt = _pyplot()
    import matplotlib.dates as mdates

    values = np.asarray(values, np.float64)
    n = len(values)
    expected = np.asarray(expected, np.float64)
    scores = np.asarray(scores, np.float64)
    if not len(expected) == len(scores) == n:
        raise ValueError("values, expected and scores must have the same length")
    if n == 0:
        raise ValueError("no readings to draw")
    is_time = x is not None and np.issubdtype(np.asarray(x).dtype, np.datetime64)
    if x is None:
        pos = np.arange(n, dtype=np.float64)
    elif is_time:
        pos = mdates.date2num(np.asarray(x).astype("datetime64[us]"))
    else:
        pos = np.asarray(x, np.float64)
    if len(pos) != n:
        raise ValueError("x must have one position per reading")
    edges = _edges(pos)
    # A span of one or two readings would be a hairline in a long picture: widen it for the eye.
    min_width = 0.004 * (edges[-1] - edges[0])

    def span(lo: int, hi: int | None) -> tuple[float, float]:
        hi = n - 1 if hi is None else min(hi, n - 1)
        left, right = edges[max(lo, 0)], edges[hi + 1]
        pad = max(min_width - (right - left), 0.0) / 2
        return left - pad, right + pad

    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 5.8),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1.3]},
        layout="constrained",
    )
    top.plot(pos, values, lw=0.9, color="#1f4e79", label="reading", zorder=3)
    top.plot(
        pos, expected, lw=0.9, color="#e69f00", alpha=0.95, label="model expectation", zorder=4
    )
    windows = [(lo, hi) for lo, hi in windows if lo < n and hi >= 0]
    alert_spans = [(lo, hi) for lo, hi in alert_spans if lo < n and (hi is None or hi >= 0)]
    for i, (lo, hi) in enumerate(windows):
        top.axvspan(
            *span(lo, hi),
            color="#7f7f7f",
            alpha=0.28,
            lw=0,
            label="labelled anomaly" if i == 0 else None,
            zorder=1,
        )
    for i, (lo, hi) in enumerate(alert_spans):
        for ax in (top, bottom):
            ax.axvspan(
                *span(lo, hi),
                color="#d62728",
                alpha=0.22,
                lw=0,
                label="alert" if i == 0 and ax is top else None,
                zorder=2,
            )
    opens = [lo for lo, _ in alert_spans if lo >= 0 and np.isfinite(values[lo])]
    if opens:
        top.plot(
            pos[opens],
            values[opens],
            ls="none",
            marker="o",
            ms=6,
            mfc="none",
            mec="#d62728",
            mew=1.5,
            label="alert opens",
            zorder=5,
        )
    top.set_ylabel("value")
    top.grid(True, color="#e5e5e5", lw=0.6, zorder=0)
    bottom.plot(pos, scores, lw=0.9, color="#2ca02c", label="anomaly score", zorder=3)
    if open_level is not None:
        bottom.axhline(
            open_level,
            color="#d62728",
            ls="--",
            lw=1.0,
            label=f"alert level {open_level:g}",
            zorder=4,
        )
    # One legend for both panels, in a row above the data, so it never hides a reading.
    handles, labels = top.get_legend_handles_labels()
    more_handles, more_labels = bottom.get_legend_handles_labels()
    top.legend(
        handles + more_handles,
        labels + more_labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=len(labels) + len(more_labels),
        fontsize=9,
        frameon=False,
        borderaxespad=0.1,
        handlelength=1.6,
        columnspacing=1.4,
    )
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    bottom.set_ylim(-0.05, 1.08)
    bottom.set_ylabel("anomaly\nscore")
    bottom.grid(True, color="#e5e5e5", lw=0.6, zorder=0)
    bottom.set_xlim(edges[0], edges[-1])
    if is_time:
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bottom.set_xlabel("time (UTC)")
    else:
        bottom.set_xlabel("reading")
    path = Path(path)
    try:
        fig.savefig(path, dpi=100, format="png")  # a PNG whatever the name: written as named
    finally:
        plt.close(fig)
    return path


def _edges(pos: np.ndarray) -> np.ndarray:
    """Return n + 1 boundaries halfway between readings, so a one-reading span has a width."""
    if len(pos) == 0:
        return np.zeros(1)
    if len(pos) == 1:
        return np.array([pos[0] - 0.5, pos[0] + 0.5])
    mid = (pos[1:] + pos[:-1]) / 2
    return np.concatenate(([pos[0] - (mid[0] - pos[0])], mid, [pos[-1] + (pos[-1] - mid[-1])]))


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `rnnstream report`."""
    source = parser.add_argument_group("source (exactly one)")
    source.add_argument(
        "--synthetic", metavar="SEED", type=int, help="a synthetic sensor with injected anomalies"
    )
    source.add_argument("--csv", metavar="FILE", help="a CSV file, e.g. a NAB data file")
    synthetic = parser.add_argument_group("synthetic source")
    synthetic.add_argument(
        "--length", type=int, default=DEFAULT_LENGTH, help="readings (288 a day)"
    )
    synthetic.add_argument(
        "--anomaly-rate",
        type=float,
        default=None,
        help="chance per reading that an anomaly starts; without it, the generator's (1 in 1152)",
    )
    table = parser.add_argument_group("CSV source")
    table.add_argument(
        "--value-column",
        default=None,
        help="column to draw; without it, 'value' or the only other column",
    )
    table.add_argument(
        "--time-column",
        default=None,
        help="time column; without it, one named like timestamp, time or date, as `rnnstream "
        "train` finds it",
    )
    table.add_argument(
        "--stream-column",
        default=None,
        help="column of stream ids, for a file of several streams (then give --stream)",
    )
    table.add_argument(
        "--stream",
        default=None,
        help="with --stream-column, the stream to draw; without, a name for the file's rows "
        "(default: the file's stem)",
    )
    table.add_argument(
        "--windows",
        metavar="FILE.json",
        default=None,
        help="NAB labels JSON: shade the windows of key <category>/<name>.csv",
    )
    parser.add_argument(
        "--model", default=None, help="a scoring model file; without it, the built-in model"
    )
    defaults = AlertPolicy()
    alerts = parser.add_argument_group("alerts (as the daemon's)")
    alerts.add_argument(
        "--threshold", type=float, default=defaults.open_level, help="score that opens an alert"
    )
    alerts.add_argument(
        "--close", type=float, default=defaults.close_level, help="score below which it closes"
    )
    alerts.add_argument(
        "--min-duration",
        type=int,
        default=defaults.min_duration,
        help="readings at or above the threshold before an alert opens",
    )
    alerts.add_argument(
        "--cooldown",
        type=int,
        default=defaults.cooldown,
        help="quiet readings after an alert closes",
    )
    alerts.add_argument(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help="a stream's first readings during which no alert opens",
    )
    alerts.add_argument(
        "--error-gate",
        type=float,
        default=defaults.error_gate,
        help="an alert opens only on a reading this many typical forecast errors off (0: off)",
    )
    view = parser.add_argument_group(
        "picture",
        f"--start and --end: {RANGE_RULE}. A time selects the readings at or after --start and "
        "at or before --end. With either, the summary gets a second line for the readings drawn.",
    )
    view.add_argument(
        "--out",
        metavar="FILE.png",
        default=None,
        help="the PNG to write (.png is added to a name without an extension; an existing "
        "folder gets <name>.png inside it); without it, <name>.png here",
    )
    view.add_argument("--start", default=None, help="first reading drawn: index or time")
    view.add_argument("--end", default=None, help="last reading drawn: index or time")
    view.add_argument("--title", default=None, help="title above the picture")


def _load(args: argparse.Namespace) -> Series:
    if (args.synthetic is None) == (args.csv is None):
        raise UserError("give exactly one source: --synthetic SEED or --csv FILE")
    if args.synthetic is not None:
        csv_only = (args.value_column, args.time_column, args.stream_column, args.stream)
        if any(csv_only) or args.windows:
            raise UserError(
                "--value-column, --time-column, --stream-column, --stream and --windows go with "
                "--csv"
            )
        if args.synthetic < 0:
            raise UserError("--synthetic SEED must be at least 0")
        if args.length < 2:
            raise UserError("--length must be at least 2 readings")
        if args.anomaly_rate is not None and not 0.0 <= args.anomaly_rate <= 1.0:
            raise UserError("--anomaly-rate must be between 0 and 1")
        return synthetic_series(args.synthetic, args.length, args.anomaly_rate)
    path = Path(args.csv)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give --csv a CSV file")
    if not path.is_file():
        raise UserError(f"{path} not found; give --csv an existing CSV file")
    if args.windows is not None and not Path(args.windows).is_file():
        raise UserError(f"{args.windows} not found; give --windows the NAB labels JSON")
    try:
        return csv_series(
            path,
            value_column=args.value_column,
            time_column=args.time_column,
            stream_column=args.stream_column,
            stream=args.stream,
            windows_file=args.windows,
        )
    except UnicodeDecodeError:
        raise UserError(f"{path} or --windows is not a UTF-8 text file") from None
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _load_model(path: str | None) -> Model | None:
    if path is None:
        return None
    from engine.model import Model

    try:
        model = Model.load(path)
        check_scoring_model(model)
    except FileNotFoundError:
        raise UserError(f"{path} not found; give --model a model file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--model {path}: {exc}") from None
    return model


def run(args: argparse.Namespace) -> int:
    """Trace the chosen stream through a StreamEngine, draw it, print the path and a summary."""
    if not 0.0 < args.close <= args.threshold <= 1.0:
        raise UserError("need 0 < --close <= --threshold <= 1")
    if args.min_duration < 1 or args.cooldown < 0 or args.warmup < 0:
        raise UserError("--min-duration must be at least 1, --cooldown and --warmup at least 0")
    if not args.error_gate >= 0:
        raise UserError("--error-gate must be at least 0 (0 turns it off)")
    policy = AlertPolicy(
        open_level=args.threshold,
        close_level=args.close,
        min_duration=args.min_duration,
        cooldown=args.cooldown,
        warmup=args.warmup,
        error_gate=args.error_gate,
    )
    require_matplotlib()  # before the run, which can take seconds on a long file
    series = _load(args)
    model = _load_model(args.model)
    n = len(series.values)
    first, last = 0, n - 1
    for flag, text in (("--start", args.start), ("--end", args.end)):
        if text is None:
            continue
        try:
            index = reading_index(text, series.ts, n, end=flag == "--end")
        except ValueError as exc:
            raise UserError(f"{flag} {text}: {exc}") from None
        first, last = (index, last) if flag == "--start" else (first, index)
    if last < first:
        raise UserError(
            f"--start / --end select no reading: the first reading from --start is {first}, "
            f"the last up to --end is {last}"
        )
    out = out_path(args.out, series.name)

    result = trace(series.values, ts=series.ts, model=model, policy=policy, stream=series.name)
    spans = result.alert_spans

    view = slice(first, last + 1)
    if series.ts is not None:
        x = (series.ts[view] * 1e6).astype(np.int64).astype("datetime64[us]")
    else:
        x = np.arange(first, last + 1)
    title = args.title
    if title is None:
        model_name = "built-in model" if args.model is None else Path(args.model).name
        title = f"rnnstream report: {series.source or series.name} ({model_name})"
    try:
        plot_stream(
            out,
            values=result.values[view],
            expected=result.expected[view],
            scores=result.scores[view],
            x=x,
            windows=_clip(series.windows, first, last),
            alert_spans=_clip(spans, first, last, open_end=n - 1),
            open_level=policy.open_level,
            title=title,
        )
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}; choose another --out") from None
    print(out)
    # Labels exist for a synthetic sensor and for a CSV given --windows; otherwise say nothing.
    labelled = args.synthetic is not None or args.windows is not None
    print(f"{series.name}: {n} readings" + _summary(spans, series.windows, labelled))
    if (first, last) != (0, n - 1):
        drawn = [(lo, hi) for lo, hi in spans if lo <= last and (hi is None or hi >= first)]
        shown = [(lo, hi) for lo, hi in series.windows if lo <= last and hi >= first]
        when = ""
        if series.ts is not None:
            when = f" ({_utc(series.ts[first])} to {_utc(series.ts[last])})"
        print(f"drawn: readings {first} to {last}{when}" + _summary(drawn, shown, labelled))
    return 0


def _summary(spans: Sequence[Span], windows: Sequence[tuple[int, int]], labelled: bool) -> str:
    """Return ", A alerts[, labelled windows caught C of W]" for a summary line."""
    text = f", {len(spans)} alert{'' if len(spans) == 1 else 's'}"
    if labelled and windows:
        text += f", labelled windows caught {windows_caught(windows, spans)} of {len(windows)}"
    elif labelled:
        text += ", no labelled windows"
    return text


def out_path(out: str | None, name: str) -> Path:
    """Return the PNG `rnnstream report --out OUT` writes for a series called `name`.

    No OUT: `<name>.png` here; an existing folder: `<name>.png` inside it; a name without an
    extension gets `.png`. Raise UserError for another extension or a missing parent folder.
    """
    if out is None:
        return Path(f"{name}.png")
    path = Path(out)
    if path.is_dir():
        return path / f"{name}.png"
    if out.endswith("/"):
        raise UserError(f"{out} is not an existing folder; choose another --out")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    elif path.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the picture is a PNG; give a name ending in .png")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a folder; choose another --out")
    return path


def _clip(
    spans: Sequence[tuple[int, int | None]], first: int, last: int, open_end: int | None = None
) -> list[tuple[int, int]]:
    """Return spans cut to readings first..last, shifted so `first` is position 0."""
    out = []
    for lo, hi in spans:
        hi = open_end if hi is None else hi
        if hi >= first and lo <= last:
            out.append((max(lo, first) - first, min(hi, last) - first))
    return out
