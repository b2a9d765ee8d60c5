"""Anomaly kernels vs float64 numpy references, score properties, default model, NAB detector."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.alerts import A_THRESHOLD, ALERT_COLUMNS, SCORING_SLAB
from engine.anomaly import (
    ALERT,
    ERR,
    FINISH,
    FORECAST,
    N_COUNT,
    N_MAX,
    N_MEAN,
    N_MIN,
    N_VAR,
    NORM,
    PRED,
    RESID,
    VECTOR_FEATURES,
    AnomalyScorer,
    AnomalySpec,
    _score_from_z,
    cooldown_batch,
    exchange_forecast,
    normalise_batch,
    online_normalise,
    residual_batch,
    score_batch,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
NAB_DIR = SHARED / "nab"


# ------------------------------------------------------------------- float64 numpy references


def ref_normalise(x: np.ndarray, spec: AnomalySpec) -> tuple[np.ndarray, ...]:
    """Normalise one stream's readings (T, F) step by step, as the module docstring says.

    Returns z and the novelty flags, and the mean and scale after each reading has been taken
    in: what maps a forecast of the next normalised reading back to the stream's units.
    """
    T, F = x.shape
    count = 0
    mean = np.zeros(F)
    var = np.zeros(F)
    lo = np.zeros(F)
    hi = np.zeros(F)
    z = np.zeros((T, F))
    novel = np.zeros(T)
    mean_after = np.zeros((T, F))
    scale_after = np.zeros((T, F))
    for t in range(T):
        a = max(1.0 / (count + 1), 1.0 / spec.norm_window)
        scale = np.sqrt(var) + spec.scale_floor_rel * np.abs(mean) + spec.scale_floor_abs
        if count == 0:
            mean = x[t].copy()
            lo, hi = x[t].copy(), x[t].copy()
            d = np.zeros(F)
        else:
            d = x[t] - mean
            z[t] = np.clip(d / scale, -spec.z_clip, spec.z_clip)
            if count >= 2:
                d = np.clip(d, -spec.norm_clip * scale, spec.norm_clip * scale)
            margin = spec.novel_tol * (hi - lo)
            novel[t] = float(np.any(x[t] < lo - margin) or np.any(x[t] > hi + margin))
            lo, hi = np.minimum(lo, x[t]), np.maximum(hi, x[t])
        mean = mean + a * d
        var = (1 - a) * (var + a * d * d)
        count += 1
        mean_after[t] = mean
        scale_after[t] = np.sqrt(var) + spec.scale_floor_rel * np.abs(mean) + spec.scale_floor_abs
    return z, novel, mean_after, scale_after


def ref_scores(
    resid: np.ndarray, novel: np.ndarray, spec: AnomalySpec
) -> tuple[np.ndarray, np.ndarray]:
    """Score one stream's residuals (T, F) step by step, with scipy-free Gaussian tails.

    Returns the scores before the cool-down (`cooldown_batch` has its own reference) and the
    surprise: each error relative to the stream's earlier errors, sqrt(mean_f r^2 / (ms + floor)).
    """
    T, F = resid.shape
    short = mean = var = 0.0
    ms = np.zeros(F)
    out = np.zeros(T)
    surprise = np.zeros(T)
    for t in range(T):
        u2 = 0.0
        if t > 0:
            r2 = resid[t] ** 2
            base = ms + spec.resid_floor
            u2 = np.mean(r2 / base)
            surprise[t] = math.sqrt(u2)
            c = max(1.0 / (t + 1), 1.0 / spec.resid_window)
            ms = ms + c * (np.minimum(r2, spec.resid_clip * base) - ms)
        e = 1.0 - math.exp(-u2 / (2 * spec.err_scale**2))
        short += max(1.0 / (t + 1), 1.0 / spec.short_window) * (e - short)
        if t >= spec.probation:
            zs = (short - mean) / math.sqrt(max(var, spec.var_floor))
            like = 0.0
            if zs > 0:
                q = 0.5 * math.erfc(zs / math.sqrt(2.0))
                like = 1.0 if q == 0 else min(-math.log10(q) / spec.nines, 1.0)
            out[t] = max(like, novel[t])
        a = max(1.0 / (t + 1), 1.0 / spec.long_window)
        d = short - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
    return out, surprise


def ref_cooldown(scores: np.ndarray, novel: np.ndarray, spec: AnomalySpec) -> np.ndarray:
    """Apply the cool-down to one stream's scores: novelty only for a while after an alarm."""
    out = scores.copy()
    left = 0
    for t in range(len(out)):
        if left > 0:
            left -= 1
            out[t] = novel[t] if novel[t] < out[t] else out[t]
        elif out[t] >= spec.alarm:
            left = spec.cooldown
    return out


def _streams(n_streams: int, T: int, F: int, seed: int) -> np.ndarray:
    """Return (n_streams, T, F) readings: levels, random walks, spikes and a level shift."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n_streams, T, F)).cumsum(axis=1) * 0.1
    x += rng.uniform(-50, 50, (n_streams, 1, F)) + rng.normal(0, 1, (n_streams, T, F))
    x[:, T // 2 :, :] += 6.0
    x[:, T // 3, :] += 40.0
    return x


def _interleaved(n_streams: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Return rows (t, stream) in time order and the slot of each row; slots are shuffled."""
    slots_of = np.random.default_rng(1).permutation(np.arange(n_streams) * 3 + 1)
    order = [(t, s) for t in range(T) for s in range(n_streams)]
    return np.array(order), slots_of


# ------------------------------------------------------------------------------ kernel checks


@pytest.mark.parametrize("features", [1, 3, 10])  # 10: vector registers and a scalar remainder
def test_normalise_batch_matches_float64_reference_over_many_steps(features: int) -> None:
    spec = AnomalySpec(features=features, norm_window=50.0)
    n_streams, T = 4, 400
    x = _streams(n_streams, T, features, seed=features)
    order, slots_of = _interleaved(n_streams, T)
    norm = np.zeros((3 * n_streams + 2, 5 * features))
    planes = norm.reshape(len(norm), 5, features)  # the NORM view's layout
    z = np.zeros((len(order), features))
    novel = np.zeros(len(order))
    mean = np.zeros((len(order), features))
    root = np.zeros((len(order), features))
    # Rows arrive in batches of one reading per stream, slots scattered in the slab.
    for lo in range(0, len(order), n_streams):
        rows = order[lo : lo + n_streams]
        normalise_batch(
            slots_of[rows[:, 1]],
            x[rows[:, 1], rows[:, 0]],
            norm,
            spec.norm_window,
            spec.norm_clip,
            spec.z_clip,
            spec.scale_floor_rel,
            spec.scale_floor_abs,
            spec.novel_tol,
            z[lo : lo + n_streams],
            novel[lo : lo + n_streams],
            mean[lo : lo + n_streams],
            root[lo : lo + n_streams],
        )
        # the statistics kept for mapping forecasts back are those left in the slab
        rows_slots = slots_of[rows[:, 1]]
        np.testing.assert_array_equal(mean[lo : lo + n_streams], planes[rows_slots, N_MEAN])
        np.testing.assert_array_equal(root[lo : lo + n_streams], np.sqrt(planes[rows_slots, N_VAR]))
    for s in range(n_streams):
        want_z, want_novel, _, _ = ref_normalise(x[s], spec)
        mine = order[:, 1] == s
        np.testing.assert_allclose(z[mine], want_z, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(novel[mine], want_novel)


def test_normalise_batch_does_not_absorb_a_spike_at_once() -> None:
    x = np.concatenate([np.random.default_rng(0).normal(10, 1, 500), [60.0], np.full(5, 10.0)])
    z = online_normalise(x)
    assert z[500] > 7.9  # clipped at z_clip = 8
    assert abs(z[501]) < 1.5  # one winsorised update barely moves the mean or scale


def test_residual_batch_uses_previous_forecast_and_stores_new_one() -> None:
    rng = np.random.default_rng(2)
    pred = np.zeros((5, 2))
    slots = np.array([3, 1], np.int64)
    z1, y1, z2, y2 = (rng.normal(size=(2, 2)) for _ in range(4))
    r = np.zeros((2, 2))
    residual_batch(slots, z1, y1, pred, r)
    np.testing.assert_allclose(r, z1)
    residual_batch(slots, z2, y2, pred, r)
    np.testing.assert_allclose(r, z2 - y1)
    np.testing.assert_allclose(pred[slots], y2)
    assert not pred[[0, 2, 4]].any()


def test_score_batch_matches_float64_reference_over_many_steps() -> None:
    spec = AnomalySpec(probation=50, long_window=200.0, short_window=3.0, nines=6.0)
    n_streams, T, F = 3, 600, 2
    rng = np.random.default_rng(3)
    resid = rng.standard_t(3, size=(n_streams, T, F))
    resid[:, 400:410] *= 8.0
    novel = (rng.random((n_streams, T)) < 0.01).astype(np.float64)
    order, slots_of = _interleaved(n_streams, T)
    err = np.zeros((3 * n_streams + 2, 5))
    rms = np.zeros((3 * n_streams + 2, F))
    out = np.zeros(len(order))
    surprise = np.zeros(len(order))
    for lo in range(0, len(order), n_streams):
        rows = order[lo : lo + n_streams]
        score_batch(
            slots_of[rows[:, 1]],
            resid[rows[:, 1], rows[:, 0]],
            novel[rows[:, 1], rows[:, 0]],
            err,
            rms,
            spec.resid_window,
            spec.resid_floor,
            spec.resid_clip,
            spec.short_window,
            spec.long_window,
            spec.err_scale,
            spec.var_floor,
            float(spec.probation),
            spec.nines,
            out[lo : lo + n_streams],
            surprise[lo : lo + n_streams],
        )
    for s in range(n_streams):
        want, want_surprise = ref_scores(resid[s], novel[s], spec)
        np.testing.assert_allclose(out[order[:, 1] == s], want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(surprise[order[:, 1] == s], want_surprise, rtol=1e-9)
    assert out.max() == 1.0  # the burst or a novelty flag reaches the top
    assert not err[[0, 2, 3, 5, 6, 8, 9, 10]].any()  # rows of other slots stay untouched


@pytest.mark.parametrize("nines", [1.0, 6.0, 10.0, 40.0, 400.0])
def test_likelihood_score_is_exact_beyond_the_fitted_tail_for_any_nines(nines: float) -> None:
    # zs past TAIL_LIMIT (8) takes libm: only a large `nines` sees it unsaturated
    zs = np.concatenate([[-1.0, -0.0, 0.0, 5e-324], np.linspace(0.01, 40.0, 4001), [np.inf]])
    for z in zs:
        q = 0.5 * math.erfc(z / math.sqrt(2.0))
        want = 0.0 if z <= 0 else 1.0 if q == 0 else min(-math.log10(q) / nines, 1.0)
        assert _score_from_z(z, nines) == pytest.approx(want, rel=1e-14, abs=0.0), z
    assert math.isnan(_score_from_z(math.nan, nines))


def test_cooldown_batch_matches_reference_and_keeps_one_alarm_per_burst() -> None:
    spec = AnomalySpec(alarm=0.5, cooldown=7)
    n_streams, T = 3, 200
    rng = np.random.default_rng(4)
    scores = rng.random((n_streams, T)) ** 6  # mostly low, now and then above the alarm
    novel = (rng.random((n_streams, T)) < 0.05).astype(np.float64)
    scores = np.maximum(scores, novel)
    order, slots_of = _interleaved(n_streams, T)
    err = np.zeros((3 * n_streams + 2, 5))
    got = scores[order[:, 1], order[:, 0]].copy()
    for lo in range(0, len(order), n_streams):
        rows = order[lo : lo + n_streams]
        cooldown_batch(
            slots_of[rows[:, 1]],
            novel[rows[:, 1], rows[:, 0]],
            err,
            spec.alarm,
            float(spec.cooldown),
            got[lo : lo + n_streams],
        )
    for s in range(n_streams):
        want = ref_cooldown(scores[s], novel[s], spec)
        mine = got[order[:, 1] == s]
        np.testing.assert_array_equal(mine, want)
        # Alarms that are not new extremes are at least a cool-down apart.
        alarms = np.flatnonzero((mine >= spec.alarm) & (novel[s] == 0))
        assert np.all(np.diff(alarms) > spec.cooldown)
        assert np.all(mine[novel[s] == 1] == 1.0)  # a new extreme always scores 1


def test_normalise_batch_flags_novelty_only_beyond_the_tolerance() -> None:
    spec = AnomalySpec(novel_tol=0.1)
    # Margins: 1.0 after 10.0, 1.05 after 10.5, 1.17 after 11.7, 1.27 after -1.0.
    x = np.array([0.0, 10.0, 10.5, 11.7, -1.0, -2.5])
    _, novel, _, _ = ref_normalise(x.reshape(-1, 1), spec)
    assert novel.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    got = np.zeros(len(x))
    normalise_batch(
        np.zeros(len(x), np.int64),
        x.reshape(-1, 1),
        spec.allocate(1)[SCORING_SLAB],
        spec.norm_window,
        spec.norm_clip,
        spec.z_clip,
        spec.scale_floor_rel,
        spec.scale_floor_abs,
        spec.novel_tol,
        np.zeros((len(x), 1)),
        got,
        np.zeros((len(x), 1)),
        np.zeros((len(x), 1)),
        spec.norm_col,
    )
    np.testing.assert_array_equal(got, novel)


def _normalise_stream(x: np.ndarray, spec: AnomalySpec) -> tuple[np.ndarray, ...]:
    """Run normalise_batch over one stream's readings (T, F), one after the other; return z,
    novelty flags, means and roots of variances."""
    T, F = x.shape
    z, mean, root = np.zeros((T, F)), np.zeros((T, F)), np.zeros((T, F))
    novel = np.zeros(T)
    window_and_clips = spec.norm_window, spec.norm_clip, spec.z_clip
    floors_and_tol = spec.scale_floor_rel, spec.scale_floor_abs, spec.novel_tol
    slots = np.zeros(T, np.int64)  # the same stream on every row
    stats = np.zeros((1, 5 * F))
    normalise_batch(slots, x, stats, *window_and_clips, *floors_and_tol, z, novel, mean, root)
    return z, novel, mean, root


def test_normalise_batch_computes_each_feature_as_a_stream_of_that_feature_alone() -> None:
    # Ten features run in vector registers (and a scalar remainder), one does not: the
    # arithmetic is the same bit for bit, and a reading is novel when one of its features is.
    features = 10
    assert features >= VECTOR_FEATURES
    spec = AnomalySpec(features=features, norm_window=50.0)
    x = _streams(1, 400, features, seed=7)[0]
    together = _normalise_stream(x, spec)
    alone = [_normalise_stream(x[:, [f]], spec) for f in range(features)]
    for k in (0, 2, 3):  # z, mean, root
        np.testing.assert_array_equal(together[k], np.hstack([part[k] for part in alone]))
    np.testing.assert_array_equal(together[1], np.max([part[1] for part in alone], axis=0))
    assert 0 < together[1].sum() < len(x)


def test_norm_view_holds_each_statistic_of_all_features_side_by_side() -> None:
    spec = AnomalySpec(features=2)
    scorer = AnomalyScorer(spec, capacity=3)
    scorer.normalise(np.array([1], np.int64), np.array([[3.0, 5.0]]))
    row = scorer.slabs[SCORING_SLAB][1, spec.norm_col :]
    # count, mean, var, min, max of feature 0 then 1
    assert row.tolist() == [1.0, 1.0, 3.0, 5.0, 0.0, 0.0, 3.0, 5.0, 3.0, 5.0]
    norm = scorer.views()[NORM][1]
    assert norm[N_MEAN].tolist() == norm[N_MIN].tolist() == norm[N_MAX].tolist() == [3.0, 5.0]


def test_anomaly_spec_slabs_fit_a_state_table() -> None:
    from engine.state import StateTable

    spec = AnomalySpec(features=2)
    table = StateTable(spec.slab_specs(), capacity=4)
    scorer = AnomalyScorer(spec, slabs=table.slabs)
    views = scorer.views()
    assert table.slabs[SCORING_SLAB].shape == (4, ALERT_COLUMNS + 5 + 8 * 2)
    assert views[ALERT].shape == (4, ALERT_COLUMNS)
    assert views[ERR].shape == (4, 5)
    assert views[PRED].shape == (4, 2)
    assert views[RESID].shape == (4, 2)
    assert views[FORECAST].shape == (4, 2)
    assert views[NORM].shape == (4, 5, 2)
    assert views[FINISH].shape == (4, ALERT_COLUMNS + 5 + 3 * 2)
    z = scorer.normalise(np.array([0, 2], np.int64), np.ones((2, 2)))
    assert z.shape == (2, 2)
    assert views[NORM][[0, 2], N_COUNT].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_scoring_views_tile_the_row_without_overlap() -> None:
    spec = AnomalySpec(features=3)
    slab = spec.allocate(5)[SCORING_SLAB]
    views = spec.views(slab)
    for k, name in enumerate((ALERT, ERR, PRED, RESID, FORECAST, NORM)):
        views[name][2] = k + 1  # every column of stream 2 in this view
    row = slab[2].tolist()
    widths = [ALERT_COLUMNS, 5, 3, 3, 3, 15]
    assert row == [float(k + 1) for k, w in enumerate(widths) for _ in range(w)]
    assert not slab[[0, 1, 3, 4]].any()  # other streams' rows untouched
    assert views[FINISH][2].tolist() == row[: ALERT_COLUMNS + 5 + 9]
    assert views[ALERT][2, A_THRESHOLD] == slab[2, A_THRESHOLD]  # alert columns index the row


def test_scorer_follows_a_state_table_that_grows() -> None:
    from engine.state import StateTable

    spec = AnomalySpec(features=2)
    table = StateTable(spec.slab_specs(), capacity=1)
    scorer = AnomalyScorer(spec, slabs=table.slabs)
    first = table.admit("a")
    scorer.normalise(np.array([first], np.int64), np.full((1, 2), 3.0))
    second = table.admit("b")  # the table grows and replaces its slab
    assert table.capacity == 2
    scorer.normalise(np.array([first, second], np.int64), np.full((2, 2), 5.0))
    norm = scorer.views()[NORM]
    assert np.shares_memory(norm, table.slabs[SCORING_SLAB])
    assert norm[first, N_COUNT].tolist() == [2.0, 2.0]  # both readings counted in the grown slab
    assert norm[second, N_COUNT].tolist() == [1.0, 1.0]
    assert norm[first, N_MEAN].tolist() == [4.0, 4.0]  # mean of 3 and 5


def test_scorer_refuses_a_slab_of_the_wrong_width() -> None:
    spec = AnomalySpec(features=2)
    with pytest.raises(ValueError, match="scoring slab"):
        AnomalyScorer(spec, slabs={SCORING_SLAB: np.zeros((3, spec.row_width + 1))})


# ----------------------------------------------------------------- behaviour on whole series


def _score_series(values: np.ndarray) -> np.ndarray:
    """Score one stream's readings the way the daemon does: `StreamEngine.process` with the
    default model, which normalises, forecasts and scores each reading."""
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    engine = StreamEngine(load_default_model(), capacity=1)
    x = np.asarray(values, np.float32).reshape(-1, 1, 1)
    return np.array([engine.process(["s"], row).scores[0] for row in x])


def _clean(n: int, seed: int) -> np.ndarray:
    from producers.synthetic import series

    return series(n, seed=seed, index=7, anomaly_rate=0.0)[0]


@pytest.fixture(scope="module")
def clean_scores() -> tuple[np.ndarray, np.ndarray]:
    values = _clean(3000, seed=11)
    return values, _score_series(values)


def test_scores_are_in_unit_interval_without_nan_and_zero_in_probation(clean_scores) -> None:
    _, s = clean_scores
    assert np.all(np.isfinite(s)) and s.min() >= 0.0 and s.max() <= 1.0
    assert not s[: AnomalySpec().probation].any()


def test_clean_series_stays_low_after_its_range_is_known(clean_scores) -> None:
    values, s = clean_scores
    # After two days most new extremes have been seen; the likelihood stays well below 1.
    assert np.quantile(s[600:], 0.99) < 0.5
    assert np.mean(s[600:] >= 0.5) < 0.01


@pytest.mark.parametrize(("kind", "factor"), [("spike", 4.0), ("level_shift", 1.5)])
def test_spike_or_level_shift_inside_the_range_stands_out_of_clean_scores(
    clean_scores, kind: str, factor: float
) -> None:
    values, base = clean_scores
    x = values.copy()
    sd = np.std(values[:2000])
    at = 2000
    # Within the range seen so far, so the novelty flag cannot be what raises the score.
    if kind == "spike":
        x[at] = np.clip(x[at] + 3 * sd, values[:at].min(), values[:at].max())
    else:
        x[at:] += np.sign(values[:at].mean() - x[at]) * 1.5 * sd
    s = _score_series(x)
    clean_q99 = np.quantile(base[600:at], 0.99)
    assert s[at : at + 5].max() > factor * clean_q99


@pytest.mark.parametrize("kind", ["spike", "level_shift"])
def test_spike_or_level_shift_beyond_the_range_scores_one_at_once(clean_scores, kind) -> None:
    values, _ = clean_scores
    x = values.copy()
    at = 2000
    jump = 2.0 * (values[:at].max() - values[:at].min())
    if kind == "spike":
        x[at] += jump
    else:
        x[at:] += jump
    assert _score_series(x)[at] == 1.0


def test_scores_are_finite_for_a_flat_then_jumping_series() -> None:
    x = np.concatenate([np.full(400, 3.0), np.full(200, 1e6), np.zeros(100)])
    s = _score_series(x)
    assert np.all(np.isfinite(s)) and s.min() >= 0.0 and s.max() <= 1.0
    assert s[400] == 1.0


# --------------------------------------------------------------------------- default model


def test_default_model_loads_as_univariate_forecaster() -> None:
    from engine.default_model import default_model_path, load_default_model

    model = load_default_model()
    assert default_model_path().is_file()
    assert model.input_size == 1 and model.output_size == 1
    assert model.hidden_size <= 32 and model.num_layers == 1
    assert "NAB" in model.metadata["data"]["source"]  # says it was not NAB
    # The engine scores with the constants the model carries.
    assert AnomalySpec(**model.metadata["anomaly"]) == AnomalySpec()


def test_default_model_forecast_error_is_near_the_last_value_and_far_below_the_variance() -> None:
    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    x = _clean(1500, seed=99)
    engine = StreamEngine(load_default_model(), capacity=1)
    # outputs: each reading's forecast of the next one, in the stream's own units
    y = np.array([engine.process(["s"], [[v]]).outputs[0, 0] for v in x[:-1]])
    model_mse = np.mean((x[301:] - y[300:]) ** 2)
    naive_mse = np.mean((x[301:] - x[300:-1]) ** 2)
    # On smooth synthetic data the last value is a strong forecaster; the model must match it
    # closely and explain most of the variance.
    assert model_mse < 1.25 * naive_mse
    assert model_mse < 0.1 * np.var(x[301:])


def test_a_scoring_engines_output_is_the_models_forecast_mapped_back_to_the_streams_units() -> None:
    """Plain numpy from end to end: normalise each reading (`ref_normalise`), step the model
    on it (`tests/reference.py`), map the forecast back with the stream's mean and scale."""
    from reference import reference_step, zero_state

    from engine.default_model import load_default_model
    from engine.stream import StreamEngine

    model = load_default_model()
    spec = AnomalySpec(**model.metadata["anomaly"])
    n_streams, T = 3, 400
    x = _streams(n_streams, T, 1, seed=5).astype(np.float32)
    engine = StreamEngine(model)
    streams = [f"s{k}" for k in range(n_streams)]
    got = np.stack([engine.process(streams, x[:, t]).outputs[:, 0] for t in range(T)], axis=1)
    for k in range(n_streams):
        z, _, mean, scale = ref_normalise(x[k].astype(np.float64), spec)
        state = zero_state(model)
        want = np.zeros(T)
        for t in range(T):
            y, state = reference_step(model, z[t].astype(np.float32), state)
            want[t] = y[0] * scale[t, 0] + mean[t, 0]
        # float32 model arithmetic, relative to the scale the forecast is multiplied by
        np.testing.assert_allclose(got[k], want, rtol=0, atol=2e-5 * scale[:, 0].max())


# ---------------------------------------------------------------------------------- NAB


@pytest.mark.skipif(not NAB_DIR.is_dir(), reason="../shared/nab not present")
def test_rnn_nab_detector_scores_every_row_of_a_nab_file(tmp_path: Path) -> None:
    import json

    from engine import nab

    key = "realAdExchange/exchange-3_cpc_results.csv"
    windows = json.loads((NAB_DIR / "windows.json").read_text())[key]
    s = nab.load_series(NAB_DIR / "data" / key, key, windows)
    scores = nab.run_detector([s], nab.DETECTORS["rnn"], tmp_path)[key]
    assert scores.shape == (len(s),)
    assert np.all((scores >= 0) & (scores <= 1))
    assert (tmp_path / key).is_file()
    assert scores[s.probation :].max() > 0.5


def test_exchange_forecast_returns_the_previous_forecast_and_keeps_the_new_one() -> None:
    rng = np.random.default_rng(3)
    forecast = rng.normal(size=(10, 3)).astype(np.float32)
    before = forecast.copy()
    slots = np.array([7, 2, 5], np.int64)
    new = rng.normal(size=(3, 3)).astype(np.float32)
    expected = np.empty_like(new)
    exchange_forecast(slots, forecast, new, expected)
    np.testing.assert_array_equal(expected, before[slots])
    np.testing.assert_array_equal(forecast[slots], new)
    untouched = np.setdiff1d(np.arange(10), slots)
    np.testing.assert_array_equal(forecast[untouched], before[untouched])


@pytest.mark.parametrize("features", [1, 3, 8])
def test_finish_batch_equals_the_separate_kernels_bit_for_bit(features: int) -> None:
    from engine.alerts import EVENT_CLOSE, EVENT_OPEN, AlertPolicy, alert_batch
    from engine.stream import StepResult

    spec = AnomalySpec(features=features, probation=20, long_window=100.0, alarm=0.3, cooldown=5)
    policy = AlertPolicy(open_level=0.2, close_level=0.1, min_duration=2, cooldown=3, warmup=4)
    params = policy.kernel_params()
    capacity, n = 40, 16
    scorers = [AnomalyScorer(spec, capacity) for _ in range(2)]
    forecasts = [scorer.views()[FORECAST] for scorer in scorers]
    alert_states = [scorer.views()[ALERT] for scorer in scorers]
    for state in alert_states:
        state[::7, A_THRESHOLD] = 0.5  # a few streams carry their own open level
    rng = np.random.default_rng(5)
    events = []
    for step in range(300):
        slots = rng.choice(capacity, n, replace=False).astype(np.int64)
        x = rng.normal(size=(n, features)) * np.where(rng.random((n, 1)) < 0.05, 30.0, 1.0)
        ts = np.where(rng.random(n) < 0.5, np.nan, step + np.arange(n, dtype=np.float64))
        y_next = rng.normal(size=(n, features)).astype(np.float32)
        results = [StepResult.empty(n, features, True) for _ in range(2)]
        # the separate kernels
        mine = results[0]
        z = scorers[0].normalise(slots, x.astype(np.float32))
        mine.scores[:] = scorers[0].score(slots, z, y_next, mine.surprise)
        norm = scorers[0].views()[NORM][slots]
        mean = norm[:, N_MEAN]
        scale = np.sqrt(norm[:, N_VAR]) + spec.scale_floor_rel * np.abs(mean)
        mine.outputs[:] = y_next * (scale + spec.scale_floor_abs) + mean
        exchange_forecast(slots, forecasts[0], mine.outputs, mine.expected)
        alert_batch(
            slots,
            mine.scores,
            mine.surprise,
            ts,
            alert_states[0],
            *params,
            mine.events,
            mine.peaks,
            mine.lengths,
            mine.opened,
        )
        # the fused one
        z = scorers[1].normalise(slots, x.astype(np.float32))
        scorers[1].finish(slots, z, y_next, ts, params, results[1])
        for name in ("outputs", "scores", "surprise", "expected", "events", "peaks", "lengths"):
            np.testing.assert_array_equal(getattr(results[1], name), getattr(mine, name))
        np.testing.assert_array_equal(results[1].opened, mine.opened)  # NaN == NaN here
        events.extend(mine.events)
    for name, slab in scorers[0].slabs.items():  # every column of the row: forecast, alerts too
        np.testing.assert_array_equal(scorers[1].slabs[name], slab)
    assert forecasts[1].any() and alert_states[1][:, A_THRESHOLD].any()
    assert EVENT_OPEN in events and EVENT_CLOSE in events  # the alert paths were exercised
