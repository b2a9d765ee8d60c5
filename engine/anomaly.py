"""Per-stream anomaly scoring around a next-step forecaster, as jitted kernels over slot slabs.

Four steps per reading x_t of a stream, each a kernel that walks rows in order over slots:

1. `normalise_batch`: z_t = (x_t - m) / s with the stream's running mean m and scale s from
   *before* x_t, clipped to +-z_clip; then m and s take x_t in by exponential weighting (weight
   1/n over the first readings, so the warm-up is a plain average). The update is winsorised: a
   reading further than `norm_clip` scales from m moves m and s as if it lay at that distance, so
   a spike or a fresh level shift is not absorbed at once; a lasting shift still is, within a few
   hundred readings, because each clipped update widens s. It also flags novelty: a reading
   outside the range [min, max] of every earlier reading of the stream, widened on both sides
   by `novel_tol` times its width (Numenta's "spatial anomaly"; the tolerance keeps a slowly
   drifting series from flagging every small new extreme).
2. `residual_batch`: r_t = z_t - yhat_t, yhat_t the model's forecast of z_t made at t-1 and kept
   per stream; then the forecast made at t replaces it.
3. `score_batch`: each residual is measured against the stream's own running mean square of
   residuals (winsorised like the normaliser), u^2 = mean_f r_t^2 / (ms + resid_floor), so a
   series the model forecasts well and one it forecasts badly are judged on the same footing.
   e_t = 1 - exp(-u^2 / (2 err_scale^2)) is a bounded error in [0, 1) (one wild reading cannot
   dominate the statistics); a short exponential average a_t of e_t is compared with the
   long-run mean and variance of a (also exponentially weighted, taken before a_t joins them).
   With Q the Gaussian upper tail probability of (a_t - mean) / sd, the likelihood score is
   min(1, log10(1 / Q) / nines): the number of nines in the likelihood 1 - Q, over `nines`. The
   score is the larger of that and the novelty flag (a new extreme scores 1). It is 0 before
   `probation` readings. This is the idea of Numenta's anomaly likelihood (a short average of
   errors against their long distribution) written as recursive statistics, plus the
   observation that a never-seen level is itself anomalous.
4. `cooldown_batch`: one incident should raise one alarm. A score >= `alarm` starts a cool-down
   of `cooldown` readings during which the likelihood part is dropped (the score becomes the
   novelty flag alone: a further new extreme still scores 1). Without it the likelihood stays
   high while the error statistics absorb the incident and the stream reports it many times.

State lives in one slab, one float64 row per stream on the engine's slot axis
(`AnomalySpec.slab_specs()`): the alert state, error statistics, last normalised forecast,
residuals' mean square, last forecast in the stream's units and normaliser statistics, side by
side. The kernels take column views of it (`AnomalySpec.views`), one per kind of state, and
`normalise_batch` and `finish_batch` the slab itself; one row instead of six slabs keeps a
stream's state on adjacent cache lines within one or two pages, where six slabs at random slots
put it on six distant lines and pages (bench/README.md). A zeroed row is a fresh stream, so
`StateTable.admit` needs nothing special. The kernels allocate nothing. The engine
runs steps 2-4, the mapping of forecasts back to the streams' units and the alerts as one
kernel, `finish_batch`, so each stream's row is fetched once per reading.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any

import numpy as np

from engine.alerts import ALERT_COLUMNS, SCORING_SLAB, alert_row
from engine.kernels._jit import inline_kernel, kernel
from engine.kernels.cells import _LINE_BYTES, SLOT_PREFETCH_AHEAD, _prefetch_bytes
from engine.kernels.normal_tail import minus_log_normal_tail

# Rows ahead whose slab rows the kernels ask the CPU to fetch: batches land on random slots among
# many streams, and a row's few loads otherwise each wait on a cache (and TLB) miss.
PREFETCH_AHEAD = SLOT_PREFETCH_AHEAD

# Names of the views of the scoring row (`AnomalySpec.views`), in the row's order. The alert state
# comes first, so `engine.alerts` column indices address the row itself; then what `finish_batch`
# touches, adjacent; then what `normalise_batch` touches.
ALERT = "alert_state"  # (ALERT_COLUMNS,): see engine.alerts
# (5,): count, short average, long mean, long variance of errors, cool-down left
ERR = "anomaly_err"
PRED = "anomaly_pred"  # (F,): forecast of the next normalised reading
RESID = "anomaly_resid"  # (F,): running mean square of the residuals
FORECAST = "forecast"  # (F,): forecast of the next reading in the stream's units
# (5, F): count, mean, variance, min, max of the raw readings, each for the F features side by side
NORM = "anomaly_norm"
FINISH = "finish"  # (ALERT_COLUMNS + 5 + 3F,): the columns finish_batch touches
O_ERR = ALERT_COLUMNS  # first column of ERR; PRED, RESID, FORECAST, NORM follow

# rows of NORM (stream, row, feature), columns of ERR
N_COUNT, N_MEAN, N_VAR, N_MIN, N_MAX = 0, 1, 2, 3, 4
E_COUNT, E_SHORT, E_MEAN, E_VAR, E_COOL = 0, 1, 2, 3, 4

_LN10 = math.log(10.0)


_WINDOWS = ("norm_window", "resid_window", "short_window", "long_window")


@dataclass(frozen=True)
class AnomalySpec:
    """Constants of the anomaly kernels and the slabs they need.

    Time constants are in readings. `norm_window` / `long_window` / `resid_window` set the floor
    of the exponential weight (1 / window) once warm-up has passed. The detector constants
    (`novel_tol`, `short_window`, `err_scale`, `nines`, `alarm`, `cooldown`) were tuned by hand
    on the 19-file NAB development subset (bench/results/nab.md); the forecaster never saw NAB.
    """

    features: int = 1
    norm_window: float = 2000.0  # memory of the input mean and variance
    norm_clip: float = 4.0  # winsorise normaliser updates at this many scales
    z_clip: float = 8.0  # bound on the normalised reading the model sees
    scale_floor_rel: float = 1e-3  # scale >= rel * |mean| + abs: flat series stay finite
    scale_floor_abs: float = 1e-6
    novel_tol: float = 0.02  # novelty: beyond the seen range by this fraction of its width
    resid_window: float = 2000.0  # memory of the residuals' mean square
    resid_floor: float = 1e-3  # added to that mean square (normalised units squared)
    resid_clip: float = 16.0  # winsorise its updates at this many times the current value
    short_window: float = 4.0  # memory of the short error average
    long_window: float = 2000.0  # memory of the error distribution
    err_scale: float = 2.0  # residual (in residual RMS) at which the error is 1 - e^-0.5
    var_floor: float = 1e-2  # floor on the error average's variance
    probation: int = 300  # readings before a stream may score above 0
    nines: float = 10.0  # likelihood score 1 at a likelihood of 1 - 10**-nines
    alarm: float = 0.4  # a score this high starts a cool-down
    cooldown: int = 300  # readings after an alarm that score novelty only

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if name == "features":
                if isinstance(value, bool) or not isinstance(value, Integral):
                    raise ValueError(f"features: expected a whole number, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            # the kernels average with weight max(1 / (count + 1), 1 / window), which a window
            # below 1 makes exceed 1 (the averages diverge); they divide by err_scale and nines
            if name in _WINDOWS or name == "features":
                least, bound = value >= 1, "at least 1"
            elif name in ("err_scale", "nines"):
                least, bound = value > 0, "above 0"
            else:
                least, bound = value >= 0, "at least 0"
            if not least:
                raise ValueError(f"{name}: must be {bound}, got {value!r}")

    @classmethod
    def from_metadata(cls, section: Any) -> AnomalySpec:
        """Return the spec a model's metadata "anomaly" section describes (missing constants
        take their defaults); raise ValueError saying what is wrong with it."""
        if not isinstance(section, dict):
            raise ValueError(f"expected a dict of the detector's constants, got {section!r}")
        unknown = sorted(set(section) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)}; the constants are "
                f"{', '.join(f.name for f in fields(cls))}"
            )
        return cls(**section)

    @property
    def row_width(self) -> int:
        """Return the float64 columns of one stream's scoring row."""
        return ALERT_COLUMNS + 5 + 8 * self.features

    @property
    def norm_col(self) -> int:
        """Return the first column of NORM in a scoring row."""
        return O_ERR + 5 + 3 * self.features

    def slab_specs(self) -> dict[str, tuple[tuple[int, ...], type]]:
        """Return `{name: (shape, dtype)}` for `StateTable(specs=...)`, per stream."""
        return {SCORING_SLAB: ((self.row_width,), np.float64)}

    def allocate(self, capacity: int) -> dict[str, np.ndarray]:
        """Return zeroed slabs for `capacity` streams (what a StateTable would hold)."""
        return {
            name: np.zeros((capacity, *shape), dtype)
            for name, (shape, dtype) in self.slab_specs().items()
        }

    def views(self, slab: np.ndarray) -> dict[str, np.ndarray]:
        """Return the kernels' arrays as views into a scoring slab (capacity, row_width).

        Keys ALERT, ERR, PRED, RESID, FORECAST (capacity, columns) and NORM (capacity, 5, F);
        FINISH spans ALERT to FORECAST. Writing a view writes the slab.
        """
        f = self.features
        if slab.shape[1:] != (self.row_width,) or slab.dtype != np.float64:
            raise ValueError(f"scoring slab must be float64 (capacity, {self.row_width})")
        if not slab.flags.c_contiguous:
            raise ValueError("scoring slab must be C-contiguous")
        out: dict[str, np.ndarray] = {}
        start = 0
        # finish_batch slices its row in this order too
        for name, width in ((ALERT, ALERT_COLUMNS), (ERR, 5), (PRED, f), (RESID, f), (FORECAST, f)):
            out[name] = slab[:, start : start + width]
            start += width
        out[FINISH] = slab[:, :start]
        out[NORM] = np.lib.stride_tricks.as_strided(
            slab[:, start:], shape=(slab.shape[0], 5, f), strides=(slab.strides[0], 8 * f, 8)
        )
        return out

    def to_dict(self) -> dict:
        """Return the constants as a JSON-serialisable dict."""
        return asdict(self)


# ------------------------------------------------------------------------------------ kernels


@inline_kernel
def prefetch_row(view, slot):
    """Prefetch every cache line of view[slot], whose elements lie side by side in memory.

    view is a slab or a column view of one (its row stride may exceed its row's bytes). Rows
    need not start on a line boundary, so the last byte is asked for too.
    """
    _prefetch_span(view, slot, view.size // view.shape[0] * view.itemsize)


@inline_kernel
def _prefetch_span(slab, slot, nbytes):
    """Prefetch the cache lines of the first nbytes bytes of slab[slot]."""
    for offset in range(0, nbytes, _LINE_BYTES):
        _prefetch_bytes(slab, slot, offset)
    _prefetch_bytes(slab, slot, nbytes - 1)


@kernel(noalias=True)
def normalise_batch(
    slots,
    x_raw,
    norm,
    window,
    clip,
    z_clip,
    floor_rel,
    floor_abs,
    novel_tol,
    z_out,
    novel_out,
    mean_out,
    root_out,
    norm_col=0,
):  # pragma: no cover - jitted
    """Normalise readings per stream and feature, update the running statistics, flag novelty.

    slots (n,) int64; x_raw (n, F) float32/64, finite; norm (capacity, >= norm_col + 5 F)
    float64 C-contiguous, whose columns from norm_col hold per stream its count, mean, var, min
    and max, each for the F features side by side (the NORM view); z_out (n, F) float32/64;
    novel_out (n,) float32/64. No two arrays may share memory (the kernel is compiled with that
    promise). With m, v the state before the reading, s = sqrt(v) + floor_rel * |m| + floor_abs
    and z = clip((x - m) / s, +-z_clip) (z = 0 for the first reading). Then
    a = max(1 / (count + 1), 1 / window), d = clip(x - m, +-clip * s) (not clipped while
    count < 2, when s means little), m += a d, v = (1 - a) (v + a d^2), min / max take x in,
    count += 1. novel_out is 1 if some feature lies outside [min - tol w, max + tol w] of the
    earlier readings, w = max - min and tol = novel_tol, else 0 (0 for the first reading).
    mean_out, root_out (n, F) float64 receive m and sqrt(v) after the update, so that
    `finish_batch` maps the forecasts back to the streams' units without fetching the streams'
    statistics again.
    """
    params = (1.0 / window, clip, z_clip, floor_rel, floor_abs, novel_tol)
    # the same arithmetic either way, on the statistics in another form (see _normalise_rows)
    if x_raw.shape[1] >= VECTOR_FEATURES:
        _normalise_rows(
            slots, x_raw, norm, norm_col, params, z_out, novel_out, mean_out, root_out, True
        )
    else:
        _normalise_rows(
            slots, x_raw, norm, norm_col, params, z_out, novel_out, mean_out, root_out, False
        )


# Features from which normalise_batch runs its feature loop in vector registers. LLVM's vector
# loop takes 8 features a time here (two registers of 4 doubles): with fewer, the scalar remainder
# does all the work and the vector loop's set-up is a cost. Per 1024 rows at 10k streams, vector /
# scalar: 8 features 23 / 40 us, 16: 55 / 95, 4 to 7 even, 1: 10.0 / 8.9.
VECTOR_FEATURES = 8


@inline_kernel
def _normalise_rows(
    slots, x_raw, norm, norm_col, params, z_out, novel_out, mean_out, root_out, vector
):
    """Run `_normalise_row` over the batch, on each row's statistics in the form `vector` picks.

    With `vector`, five contiguous slices of the row (count, mean, var, min, max), which LLVM
    vectorises a loop over; else the row itself five times with the five slices' offsets,
    which it leaves scalar.
    """
    n, f = x_raw.shape
    block = norm[:, norm_col : norm_col + 5 * f]
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            prefetch_row(block, slots[i + PREFETCH_AHEAD])
        # typed contiguous, where Numba takes block[slot] for strided
        row = norm[slots[i], norm_col : norm_col + 5 * f]
        if row[0] == 0.0:  # its stream's first reading
            _start_stream(row, x_raw, i)
        if vector:
            stats = row[:f], row[f : 2 * f], row[2 * f : 3 * f], row[3 * f : 4 * f], row[4 * f :]
            offsets = (0, 0, 0, 0, 0)
        else:
            stats = row, row, row, row, row
            offsets = (0, f, 2 * f, 3 * f, 4 * f)
        novel_out[i] = _normalise_row(x_raw, i, stats, offsets, params, z_out, mean_out, root_out)


@inline_kernel
def _start_stream(row, x_raw, i):
    """Start a stream's mean, min and max at its first reading x_raw[i] (row: its NORM row).

    `_normalise_row` then finds d = 0, z = 0 and no novelty, and leaves mean, min and max at the
    reading (readings are finite: the engine refuses others).
    """
    f = x_raw.shape[1]
    for k in range(f):
        x = float(x_raw[i, k])
        row[N_MEAN * f + k] = x
        row[N_MIN * f + k] = x
        row[N_MAX * f + k] = x


@inline_kernel
def _normalise_row(x_raw, i, stats, offsets, params, z_out, mean_out, root_out):
    """Normalise row i of x_raw (see `normalise_batch`) and return its novelty flag, updating
    its stream's count, mean, var, min and max: stats[k][offsets[k] + f] for feature f.

    Every reading carries every feature, so the count is the same for all of them.
    """
    counts, means, variances, mins, maxes = stats
    at_count, at_mean, at_var, at_min, at_max = offsets
    floor_a, clip, z_clip, floor_rel, floor_abs, novel_tol = params
    features = x_raw.shape[1]
    count = counts[at_count]
    a = max(1.0 / (count + 1.0), floor_a)
    clipped = count >= 2.0
    outside = False
    for f in range(features):
        x = float(x_raw[i, f])
        mean = means[at_mean + f]
        var = variances[at_var + f]
        scale = math.sqrt(var) + floor_rel * abs(mean) + floor_abs
        d = x - mean
        z = min(max(d / scale, -z_clip), z_clip)
        if clipped:
            lim = clip * scale
            d = min(max(d, -lim), lim)
        lo = mins[at_min + f]
        hi = maxes[at_max + f]
        margin = novel_tol * (hi - lo)
        outside |= (x < lo - margin) | (x > hi + margin)
        mins[at_min + f] = min(lo, x)
        maxes[at_max + f] = max(hi, x)
        mean += a * d
        var = (1.0 - a) * (var + a * d * d)
        counts[at_count + f] = count + 1.0
        means[at_mean + f] = mean
        variances[at_var + f] = var
        mean_out[i, f] = mean
        root_out[i, f] = math.sqrt(var)
        z_out[i, f] = z
    return 1.0 if outside else 0.0


@inline_kernel
def _residual_row(z, y_next, pred, resid, i):
    """Write row i's resid = z - pred, then keep its new forecast y_next in pred (F,)."""
    for f in range(z.shape[1]):
        resid[i, f] = z[i, f] - pred[f]
        pred[f] = y_next[i, f]


@kernel
def residual_batch(slots, z, y_next, pred, resid_out):  # pragma: no cover - jitted
    """Write r = z - pred[slot] (the forecast made at the previous reading), then keep y_next.

    slots (n,) int64; z, y_next (n, F) float32/64 (y_next: the model's forecast of the next
    normalised reading); pred (capacity, F) float64; resid_out (n, F) float32/64.
    """
    n = z.shape[0]
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            prefetch_row(pred, slots[i + PREFETCH_AHEAD])
        _residual_row(z, y_next, pred[slots[i]], resid_out, i)


@inline_kernel
def _score_from_z(zs, nines):
    """Return min(1, log10(1 / Q(zs)) / nines) for zs > 0, Q the standard normal upper tail."""
    if zs <= 0.0:
        return 0.0
    minus_log_q = minus_log_normal_tail(zs)
    if minus_log_q == math.inf:  # Q(zs) underflows to 0
        return 1.0
    return min(minus_log_q / (_LN10 * nines), 1.0)


@kernel
def score_batch(
    slots,
    resid,
    novel,
    err,
    rms,
    resid_window,
    resid_floor,
    resid_clip,
    short_window,
    long_window,
    err_scale,
    var_floor,
    probation,
    nines,
    scores_out,
    surprise_out,
    err_col=0,
    rms_col=0,
):  # pragma: no cover - jitted
    """Turn residuals (and novelty flags) into scores in [0, 1], updating the error statistics.

    slots (n,) int64; resid (n, F) float32/64; novel (n,) float32/64 in {0, 1}; err (capacity,
    >= 4) float64 [count, short, mean, var, ...]; rms (capacity, F) float64, the residuals' mean
    square ms; scores_out (n,) float32/64. With count > 0 (the first residual compares the
    first reading with no forecast and is skipped): u2 = mean_f resid^2 / (ms + resid_floor),
    then ms += c (min(resid^2, resid_clip (ms + resid_floor)) - ms) per feature with
    c = max(1 / (count + 1), 1 / resid_window); u2 = 0 at count 0.
    e = 1 - exp(-u2 / (2 err_scale^2)); short += b (e - short) with
    b = max(1 / (count + 1), 1 / short_window); zs = (short - mean) / sqrt(max(var, var_floor))
    with mean, var from before this reading; score = max(likelihood score of zs, novel), and 0
    while count < probation. Then with a = max(1 / (count + 1), 1 / long_window):
    d = short - mean, mean += a d, var = (1 - a) (var + a d^2), count += 1.
    surprise_out (n,) float64 receives sqrt(u2 / F): the reading's forecast error in units of
    the stream's own typical error (root mean square over features).
    err and rms may be one scoring slab, with err_col and rms_col the first columns of each:
    a column view of it would be strided, and the sum over features then formed in another
    order than over a contiguous row (see `_score_row`).
    """
    n, features = resid.shape
    floor_b = 1.0 / short_window
    floor_a = 1.0 / long_window
    floor_c = 1.0 / resid_window
    inv = 1.0 / (2.0 * err_scale * err_scale * features)
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            ahead = slots[i + PREFETCH_AHEAD]
            prefetch_row(err[:, err_col:], ahead)
            prefetch_row(rms[:, rms_col : rms_col + features], ahead)
        slot = slots[i]
        score, surprise = _score_row(
            resid,
            novel[i],
            err[slot, err_col:],
            rms[slot, rms_col : rms_col + features],
            i,
            floor_a,
            floor_b,
            floor_c,
            inv,
            resid_floor,
            resid_clip,
            var_floor,
            probation,
            nines,
        )
        scores_out[i] = score
        surprise_out[i] = surprise


@inline_kernel
def _score_row(
    resid,
    novel,
    err,
    rms,
    i,
    floor_a,
    floor_b,
    floor_c,
    inv,
    resid_floor,
    resid_clip,
    var_floor,
    probation,
    nines,
):
    """Return row i's (score, surprise), updating its stream's err (5,) and rms (F,) rows.

    See `score_batch`. rms should be C-contiguous where F > 1: the sum over features is
    reassociated as the compiler vectorises it, and a strided row would sum in another order.
    """
    features = resid.shape[1]
    count = err[0]
    u2 = 0.0
    if count > 0.0:
        c = max(1.0 / (count + 1.0), floor_c)
        for f in range(features):
            r = float(resid[i, f])
            r2 = r * r
            base = rms[f] + resid_floor
            u2 += r2 / base
            rms[f] += c * (min(r2, resid_clip * base) - rms[f])
    e = 1.0 - math.exp(-u2 * inv)
    short = err[1] + max(1.0 / (count + 1.0), floor_b) * (e - err[1])
    mean = err[2]
    var = err[3]
    score = 0.0
    if count >= probation:
        score = _score_from_z((short - mean) / math.sqrt(max(var, var_floor)), nines)
        score = max(score, float(novel))
    a = max(1.0 / (count + 1.0), floor_a)
    d = short - mean
    err[0] = count + 1.0
    err[1] = short
    err[2] = mean + a * d
    err[3] = (1.0 - a) * (var + a * d * d)
    return score, math.sqrt(u2 / features)


@kernel
def cooldown_batch(slots, novel, err, alarm, cooldown, scores):  # pragma: no cover - jitted
    """Keep one alarm per incident: after a score >= alarm, score novelty only for a while.

    slots (n,) int64; novel (n,) float32/64 in {0, 1}; err (capacity, 5) float64, column 4 the
    readings of cool-down left; scores (n,) float32/64, rewritten in place. With readings of
    cool-down left, one is used up and the score becomes min(score, novel) (the score is
    already >= novel after probation, so a new extreme keeps its 1 and the likelihood is
    dropped). Otherwise a score >= alarm starts a cool-down of `cooldown` readings.
    """
    n = slots.shape[0]
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            prefetch_row(err, slots[i + PREFETCH_AHEAD])
        scores[i] = _cooldown_row(err[slots[i]], novel[i], scores[i], alarm, cooldown)


@inline_kernel
def _cooldown_row(err, novel, score, alarm, cooldown):
    """Return a score after its stream's cool-down (see `cooldown_batch`), updating err (5,)."""
    if err[4] > 0.0:
        err[4] -= 1.0
        return min(score, novel)
    if score >= alarm:
        err[4] = cooldown
    return score


@kernel
def exchange_forecast(slots, forecast, new, expected_out):  # pragma: no cover - jitted
    """Hand back each stream's previous forecast and keep its new one, in one pass.

    slots (n,) int64 distinct; forecast (capacity, F) float32/64; new, expected_out (n, F):
    expected_out[i] = forecast[slots[i]] (what was forecast for this reading), then
    forecast[slots[i]] = new[i] (the forecast for the next one).
    """
    n = new.shape[0]
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            prefetch_row(forecast, slots[i + PREFETCH_AHEAD])
        _exchange_row(forecast[slots[i]], new, expected_out, i)


@inline_kernel
def _exchange_row(forecast, new, expected, i):
    """Copy forecast (F,) to expected[i], then keep new[i] in its place."""
    for f in range(new.shape[1]):
        expected[i, f] = forecast[f]
        forecast[f] = new[i, f]


@kernel
def finish_batch(
    slots,
    z,
    y_next,
    novel,
    ts,
    rows,
    mean,
    root,
    score_params,
    alert_params,
    resid_out,
    scores_out,
    surprise_out,
    outputs_out,
    expected_out,
    events,
    peaks,
    lengths,
    opened,
):  # pragma: no cover - jitted
    """Do everything after the model for rows with distinct slots, one row at a time.

    Per row: `residual_batch`, `score_batch`, `cooldown_batch`, the forecast in the stream's
    units, `exchange_forecast` and `engine.alerts.alert_batch`, with the same results,
    so a stream's state is fetched once (and ahead of use) instead of once per kernel. rows
    (capacity, row_width) float64 is the scoring slab (see `AnomalySpec.views` for its columns);
    kernels are handed C-contiguous pieces of a row, so sums over features are formed exactly
    as over separate slabs.
    score_params float64: resid_window, resid_floor, resid_clip, short_window, long_window,
    err_scale, var_floor, probation, nines, alarm, cooldown, scale_floor_rel, scale_floor_abs;
    alert_params float64: open_level, close_level, min_duration, cooldown, warmup, error_gate.
    mean, root (n, F) float64 are the rows' statistics from `normalise_batch` (mean_out,
    root_out): outputs_out (n, F) receives the forecasts y_next in the streams' units,
    y_next * s + m with s = root + scale_floor_rel * |m| + scale_floor_abs, the scale the
    normaliser divides by.
    """
    n, features = z.shape
    resid_window = score_params[0]
    resid_floor = score_params[1]
    resid_clip = score_params[2]
    short_window = score_params[3]
    long_window = score_params[4]
    err_scale = score_params[5]
    var_floor = score_params[6]
    probation = score_params[7]
    nines = score_params[8]
    alarm = score_params[9]
    cooldown = score_params[10]
    floor_rel = score_params[11]
    floor_abs = score_params[12]
    floor_b = 1.0 / short_window
    floor_a = 1.0 / long_window
    floor_c = 1.0 / resid_window
    inv = 1.0 / (2.0 * err_scale * err_scale * features)
    o_pred = O_ERR + 5
    o_rms = o_pred + features
    o_forecast = o_rms + features
    finish_bytes = (o_forecast + features) * rows.itemsize
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            _prefetch_span(rows, slots[i + PREFETCH_AHEAD], finish_bytes)
        slot = slots[i]
        err = rows[slot, O_ERR : O_ERR + 5]
        _residual_row(z, y_next, rows[slot, o_pred : o_pred + features], resid_out, i)
        score, surprise = _score_row(
            resid_out,
            novel[i],
            err,
            rows[slot, o_rms : o_rms + features],
            i,
            floor_a,
            floor_b,
            floor_c,
            inv,
            resid_floor,
            resid_clip,
            var_floor,
            probation,
            nines,
        )
        score = _cooldown_row(err, novel[i], score, alarm, cooldown)
        scores_out[i] = score
        surprise_out[i] = surprise
        for f in range(features):
            m = mean[i, f]
            scale = root[i, f] + floor_rel * abs(m) + floor_abs
            outputs_out[i, f] = y_next[i, f] * scale + m
        _exchange_row(rows[slot, o_forecast : o_forecast + features], outputs_out, expected_out, i)
        alert_row(  # the alert columns come first in the row
            i,
            rows,
            slot,
            scores_out[i],
            surprise_out[i],
            ts[i],
            alert_params[0],
            alert_params[1],
            alert_params[2],
            alert_params[3],
            alert_params[4],
            alert_params[5],
            events,
            peaks,
            lengths,
            opened,
        )


# ------------------------------------------------------------------------- thin Python layer


class AnomalyScorer:
    """Run the kernels for a batch of rows whose slots are distinct, around a forecaster.

    Owns the scoring slab (or uses the one in the dict given, e.g. a StateTable's, following it
    when the table replaces it with a bigger one) and the per-batch buffers. Use
    `normalise(slots, x_raw)` before stepping the model with the returned z, then
    `score(slots, z, y_next)` with the model's forecasts of the next normalised readings.
    """

    def __init__(
        self,
        spec: AnomalySpec | None = None,
        capacity: int = 1,
        slabs: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.spec = spec or AnomalySpec()
        self.slabs = slabs if slabs is not None else self.spec.allocate(capacity)
        self._viewed: np.ndarray | None = None
        self._views: dict[str, np.ndarray] = {}
        self.views()  # check the slab now rather than at the first batch
        self._rows = 0
        self._ensure(1)
        s = self.spec
        self._score_params = np.array(
            [
                s.resid_window,
                s.resid_floor,
                s.resid_clip,
                s.short_window,
                s.long_window,
                s.err_scale,
                s.var_floor,
                float(s.probation),
                s.nines,
                s.alarm,
                float(s.cooldown),
                s.scale_floor_rel,
                s.scale_floor_abs,
            ]
        )

    def views(self) -> dict[str, np.ndarray]:
        """Return the views of the current scoring slab (`AnomalySpec.views`).

        Rebuilt only when the slab is another array (a StateTable that grew replaced it).
        """
        slab = self.slabs[SCORING_SLAB]
        if slab is not self._viewed:
            self._views = self.spec.views(slab)
            self._viewed = slab
        return self._views

    def _ensure(self, n: int) -> None:
        if n > self._rows:
            rows = max(n, 2 * self._rows)
            f = self.spec.features
            self._z = np.zeros((rows, f), np.float32)
            self._resid = np.zeros((rows, f), np.float32)
            self._novel = np.zeros(rows, np.float32)
            self._scores = np.zeros(rows, np.float64)
            self._surprise = np.zeros(rows, np.float64)
            self._mean = np.zeros((rows, f), np.float64)
            self._root = np.zeros((rows, f), np.float64)
            self._rows = rows

    def normalise(self, slots: np.ndarray, x_raw: np.ndarray) -> np.ndarray:
        """Return the normalised readings (n, F) float32 (a view of a reused buffer).

        The novelty flags of these rows are kept for the following `score` call, their updated
        means and roots of variances for the following `finish` call.
        """
        s = self.spec
        n = slots.shape[0]
        self._ensure(n)
        z = self._z[:n]
        self.views()  # checks a replaced slab
        normalise_batch(
            slots,
            x_raw,
            self.slabs[SCORING_SLAB],
            s.norm_window,
            s.norm_clip,
            s.z_clip,
            s.scale_floor_rel,
            s.scale_floor_abs,
            s.novel_tol,
            z,
            self._novel[:n],
            self._mean[:n],
            self._root[:n],
            s.norm_col,
        )
        return z

    def score(
        self,
        slots: np.ndarray,
        z: np.ndarray,
        y_next: np.ndarray,
        surprise_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return scores (n,) float64 in [0, 1] (a view of a reused buffer).

        surprise_out (n,) float64, if given, receives each reading's forecast error relative to
        its stream's typical error (see `score_batch`).
        """
        s = self.spec
        n = slots.shape[0]
        self._ensure(n)
        if surprise_out is None:
            surprise_out = self._surprise[:n]
        resid = self._resid[:n]
        views = self.views()
        rows = self.slabs[SCORING_SLAB]
        residual_batch(slots, z, y_next, views[PRED], resid)
        scores = self._scores[:n]
        novel = self._novel[:n]
        score_batch(
            slots,
            resid,
            novel,
            rows,
            rows,
            s.resid_window,
            s.resid_floor,
            s.resid_clip,
            s.short_window,
            s.long_window,
            s.err_scale,
            s.var_floor,
            float(s.probation),
            s.nines,
            scores,
            surprise_out,
            O_ERR,
            O_ERR + 5 + s.features,
        )
        cooldown_batch(slots, novel, views[ERR], s.alarm, float(s.cooldown), scores)
        return scores

    def finish(
        self,
        slots: np.ndarray,
        z: np.ndarray,
        y_next: np.ndarray,
        ts: np.ndarray,
        alert_params: np.ndarray,
        result: Any,
    ) -> None:
        """Score, map forecasts back, exchange them and track alerts in one pass (`finish_batch`).

        Call after `normalise` of the same slots. The same as `score`, then the forecasts in
        the streams' units, `exchange_forecast` and `engine.alerts.alert_batch` on the FORECAST
        and ALERT views;
        alert_params float64 is [open_level, close_level, min_duration, cooldown, warmup,
        error_gate]; result (an `engine.stream.StepResult`) receives scores, surprise,
        outputs (y_next in the streams' units), expected and the alert events and details.
        """
        n = slots.shape[0]
        self._ensure(n)
        self.views()  # checks a replaced slab
        finish_batch(
            slots,
            z,
            y_next,
            self._novel[:n],
            ts,
            self.slabs[SCORING_SLAB],
            self._mean[:n],
            self._root[:n],
            self._score_params,
            alert_params,
            self._resid[:n],
            result.scores,
            result.surprise,
            result.outputs,
            result.expected,
            result.events,
            result.peaks,
            result.lengths,
            result.opened,
        )


def norm_to_planar(rows: np.ndarray, spec: AnomalySpec) -> None:
    """Rewrite in place scoring rows (k, row_width) kept in the layout of rnnstream before
    snapshot format 2, whose NORM columns held per feature its count, mean, variance, min and
    max, into today's (`AnomalySpec.views`). Rows of one feature are the same in both."""
    c, f = spec.norm_col, spec.features
    block = rows[:, c:]
    block[:] = block.reshape(len(rows), f, 5).transpose(0, 2, 1).reshape(len(rows), 5 * f)


def online_normalise(values: np.ndarray, spec: AnomalySpec | None = None) -> np.ndarray:
    """Return a whole series (T,) or (T, F) normalised the way the engine does it online."""
    x = np.asarray(values, dtype=np.float64)
    z, _, _ = normalise_series(x.reshape(len(x), -1), spec)
    return z.reshape(x.shape)


def normalise_series(
    values: np.ndarray, spec: AnomalySpec | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise one stream's readings (T, F) as the engine does online; return z and the
    offset and scale (T, F) that map the forecast made at each reading back to the stream's
    units, forecast * scale + offset, as `finish_batch` does."""
    spec = spec or AnomalySpec()
    x = np.ascontiguousarray(values, dtype=np.float64)
    spec = AnomalySpec(**{**spec.to_dict(), "features": x.shape[1]})
    z = np.empty_like(x)
    mean = np.empty_like(x)
    root = np.empty_like(x)
    normalise_batch(
        np.zeros(len(x), np.int64),
        x,
        np.zeros((1, 5 * x.shape[1])),
        spec.norm_window,
        spec.norm_clip,
        spec.z_clip,
        spec.scale_floor_rel,
        spec.scale_floor_abs,
        spec.novel_tol,
        z,
        np.empty(len(x)),
        mean,
        root,
    )
    return z, mean, root + spec.scale_floor_rel * np.abs(mean) + spec.scale_floor_abs


__all__ = [
    "ALERT",
    "ERR",
    "FINISH",
    "FORECAST",
    "NORM",
    "PRED",
    "RESID",
    "AnomalyScorer",
    "AnomalySpec",
    "cooldown_batch",
    "exchange_forecast",
    "finish_batch",
    "normalise_batch",
    "normalise_series",
    "norm_to_planar",
    "online_normalise",
    "prefetch_row",
    "residual_batch",
    "score_batch",
]
