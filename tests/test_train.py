"""Tests for engine.train: exact gradients, the optimiser, learning, and the `train` command."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from reference import reference_run

from engine import train
from engine.cli import UserError
from engine.train import (
    Adam,
    TrainConfig,
    clip_grad_norm,
    format_epoch,
    init_params,
    load_csv,
    loss_and_gradients,
    params_from_model,
    train_forecaster,
)

CELL_CASES = [
    ("rnn", "tanh", 1),
    ("rnn", "tanh", 2),
    ("rnn", "relu", 1),
    ("rnn", "relu", 2),
    ("gru", "tanh", 1),
    ("gru", "tanh", 2),
    ("lstm", "tanh", 1),
    ("lstm", "tanh", 2),
]
CASE_IDS = [f"{c}-{n}-l{k}" for c, n, k in CELL_CASES]


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def _sine(rows: int, period: float = 25.0, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * np.arange(rows) / period + phase)


@pytest.mark.parametrize(("cell", "nonlinearity", "layers"), CELL_CASES, ids=CASE_IDS)
def test_analytic_gradients_match_central_differences(cell, nonlinearity, layers):
    rng = np.random.default_rng(7)
    params = init_params(cell, 2, 3, layers, 2, rng)
    X = rng.normal(size=(2, 5, 2))
    Y = rng.normal(size=(2, 5, 2))
    _, grads = loss_and_gradients(params, X, Y, cell, nonlinearity, burn_in=1)
    assert set(grads) == set(params)
    eps = 1e-6
    for name, p in params.items():
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up, _ = loss_and_gradients(params, X, Y, cell, nonlinearity, 1, need_gradients=False)
            p[idx] = saved - eps
            down, _ = loss_and_gradients(params, X, Y, cell, nonlinearity, 1, need_gradients=False)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        assert grads[name].shape == p.shape
        assert np.linalg.norm(numeric) > 0, name
        assert _relative_error(grads[name], numeric) <= 1e-5, name


@pytest.mark.parametrize(("cell", "nonlinearity", "layers"), CELL_CASES, ids=CASE_IDS)
def test_loss_and_gradients_match_torch_autograd(cell, nonlinearity, layers):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    n_in, hidden, burn_in = 3, 4, 2
    params = init_params(cell, n_in, hidden, layers, n_in, rng)
    X = rng.normal(size=(3, 7, n_in))
    Y = rng.normal(size=(3, 7, n_in))
    loss, grads = loss_and_gradients(params, X, Y, cell, nonlinearity, burn_in)

    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = module(n_in, hidden, num_layers=layers, batch_first=True, **kwargs).double()
    head = torch.nn.Linear(hidden, n_in).double()
    with torch.no_grad():
        for name, value in rnn.named_parameters():
            value.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params["head_weight"]))
        head.bias.copy_(torch.from_numpy(params["head_bias"]))
    out, _ = rnn(torch.from_numpy(X))
    pred = head(out)
    torch_loss = torch.nn.functional.mse_loss(pred[:, burn_in:], torch.from_numpy(Y)[:, burn_in:])
    torch_loss.backward()

    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    torch_grads = {name: value.grad.numpy() for name, value in rnn.named_parameters()}
    torch_grads["head_weight"] = head.weight.grad.numpy()
    torch_grads["head_bias"] = head.bias.grad.numpy()
    assert set(torch_grads) == set(grads)
    for name, expected in torch_grads.items():
        assert _relative_error(grads[name], expected) <= 1e-6, name


def test_adam_update_follows_bias_corrected_formula():
    p0 = np.array([1.0, -2.0, 0.5])
    params = {"w": p0.copy()}
    adam = Adam(params, betas=(0.9, 0.999), eps=1e-8)
    grads_seq = [np.array([0.1, -0.3, 2.0]), np.array([-0.2, 0.4, 1.0]), np.array([0.0, 1.0, -3.0])]
    lr = 0.01
    m = np.zeros(3)
    v = np.zeros(3)
    expected = p0.copy()
    for t, g in enumerate(grads_seq, start=1):
        adam.step(params, {"w": g.copy()}, lr)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        expected = expected - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(params["w"], expected, rtol=1e-13, atol=0)
    # The first Adam step moves every coordinate by about lr against the gradient's sign.
    first = Adam({"w": p0.copy()})
    moved = {"w": p0.copy()}
    first.step(moved, {"w": grads_seq[0]}, lr)
    np.testing.assert_allclose(p0 - moved["w"], lr * np.sign(grads_seq[0]), rtol=1e-6)


def test_clip_grad_norm_caps_global_norm_and_keeps_direction():
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}  # global norm 13
    before = {k: v.copy() for k, v in grads.items()}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(13.0)
    clipped = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    assert clipped <= 1.0
    for k in grads:
        np.testing.assert_allclose(grads[k], before[k] / 13.0, rtol=1e-5)

    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])


def test_training_on_sine_cuts_validation_loss_more_than_tenfold():
    config = TrainConfig(
        cell="lstm", hidden_size=16, seq_len=32, batch_size=16, epochs=30, lr=1e-2, min_steps=0
    )
    seen = []
    model, report = train_forecaster([_sine(1500)], config, progress=seen.append)
    assert report.initial_validation_loss > 0.3  # an untrained model cannot forecast the wave
    assert report.best_validation_loss < report.initial_validation_loss / 10
    assert len(seen) == config.epochs == len(report.history)
    assert [s.epoch for s in seen] == list(range(1, config.epochs + 1))
    assert report.best_validation_loss == min(s.validation_loss for s in report.history)
    assert seen[-1].eta == 0.0
    assert "epoch 30/30" in format_epoch(seen[-1])
    assert model.cell == "lstm" and model.hidden_size == 16 and model.input_size == 1
    assert model.metadata["validation_loss"] == pytest.approx(report.best_validation_loss)
    assert model.metadata["training"]["epochs"] == 30
    json.dumps(model.metadata, allow_nan=False)


def _two_feature_series(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    return np.column_stack(
        [
            100.0 + 5.0 * np.sin(2 * np.pi * t / 30) + 0.1 * rng.normal(size=rows),
            -3.0 + 0.5 * np.cos(2 * np.pi * t / 30) + 0.01 * rng.normal(size=rows),
        ]
    )


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_saved_model_runs_what_was_trained(tmp_path, cell):
    from engine.model import Model

    config = TrainConfig(cell=cell, hidden_size=6, num_layers=2, seq_len=20, batch_size=8, epochs=4)
    series = [_two_feature_series(400, 1), _two_feature_series(400, 2)]
    model, report = train_forecaster(series, config, feature_names=("a", "b"))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Model.load(path)
    assert loaded.feature_names == ("a", "b")
    assert loaded.output_size == 2 and len(loaded.layers) == 2

    # Scaling comes from the training rows (the first 360 of each series).
    train_rows = np.concatenate([s[:360] for s in series])
    np.testing.assert_allclose(loaded.input_mean, train_rows.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(loaded.input_std, train_rows.std(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(loaded.output_mean, loaded.input_mean)
    np.testing.assert_array_equal(loaded.output_std, loaded.input_std)

    # The training forward pass, in data units, equals the plain float64 reference on the file.
    mean = loaded.input_mean.astype(np.float64)
    std = loaded.input_std.astype(np.float64)
    X = series[0][:50]
    ours = train.forward(params_from_model(loaded), ((X - mean) / std)[None], cell)[0] * std + mean
    np.testing.assert_allclose(ours, reference_run(loaded, X), rtol=1e-9, atol=1e-9)

    # The reported best validation loss is the saved model's error on the held-out tails
    # (rows 360..399; windows of 20 steps from a zero state), in standardised units.
    errors = []
    for s in series:
        for start in (359, 379):
            pred = reference_run(loaded, s[start : start + 20])
            errors.append(((pred - s[start + 1 : start + 21]) / std) ** 2)
    assert float(np.mean(errors)) == pytest.approx(report.best_validation_loss, rel=1e-4)


def test_load_csv_skips_timestamp_and_text_columns(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        "timestamp,value,label,other\n"
        "2015-01-01 00:00:00,1.5,ok,10\n"
        "2015-01-01 00:05:00,2.5,ok,11\n"
        "2015-01-01 00:10:00,3.5,bad,12\n"
    )
    values, names = load_csv(path)
    assert names == ("value", "other")
    np.testing.assert_array_equal(values, [[1.5, 10], [2.5, 11], [3.5, 12]])
    values, names = load_csv(path, ["other"])
    assert names == ("other",) and values.shape == (3, 1)

    numeric_time = tmp_path / "numeric_time.csv"
    numeric_time.write_text("time,x\n0,1\n1,2\n")
    assert load_csv(numeric_time)[1] == ("x",)
    with pytest.raises(ValueError, match="not a number"):
        load_csv(path, ["label"])
    with pytest.raises(ValueError, match="unknown column"):
        load_csv(path, ["nope"])
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("t,x,x\n0,1,2\n1,2,3\n")
    with pytest.raises(ValueError, match="unique"):
        load_csv(repeated)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return train.run(parser.parse_args(list(argv)))


def _nab_style_csv(path, rows: int) -> None:
    lines = ["timestamp,value"]
    for i, v in enumerate(40 + 10 * _sine(rows, 24.0)):
        lines.append(f"2015-02-26 {i // 60 % 24:02d}:{i % 60:02d}:00,{v:.4f}")
    path.write_text("\n".join(lines) + "\n")


def test_cli_trains_on_csv_and_writes_loadable_model(tmp_path, capsys):
    from engine.model import Model

    csv_path = tmp_path / "series.csv"
    _nab_style_csv(csv_path, 300)
    out = tmp_path / "model.npz"
    status = _cli(
        "--csv", str(csv_path), "--cell", "gru", "--hidden", "8", "--epochs", "2",
        "--seq-len", "16", "--batch", "4", "--out", str(out),
    )  # fmt: skip
    assert status == 0
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "eta" in err
    model = Model.load(out)
    assert model.cell == "gru" and model.hidden_size == 8
    assert model.feature_names == ("value",)
    assert model.metadata["training"]["seq_len"] == 16
    assert model.metadata["source_csv"] == "series.csv"
    assert model.head_weight.dtype == np.float32
    # By default the readings are normalised per stream, and the engine scores with the model.
    from engine.anomaly import AnomalySpec
    from engine.stream import StreamEngine

    assert AnomalySpec(**model.metadata["anomaly"]) == AnomalySpec(features=1)
    assert StreamEngine(model).scoring


def test_cli_without_scoring_trains_on_globally_scaled_readings(tmp_path):
    from engine.model import Model

    csv_path = tmp_path / "series.csv"
    _nab_style_csv(csv_path, 300)
    out = tmp_path / "model.npz"
    status = _cli(
        "--csv", str(csv_path), "--hidden", "8", "--epochs", "1", "--seq-len", "16",
        "--batch", "4", "--no-scoring", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert status == 0
    model = Model.load(out)
    assert model.input_std[0] > 5  # scaled by the data, not left at 1
    assert "anomaly" not in model.metadata


def test_scoring_forecaster_trains_on_the_engines_online_normalisation():
    from engine.anomaly import AnomalySpec, online_normalise
    from engine.train import train_scoring_forecaster

    values = 40 + 10 * _sine(400, 24.0)
    spec = AnomalySpec(probation=30)
    config = TrainConfig(hidden_size=4, epochs=1, seq_len=16, batch_size=4)
    model, _ = train_scoring_forecaster([values], config, spec)
    assert model.metadata["anomaly"] == spec.to_dict()
    assert model.metadata["dropped_leading_readings"] == 10
    # the model's own scaling comes from the normalised series it was trained on
    z = online_normalise(values, spec)[10:]
    train_part = z[: int(len(z) * (1 - config.validation_fraction))]
    assert abs(model.input_mean[0] - train_part.mean()) < 0.05


def test_cli_reports_user_errors(tmp_path):
    out = str(tmp_path / "m.npz")
    with pytest.raises(UserError, match="no such CSV"):
        _cli("--csv", str(tmp_path / "missing.csv"), "--out", out)
    csv_path = tmp_path / "short.csv"
    _nab_style_csv(csv_path, 50)
    with pytest.raises(UserError, match="unknown column"):
        _cli("--csv", str(csv_path), "--value-columns", "temp", "--out", out)
    with pytest.raises(UserError, match="needs at least"):
        _cli("--csv", str(csv_path), "--seq-len", "64", "--out", out)
    assert not (tmp_path / "m.npz").exists()


def test_invalid_settings_and_series_are_rejected():
    with pytest.raises(ValueError, match="cell"):
        train_forecaster([_sine(500)], TrainConfig(cell="transformer"))
    with pytest.raises(ValueError, match="burn_in"):
        train_forecaster([_sine(500)], TrainConfig(seq_len=8, burn_in=8))
    with pytest.raises(ValueError, match="same number of features"):
        train_forecaster([_sine(500), np.zeros((500, 2))], TrainConfig(seq_len=8, epochs=1))
    with pytest.raises(ValueError, match="NaN"):
        train_forecaster([np.full(500, np.nan)], TrainConfig(seq_len=8, epochs=1))


# ---------------------------------------------------------------- enough training, and honesty


def _noisy_sine(rows: int, seed: int = 3, noise: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + 3 * _sine(rows, 50.0) + noise * rng.normal(size=rows)


def test_short_series_get_overlapping_windows_for_enough_optimiser_steps():
    # 540 training rows give 33 back-to-back windows of 16 steps: 5 minibatches of 8 an epoch, 50
    # steps in 10 epochs. min_steps asks for 300: windows start every 2 rows (every 3 gives 220).
    config = TrainConfig(hidden_size=4, seq_len=16, batch_size=8, epochs=10, min_steps=300)
    _, report = train_forecaster([_sine(600)], config)
    assert report.window_stride == 2 and report.train_windows == 262
    assert report.steps == 330
    # Enough data keeps windows back to back; min_steps=0 always does.
    _, report = train_forecaster([_sine(600)], TrainConfig(**{**vars(config), "min_steps": 40}))
    assert report.window_stride == 16 and report.steps >= 40
    _, report = train_forecaster([_sine(600)], TrainConfig(**{**vars(config), "min_steps": 0}))
    assert report.window_stride == 16
    assert TrainConfig().min_steps >= 1000


def test_default_step_budget_beats_the_last_value_forecast_where_back_to_back_windows_do_not():
    series = [_noisy_sine(1200)]
    config = TrainConfig(hidden_size=8, seq_len=32, batch_size=16, epochs=10, lr=1e-2)
    few, few_report = train_forecaster(series, TrainConfig(**{**vars(config), "min_steps": 0}))
    assert few_report.steps <= 30 and few_report.beats_last_value is False
    assert few.metadata["beats_last_value"] is False
    model, report = train_forecaster(series, config)
    # Every window start is used (stride 1): 1048 windows, 66 minibatches an epoch.
    assert report.window_stride == 1 and report.steps == 660
    assert report.beats_last_value is True
    assert report.validation_mae[0] < 0.8 * report.last_value_mae[0]
    assert model.metadata["validation_mae"] == [pytest.approx(report.validation_mae[0])]
    assert model.metadata["last_value_mae"] == [pytest.approx(report.last_value_mae[0])]
    assert model.metadata["beats_last_value"] is True


def test_patience_stops_after_epochs_without_a_better_validation_loss():
    config = TrainConfig(hidden_size=4, seq_len=16, batch_size=8, epochs=40, lr=0.3, patience=2)
    _, report = train_forecaster([_noisy_sine(400)], config)
    assert len(report.history) < 40
    assert len(report.history) == report.best_epoch + 2
    assert report.history[-1].eta == 0.0


def test_validation_errors_are_in_the_streams_units_on_the_validation_windows():
    config = TrainConfig(hidden_size=4, seq_len=20, batch_size=8, epochs=2, burn_in=3)
    series = [_two_feature_series(400, 1), _two_feature_series(300, 2)]
    model, report = train_forecaster(series, config, feature_names=("a", "b"))
    # Validation windows as in test_saved_model_runs_what_was_trained: 40 and 30 tail rows,
    # windows of 20 steps from a zero state, scored from step 3 on, the last one overlapping.
    model_err, last_err = [], []
    for s, starts in ((series[0], (356, 373, 379)), (series[1], (266, 279))):
        for start in starts:
            x = s[start : start + 21]
            pred = reference_run(model, x[:-1])
            model_err.append(np.abs(pred - x[1:])[3:])
            last_err.append(np.abs(x[:-1] - x[1:])[3:])
    np.testing.assert_allclose(report.validation_mae, np.mean(model_err, axis=(0, 1)), rtol=1e-4)
    np.testing.assert_allclose(report.last_value_mae, np.mean(last_err, axis=(0, 1)), rtol=1e-12)


def test_scoring_forecasts_map_to_the_streams_units_as_the_engine_maps_them():
    from engine.anomaly import AnomalySpec, normalise_series
    from engine.stream import StreamEngine
    from engine.train import train_scoring_forecaster

    values = _noisy_sine(400).astype(np.float32).astype(np.float64)  # as the engine reads them
    config = TrainConfig(hidden_size=4, epochs=1, seq_len=16, batch_size=8, min_steps=0)
    model, report = train_scoring_forecaster([values], config, AnomalySpec())
    assert report.validation_mae is not None and "validation_mae" in model.metadata
    z, shift, scale = normalise_series(values[:, None], AnomalySpec())
    mean = model.input_mean.astype(np.float64)
    std = model.input_std.astype(np.float64)
    pred = train.forward(params_from_model(model), ((z - mean) / std)[None], "lstm")[0]
    expected = (pred * std + mean) * scale + shift
    engine = StreamEngine(model)
    served = [engine.step_many(["s"], np.float32([[v]]))[0, 0] for v in values]
    np.testing.assert_allclose(served, expected[:, 0], rtol=1e-4, atol=1e-4)


def test_cli_says_whether_the_model_beats_the_last_value_forecast(tmp_path, capsys):
    from engine.model import Model

    csv_path = tmp_path / "series.csv"
    _nab_style_csv(csv_path, 300)
    out = tmp_path / "model.npz"
    _cli(
        "--csv", str(csv_path), "--hidden", "4", "--epochs", "1", "--min-steps", "0",
        "--seq-len", "16", "--batch", "4", "--no-scoring", "--quiet", "--out", str(out),
    )  # fmt: skip
    err = capsys.readouterr().err
    meta = Model.load(out).metadata
    model_mae, last_mae = meta["validation_mae"][0], meta["last_value_mae"][0]
    assert f"value model {model_mae:.5g} vs last value {last_mae:.5g}" in err
    assert meta["beats_last_value"] is (model_mae < last_mae)
    if meta["beats_last_value"]:
        assert "beats the last-value forecast" in err
    else:
        assert "does NOT beat the last-value forecast" in err


# ---------------------------------------------------------------- input checks


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _rows(n: int, start: int = 0) -> str:
    return "".join(f"{1700000000 + 300 * i},{10 + math.sin(i / 5):.4f}\n" for i in range(start, n))


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1e301", "line 4 column 'value' is beyond float32 range: '1e301'"),
        ("-3.5e38", "line 4 column 'value' is beyond float32 range: '-3.5e38'"),
        ("inf", "line 4 column 'value' is not finite: 'inf'"),
        ("nan", "line 4 column 'value' is not finite: 'nan'"),
    ],
)
def test_values_beyond_float32_or_not_finite_are_refused_with_line_and_column(
    tmp_path, cell, message
):
    path = _write(
        tmp_path / "x.csv", f"timestamp,value\n{_rows(2)}1700000600,{cell}\n{_rows(9, 3)}"
    )
    with pytest.raises(ValueError, match=message):
        load_csv(path)
    ok = _write(tmp_path / "ok.csv", f"timestamp,value\n{_rows(2)}1700000600,-3.4e38\n")
    assert load_csv(ok)[0][2, 0] == -3.4e38


def test_huge_values_are_a_user_error_also_without_scoring(tmp_path):
    path = _write(tmp_path / "huge.csv", "timestamp,value\n" + "".join(
        f"{i},{1.0e301 * (1 + 0.01 * math.sin(i))}\n" for i in range(400)
    ))  # fmt: skip
    for extra in ((), ("--no-scoring",)):
        with pytest.raises(UserError, match="line 2 column 'value' is beyond float32 range"):
            _cli("--csv", str(path), "--out", str(tmp_path / "m.npz"), *extra)


def test_row_check_counts_the_readings_scoring_drops(tmp_path):
    path = _write(tmp_path / "short.csv", "timestamp,value\n" + _rows(200))
    out = str(tmp_path / "m.npz")
    with pytest.raises(UserError, match=r"has 200 rows but --seq-len 64 needs at least 229 "
                       r"\(129, plus the first 100 readings"):  # fmt: skip
        _cli("--csv", str(path), "--out", out)
    with pytest.raises(UserError, match="has 100 rows but --seq-len 64 needs at least 129"):
        _cli("--csv", str(_write(tmp_path / "s.csv", "t,v\n" + _rows(100))), "--no-scoring",
             "--out", out)  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--cell", "gru", "--nonlinearity", "relu"), "relu is for the rnn cell only"),
        (("--cell", "lstm", "--nonlinearity", "relu"), "relu is for the rnn cell only"),
        (("--clip", "0"), "clip_norm must be positive and finite"),
        (("--clip", "-1"), "clip_norm must be positive and finite"),
        (("--clip", "nan"), "clip_norm must be positive and finite"),
        (("--clip", "inf"), "clip_norm must be positive and finite"),
        (("--lr", "inf"), "lr must be positive and finite"),
        (("--min-steps", "-1"), "min_steps and patience"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_training(tmp_path, argv, message):
    path = _write(tmp_path / "x.csv", "timestamp,value\n" + _rows(400))
    out = tmp_path / "m.npz"
    with pytest.raises(UserError, match=message):
        _cli("--csv", str(path), "--out", str(out), "--quiet", *argv)
    assert not out.exists()


def test_out_that_is_a_directory_is_refused_before_training(tmp_path):
    path = _write(tmp_path / "x.csv", "timestamp,value\n" + _rows(400))
    with pytest.raises(UserError, match="is a directory"):
        _cli("--csv", str(path), "--out", str(tmp_path))


def test_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfvalue,timestamp\n1.5,0\n2.5,1\n")
    assert load_csv(path)[1] == ("value",)
    path.write_bytes(b"\xef\xbb\xbftimestamp,value\n0,1.5\n1,2.5\n")
    found = train.read_csv(path)
    assert found.names == ("value",) and found.time_column == "timestamp"


@pytest.mark.parametrize("cell", ["", "n/a", " "])
def test_a_bad_cell_in_a_numeric_column_is_named_not_dropped(tmp_path, cell):
    path = _write(tmp_path / "x.csv", f"timestamp,a,b\n0,1,2\n1,2,3\n2,3,{cell}\n3,4,5\n")
    with pytest.raises(ValueError, match="line 4 column 'b' is not a number"):
        load_csv(path)
    only = _write(tmp_path / "one.csv", f"timestamp,value\n0,1\n\n1,{cell}\n")
    with pytest.raises(ValueError, match="no numeric value columns: line 4 column 'value' is not"):
        load_csv(only)


def test_rows_are_trained_in_time_order(tmp_path):
    path = _write(tmp_path / "x.csv", "value,timestamp\n3,2024-01-01 00:10:00\n1,2024-01-01 "
                  "00:00:00\n2,2024-01-01T00:05:00Z\n4,1704068100\n")  # fmt: skip
    found = train.read_csv(path)
    assert found.time_column == "timestamp"
    np.testing.assert_array_equal(found.series[0][:, 0], [1, 2, 3, 4])
    assert any("not in time order" in note for note in found.notes)
    # An explicit time column must parse; a guessed one that does not leaves file order.
    bad = _write(tmp_path / "bad.csv", "time,value\nnoon,1\n0,2\n")
    with pytest.raises(ValueError, match="line 2 column 'time' is not a timestamp"):
        train.read_csv(bad, time_column="time")
    found = train.read_csv(bad)
    assert found.time_column is None and "file order" in found.notes[0]
    np.testing.assert_array_equal(found.series[0][:, 0], [1, 2])


def _two_stream_csv(path, rows: int):
    lines = ["sensor,time,value"]
    for i in range(rows):  # interleaved, and stream b's rows written newest first
        lines.append(f"a,{1000 + i},{10 + _sine(rows)[i]:.4f}")
        lines.append(f"b,{1000 + rows - i},{-i:.1f}")
    return _write(path, "\n".join(lines) + "\n")


def test_stream_column_makes_one_series_per_stream_in_time_order(tmp_path):
    path = _two_stream_csv(tmp_path / "s.csv", 6)
    found = train.read_csv(path, stream_column="sensor")
    assert found.streams == ("a", "b") and found.names == ("value",)
    np.testing.assert_allclose(found.series[0][:, 0], 10 + _sine(6), atol=1e-4)
    np.testing.assert_array_equal(found.series[1][:, 0], [-5, -4, -3, -2, -1, 0])
    # Without --stream-column the text column is left out, and the user is told how to use it.
    alone = train.read_csv(path)
    assert alone.streams == ("",) and len(alone.series[0]) == 12
    assert any("--stream-column sensor" in note for note in alone.notes)


def test_cli_trains_each_stream_as_its_own_series(tmp_path, capsys):
    from engine.model import Model

    path = _two_stream_csv(tmp_path / "s.csv", 150)
    out = tmp_path / "m.npz"
    _cli(
        "--csv", str(path), "--stream-column", "sensor", "--no-scoring", "--seq-len", "16",
        "--hidden", "4", "--epochs", "1", "--min-steps", "0", "--quiet", "--out", str(out),
    )  # fmt: skip
    meta = Model.load(out).metadata
    assert meta["series"] == 2 and meta["streams"] == ["a", "b"] and meta["rows"] == 300
    assert meta["stream_column"] == "sensor" and meta["time_column"] == "time"
    assert "on 300 rows in 2 streams of value in order of 'time'" in capsys.readouterr().err
