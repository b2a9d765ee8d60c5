"""Run a detector over the Numenta Anomaly Benchmark and score it the way NAB does.

The rules are those of `../shared/nab/README.md`: a probationary period, a scaled sigmoid that
rewards early detections inside a labelled window and softens false positives right after one,
the earliest detection per window, one threshold per corpus and profile chosen to maximise the
raw score, and a score normalised between the null detector (0) and the perfect one (100).

Pure numpy and the standard library: scoring never needs Numba or PyTorch.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750
TIMESTAMP_HEADER = "timestamp"


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare
class NabSeries:
    """One NAB data file and its anomaly windows as inclusive row ranges `(start, end)`."""

    key: str  # "<category>/<name>.csv", as in windows.json
    timestamps: np.ndarray  # datetime64[s], in file order (NAB files may step back once)
    values: np.ndarray  # float64
    windows: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def probation(self) -> int:
        """Return the number of leading rows NAB ignores when scoring this file."""
        return probation_length(len(self.values))


@dataclass(frozen=True)
class Profile:
    """A NAB cost profile: the reward of a detected window and the costs of errors."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


@dataclass(frozen=True)
class NabResult:
    """A detector's score on a corpus for one profile, at that profile's best threshold."""

    normalized: float
    raw: float
    threshold: float
    tp: int  # windows detected
    fp: int  # detections outside every window
    fn: int  # windows missed


# The table of the README, used when no profiles file is given.
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


class Detector(Protocol):
    """An online detector: one reading in, one anomaly score in [0, 1] out, past rows only."""

    def score_one(self, value: float) -> float: ...


# ----------------------------------------------------------------------------- loading


def probation_length(n_rows: int) -> int:
    """Return P = min(floor(0.15 N), 750), the number of rows that are never scored."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS)


def _parse_timestamps(texts: Sequence[str], where: str) -> np.ndarray:
    try:
        return np.array(texts, dtype="datetime64[s]")
    except ValueError as exc:
        raise ValueError(f"{where}: unreadable timestamp ({exc})") from None


def _numbers(
    texts: Sequence[str], path: Path, column: str, lines: Sequence[int] | None = None
) -> np.ndarray:
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError as exc:
        where = str(path)
        if lines is not None:
            for text, line in zip(texts, lines, strict=True):
                try:
                    float(text)
                except ValueError:
                    where = f"{path}:{line}"
                    break
        raise ValueError(f"{where}: column {column!r} holds a non-number ({exc})") from None


def _read_csv_columns(
    path: Path, columns: Sequence[str], lines: list[int] | None = None
) -> list[list[str]]:
    """Return the text of `columns`, one list per column; append each row's line to `lines`.

    A UTF-8 byte order mark before the header is ignored; empty rows are skipped.
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        idx = [header.index(c) for c in columns]
        out: list[list[str]] = [[] for _ in columns]
        for row in reader:
            if not row:
                continue
            if len(row) <= max(idx):
                raise ValueError(f"{path}:{reader.line_num}: too few fields ({len(row)})")
            for col, i in zip(out, idx, strict=True):
                col.append(row[i])
            if lines is not None:
                lines.append(reader.line_num)
    return out


def _window_rows(timestamps: np.ndarray, window: Sequence[str], key: str) -> tuple[int, int]:
    """Map an inclusive timestamp window to the inclusive row range it covers.

    A bound equal to a row's timestamp maps to the first such row, as NAB does; this matters
    because some NAB files step back in time once. A bound between rows maps inwards (the first
    row at or after the start, the last row at or before the end), which needs ordered times.
    """
    try:
        start, end = (np.datetime64(t, "s") for t in window)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: window {window!r} is not a pair of timestamps") from None
    bounds = []
    for bound, side in ((start, "left"), (end, "right")):
        exact = np.flatnonzero(timestamps == bound)
        if len(exact):
            bounds.append(int(exact[0]))
        elif np.all(timestamps[1:] > timestamps[:-1]):
            bounds.append(int(np.searchsorted(timestamps, bound, side=side)) - (side == "right"))
        else:
            raise ValueError(
                f"{key}: window bound {bound} is not a row's timestamp and the file's "
                "timestamps are not in order"
            )
    lo, hi = bounds
    if end < start or hi < lo:
        raise ValueError(f"{key}: window {list(window)} covers no row of the file")
    return lo, hi


def load_series(path: Path, key: str, windows: Sequence[Sequence[str]]) -> NabSeries:
    """Read one `timestamp,value` file and place its windows on rows."""
    ts_text, val_text = _read_csv_columns(path, (TIMESTAMP_HEADER, "value"))
    timestamps = _parse_timestamps(ts_text, str(path))
    values = _numbers(val_text, path, "value")
    if not isinstance(windows, list) or not all(
        isinstance(w, list) and len(w) == 2 for w in windows
    ):
        raise ValueError(f"{key}: windows must be a list of [start, end] pairs, got {windows!r}")
    rows = sorted(_window_rows(timestamps, w, key) for w in windows)
    for (_, prev_end), (start, _) in zip(rows, rows[1:], strict=False):
        if start <= prev_end:
            raise ValueError(f"{key}: anomaly windows overlap")
    return NabSeries(key, timestamps, values, rows)


def _read_json(path: str | Path) -> Any:
    """Parse a JSON file; ValueError names the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON file ({exc})") from None


def load_corpus(data_dir: str | Path, windows_file: str | Path) -> list[NabSeries]:
    """Load every file named in `windows_file` (NAB labels JSON) from `data_dir`, sorted by key."""
    data_dir = Path(data_dir)
    labels = _read_json(windows_file)
    if not isinstance(labels, dict):
        raise ValueError(
            f"{windows_file}: expected a JSON object of <category>/<name>.csv -> windows, "
            f"got a JSON {type(labels).__name__}"
        )
    if not labels:
        raise ValueError(
            f"{windows_file}: the JSON object names no file; expected entries like "
            '"<category>/<name>.csv": [[start, end], ...]'
        )
    series = []
    for key in sorted(labels):
        path = data_dir / key
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {windows_file} but not found")
        series.append(load_series(path, key, labels[key]))
    return series


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read NAB's `profiles.json` (name -> {"CostMatrix": {tpWeight, fpWeight, fnWeight}})."""
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of profile name -> cost matrix")
    profiles = {}
    for name, body in raw.items():
        costs = body.get("CostMatrix", body) if isinstance(body, dict) else None
        if not isinstance(costs, dict):
            raise ValueError(f"{path}: profile {name!r} is not an object of tp/fp/fn weights")
        try:
            profiles[name] = Profile(
                name, float(costs["tpWeight"]), float(costs["fpWeight"]), float(costs["fnWeight"])
            )
        except KeyError as exc:
            raise ValueError(f"{path}: profile {name!r} lacks {exc.args[0]}") from None
        except (TypeError, ValueError):
            raise ValueError(f"{path}: profile {name!r} has a non-numeric weight") from None
    if not profiles:
        raise ValueError(f"{path}: no profiles")
    return profiles


def read_detector_results(
    results_dir: str | Path, corpus: Sequence[NabSeries] | None = None
) -> dict[str, np.ndarray]:
    """Read `<dir>/<category>/<name>.csv` files with an `anomaly_score` column, keyed like NAB.

    Every score must lie in [0, 1]. With `corpus`, the result file of each of its series must
    also have a `timestamp` column with the data file's timestamps, row for row. Raise
    ValueError naming the file and line of the first offending row.
    """
    results_dir = Path(results_dir)
    by_key = {s.key: s for s in corpus or ()}
    scores = {}
    for path in sorted(results_dir.glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        data = by_key.get(key)
        lines: list[int] = []
        columns = ("anomaly_score",) if data is None else ("anomaly_score", TIMESTAMP_HEADER)
        texts = _read_csv_columns(path, columns, lines)
        a = _numbers(texts[0], path, "anomaly_score", lines)
        outside = np.flatnonzero(~((a >= 0.0) & (a <= 1.0)))  # NaN is outside too
        if len(outside):
            i = int(outside[0])
            raise ValueError(f"{path}:{lines[i]}: anomaly_score {texts[0][i]} is not in [0, 1]")
        if data is not None:
            _check_timestamps(path, lines, texts[1], data)
        scores[key] = a
    if not scores:
        raise FileNotFoundError(f"{results_dir}: no <category>/<name>.csv result files")
    return scores


def _check_timestamps(
    path: Path, lines: Sequence[int], texts: Sequence[str], data: NabSeries
) -> None:
    """Raise ValueError unless a result file's timestamps are its data file's, row for row."""
    n = len(data)
    if len(texts) > n:
        raise ValueError(f"{path}:{lines[n]}: a row beyond the {n} rows of {data.key}")
    try:
        stamps = np.array(texts, dtype="datetime64[s]")
    except ValueError:
        for text, line in zip(texts, lines, strict=True):
            _parse_timestamps([text], f"{path}:{line}")  # raises naming the first bad line
        raise
    differ = np.flatnonzero(stamps != data.timestamps[: len(stamps)])
    if len(differ):
        i = int(differ[0])
        want = _format_timestamps(data.timestamps[i : i + 1])[0]
        raise ValueError(
            f"{path}:{lines[i]}: timestamp {texts[i].strip()}, but row {i + 1} of {data.key} "
            f"is at {want}"
        )
    if len(texts) < n:
        raise ValueError(f"{path}: {len(texts)} rows for the {n} rows of {data.key}")


# ----------------------------------------------------------------------------- scoring


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """Return s(y) = 2 / (1 + exp(5 y)) - 1 for y <= 3 and -1 beyond (elementwise)."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):  # exp overflows to inf for large y: s -> -1, as intended
        s = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > 3.0, -1.0, s)


_S_EARLIEST = float(scaled_sigmoid(-1.0))


def row_weights(n_rows: int, windows: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Return `(unit_weight, window_index)` for every row of a file.

    Inside window k (rows [L, R], width W) the unit weight is s(y) / s(-1) with
    y = -(R - i + 1) / W and window_index is k; it is multiplied by A_TP. Outside every window
    window_index is -1 and the unit weight, multiplied by A_FP, is s((i - R') / (W' - 1)) after a
    window [L', R'] of width W', or -1 before the first window (and after a one-row window,
    whose W' - 1 = 0 makes y infinite).
    """
    i = np.arange(n_rows, dtype=np.float64)
    unit = np.full(n_rows, -1.0)
    index = np.full(n_rows, -1, dtype=np.int64)
    for k, (lo, hi) in enumerate(windows):
        width = hi - lo + 1
        inside = slice(lo, hi + 1)
        unit[inside] = scaled_sigmoid(-(hi - i[inside] + 1.0) / width) / _S_EARLIEST
        index[inside] = k
        after_end = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        after = slice(hi + 1, after_end)
        if width > 1:
            unit[after] = scaled_sigmoid((i[after] - hi) / (width - 1))
    return unit, index


@dataclass(frozen=True)
class _ScoredRows:
    """Every row after probation across the corpus, with its weight and global window id."""

    score: np.ndarray
    unit: np.ndarray
    window: np.ndarray  # global window id, -1 outside windows
    n_windows: int  # windows with at least one row after probation


def _gather(series: Sequence[NabSeries], scores: Mapping[str, np.ndarray]) -> _ScoredRows:
    parts_score, parts_unit, parts_window = [], [], []
    n_windows = 0
    for s in series:
        if s.key not in scores:
            raise KeyError(f"no anomaly scores for {s.key}")
        a = np.asarray(scores[s.key], dtype=np.float64)
        if a.ndim != 1 or len(a) != len(s):
            raise ValueError(
                f"{s.key}: {a.shape} anomaly scores for a file of {len(s)} rows; "
                "give exactly one score per row"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{s.key}: anomaly scores contain NaN or infinity")
        unit, local = row_weights(len(s), s.windows)
        keep = slice(s.probation, None)
        local = local[keep]
        # Windows entirely inside probation can never be detected; NAB leaves them out.
        scored = np.unique(local[local >= 0])
        glob = np.full(len(local), -1, dtype=np.int64)
        for k in scored:
            glob[local == k] = n_windows
            n_windows += 1
        parts_score.append(a[keep])
        parts_unit.append(unit[keep])
        parts_window.append(glob)
    return _ScoredRows(
        np.concatenate(parts_score),
        np.concatenate(parts_unit),
        np.concatenate(parts_window),
        n_windows,
    )


def _raw_at(rows: _ScoredRows, profile: Profile, threshold: float) -> tuple[float, int, int]:
    """Return (raw score, windows detected, false positives) at one threshold, directly."""
    detected = rows.score >= threshold
    outside = rows.window < 0
    fp_mask = detected & outside
    best = np.full(rows.n_windows, -np.inf)
    hit = detected & ~outside
    np.maximum.at(best, rows.window[hit], rows.unit[hit])
    found = np.isfinite(best)
    raw = (
        profile.a_fp * float(rows.unit[fp_mask].sum())
        + profile.a_tp * float(best[found].sum())
        - profile.a_fn * int((~found).sum())
    )
    return raw, int(found.sum()), int(fp_mask.sum())


def _sweep(rows: _ScoredRows, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Return every candidate threshold (descending) and the raw score at each.

    Lowering the threshold past a row adds that row's weight if it lies outside every window,
    or raises its window's best detection weight (from -A_FN on the first detection). So each
    row carries one increment and the raw score at threshold t is the sum of the increments of
    the rows scoring >= t: one sort and one cumulative sum cover all thresholds at once.
    """
    order = np.argsort(-rows.score, kind="stable")
    score = rows.score[order]
    window = rows.window[order]
    weight = np.where(window < 0, profile.a_fp, profile.a_tp) * rows.unit[order]
    step = np.where(window < 0, weight, 0.0)
    inside = np.flatnonzero(window >= 0)
    # Stable sort keeps each window's rows in descending score order.
    inside = inside[np.argsort(window[inside], kind="stable")]
    bounds = np.flatnonzero(np.diff(window[inside])) + 1
    for group in np.split(inside, bounds):
        if len(group) == 0:
            continue
        best = np.maximum.accumulate(weight[group])
        step[group] = np.diff(best, prepend=-profile.a_fn)
    total = np.cumsum(step) - profile.a_fn * rows.n_windows
    last_of_tie = np.flatnonzero(np.append(score[1:] != score[:-1], True))
    return score[last_of_tie], total[last_of_tie]


def score_corpus(
    series: Sequence[NabSeries],
    scores: Mapping[str, np.ndarray],
    profiles: Mapping[str, Profile] | None = None,
) -> dict[str, NabResult]:
    """Score a detector's per-row anomaly scores on a corpus, for each profile.

    The threshold is the distinct post-probation score that maximises the corpus raw score (the
    highest such threshold on a tie); detections are rows scoring >= threshold.
    """
    profiles = PROFILES if profiles is None else profiles
    rows = _gather(series, scores)
    if len(rows.score) == 0:
        raise ValueError("no rows left after the probationary periods")
    if rows.n_windows == 0:
        raise ValueError("the corpus has no anomaly window after probation; nothing to normalise")
    results = {}
    for name, profile in profiles.items():
        thresholds, totals = _sweep(rows, profile)
        threshold = float(thresholds[int(np.argmax(totals))])
        raw, tp, fp = _raw_at(rows, profile, threshold)
        perfect = profile.a_tp * rows.n_windows
        null = -profile.a_fn * rows.n_windows
        results[name] = NabResult(
            normalized=100.0 * (raw - null) / (perfect - null),
            raw=raw,
            threshold=threshold,
            tp=tp,
            fp=fp,
            fn=rows.n_windows - tp,
        )
    return results


# ----------------------------------------------------------------------------- detectors


class WindowedGaussian:
    """Baseline: how far a reading lies in the tail of a Gaussian fitted to past readings.

    The score is 1 - Q(|x - mean| / std), Q the standard normal tail probability, with mean and
    std (floored at 1e-6) over a window of past readings; the first reading scores 0. The window
    grows to `window` readings, then slides forward `step` readings at a time, so the fit is
    refreshed every `step` readings. This is NAB's windowedGaussian detector (window 6400,
    step 100), written from its description; it reproduces NAB's published outputs.
    """

    def __init__(self, window: int = 6400, step: int = 100) -> None:
        if not 1 <= step <= window:
            raise ValueError(f"need 1 <= step <= window, got step={step}, window={window}")
        self._window = np.empty(window, dtype=np.float64)
        self._filled = 0
        self._pending: list[float] = []  # readings waiting for the full window to slide
        self._step = step
        self._mean = 0.0
        self._std = 1.0

    def score_one(self, value: float) -> float:
        """Score `value` against the current fit, then let it into the window."""
        score = 0.0
        if self._filled:
            z = abs(value - self._mean) / self._std
            score = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
        window = self._window
        if self._filled < len(window):
            window[self._filled] = value
            self._filled += 1
            self._refit()
        else:
            self._pending.append(value)
            if len(self._pending) == self._step:
                window[: -self._step] = window[self._step :]
                window[-self._step :] = self._pending
                self._pending.clear()
                self._refit()
        return score

    def _refit(self) -> None:
        past = self._window[: self._filled]
        self._mean = float(past.mean())
        self._std = float(past.std()) or 1e-6


class RnnDetector:
    """The daemon's own scoring, one reading at a time.

    Each reading goes through `StreamEngine.process` with the built-in default model (trained on
    synthetic data, never on NAB), which normalises it online, steps the model and scores the
    previous forecast's error, as `rnnstream serve` does for every stream. The constants are the
    model's own (`metadata["anomaly"]`) unless `spec` replaces them.
    """

    def __init__(self, spec=None, model=None) -> None:
        from engine.default_model import load_default_model
        from engine.stream import StreamEngine

        model = model or load_default_model()
        if spec is not None:
            metadata = {**model.metadata, "anomaly": asdict(spec)}
            model = replace(model, metadata=metadata)
        self._engine = StreamEngine(model, capacity=1)
        self._streams = ["nab"]
        self._x = np.zeros((1, 1), np.float32)

    def score_one(self, value: float) -> float:
        """Step the stream with `value`; return its anomaly score."""
        self._x[0, 0] = value
        return float(self._engine.process(self._streams, self._x).scores[0])


# Name -> factory of a fresh detector per file. Others register their detectors here.
DETECTORS: dict[str, Callable[[], Detector]] = {
    "baseline": WindowedGaussian,
    "rnn": RnnDetector,
}


def _format_timestamps(timestamps: np.ndarray) -> list[str]:
    return [t.replace("T", " ") for t in np.datetime_as_string(timestamps, unit="s")]


def run_detector(
    series: Sequence[NabSeries],
    detector_factory: Callable[[], Detector],
    out_dir: str | Path,
) -> dict[str, np.ndarray]:
    """Feed each file, in time order, to a fresh detector and write `<out>/<key>` result files.

    Each result file has columns `timestamp,value,anomaly_score`, timestamps written as
    `YYYY-MM-DD HH:MM:SS` like the input. Return the scores keyed like the corpus.
    """
    out_dir = Path(out_dir)
    results = {}
    for s in series:
        detector = detector_factory()
        scores = np.empty(len(s), dtype=np.float64)
        for i, value in enumerate(s.values.tolist()):
            score = float(detector.score_one(value))
            if not 0.0 <= score <= 1.0:  # also rejects NaN
                raise ValueError(f"{s.key} row {i}: detector returned {score}, not in [0, 1]")
            scores[i] = score
        path = out_dir / s.key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([TIMESTAMP_HEADER, "value", "anomaly_score"])
            for row in zip(
                _format_timestamps(s.timestamps), s.values.tolist(), scores.tolist(), strict=True
            ):
                writer.writerow([row[0], repr(row[1]), repr(row[2])])
        results[s.key] = scores
    return results


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `rnnstream nab`."""
    parser.add_argument("--data", default="../shared/nab/data", help="NAB data directory")
    parser.add_argument(
        "--windows", default="../shared/nab/windows.json", help="NAB anomaly windows (JSON)"
    )
    parser.add_argument(
        "--profiles",
        default=None,
        help="NAB cost profiles (default: profiles.json next to --windows)",
    )
    parser.add_argument("--out", default=None, help="directory for the detector's result files")
    parser.add_argument(
        "--detector",
        default="rnn",
        choices=sorted(DETECTORS),
        help="rnn: the engine on the built-in model; baseline: a windowed Gaussian",
    )
    parser.add_argument(
        "--score-only",
        metavar="DIR",
        default=None,
        help="score existing <category>/<name>.csv result files instead of running a detector",
    )


def format_table(results: Mapping[str, NabResult]) -> str:
    """Render the per-profile results as a fixed-width text table."""
    lines = [
        f"{'profile':<20} {'score':>7} {'raw':>9} {'threshold':>20} {'TP':>4} {'FP':>5} {'FN':>4}"
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<20} {r.normalized:>7.2f} {r.raw:>9.3f} {r.threshold!r:>20} "
            f"{r.tp:>4} {r.fp:>5} {r.fn:>4}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run (or read) a detector's results on the NAB corpus and print the three profile scores."""
    from engine.cli import UserError

    windows = Path(args.windows)
    profiles_path = Path(args.profiles) if args.profiles else windows.parent / "profiles.json"
    for path, flag in ((Path(args.data), "--data"), (windows, "--windows")):
        if not path.exists():
            raise UserError(f"{path} not found; point {flag} at the NAB data")
    if not profiles_path.is_file():
        raise UserError(f"{profiles_path} not found; give --profiles FILE")
    try:
        series = load_corpus(args.data, windows)
        profiles = load_profiles(profiles_path)
        if args.score_only:
            if not Path(args.score_only).is_dir():
                raise UserError(
                    f"--score-only {args.score_only} is not a folder; give it the folder of "
                    "<category>/<name>.csv result files"
                )
            scores = read_detector_results(args.score_only, series)
            source = args.score_only
        else:
            if not args.out:
                raise UserError("give --out DIR for the result files (or --score-only DIR)")
            _make_out_dir(Path(args.out))
            scores = run_detector(series, DETECTORS[args.detector], args.out)
            source = f"detector {args.detector!r}, results in {args.out}"
        results = score_corpus(series, scores, profiles)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    n_windows = sum(len(s.windows) for s in series)
    print(f"NAB: {len(series)} files, {n_windows} windows; {source}")
    print(format_table(results))
    return 0


def _make_out_dir(out: Path) -> None:
    """Create the --out folder, or raise UserError saying why it cannot be one."""
    from engine.cli import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the result files")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make the --out folder {out}: {exc.strerror}") from None
