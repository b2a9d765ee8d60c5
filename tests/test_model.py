"""Tests for engine.model: validation, the .npz file format, fingerprint and converters."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.model import FORMAT_VERSION, LayerWeights, Model

REPO = Path(__file__).resolve().parents[1]
CELL_CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def _model(
    cell: str = "lstm",
    *,
    nonlinearity: str = "tanh",
    num_layers: int = 2,
    head: bool = True,
    scaling: bool = True,
    seed: int = 0,
) -> Model:
    base = Model.random(
        cell,
        3,
        5,
        num_layers=num_layers,
        output_size=2 if head else None,
        nonlinearity=nonlinearity,
        seed=seed,
    )
    if not scaling:
        return base
    rng = np.random.default_rng(seed + 100)
    out = base.output_size
    return dataclasses.replace(
        base,
        input_mean=rng.normal(size=3),
        input_std=rng.uniform(0.5, 2.0, size=3),
        output_mean=rng.normal(size=out),
        output_std=rng.uniform(0.5, 2.0, size=out),
        feature_names=("temp", "pressure", "flow"),
        metadata={"trained_on": "nab", "epochs": 3, "nested": {"lr": 0.01}},
    )


def _arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _header_of(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(arrays["header"].tobytes().decode("utf-8"))


def _with_header(arrays: dict[str, np.ndarray], header: dict) -> dict[str, np.ndarray]:
    raw = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return {**arrays, "header": raw}


def _all_arrays(model: Model) -> dict[str, np.ndarray]:
    return model._arrays()


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("cell, nonlinearity", CELL_CASES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("scaling", [False, True])
def test_save_load_round_trip_keeps_every_array_and_field(
    tmp_path, cell, nonlinearity, num_layers, head, scaling
):
    model = _model(cell, nonlinearity=nonlinearity, num_layers=num_layers, head=head,
                   scaling=scaling)  # fmt: skip
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Model.load(path)

    assert loaded.fingerprint == model.fingerprint
    for field in ("cell", "nonlinearity", "input_size", "hidden_size", "num_layers", "gates"):
        assert getattr(loaded, field) == getattr(model, field)
    assert loaded.output_size == (2 if head else 5)
    assert loaded.feature_names == model.feature_names
    assert loaded.metadata == model.metadata
    expected, got = _all_arrays(model), _all_arrays(loaded)
    assert list(got) == list(expected)
    for key in expected:
        assert got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], expected[key])
        assert not got[key].flags.writeable


def test_load_accepts_str_and_path_and_save_leaves_no_temp_file(tmp_path):
    model = _model()
    model.save(str(tmp_path / "a.npz"))
    model.save(tmp_path / "b.npz")
    assert Model.load(str(tmp_path / "b.npz")).fingerprint == model.fingerprint
    assert Model.load(tmp_path / "a.npz").fingerprint == model.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]


def test_save_overwrites_an_existing_model_file(tmp_path):
    path = tmp_path / "m.npz"
    _model(seed=1).save(path)
    second = _model(seed=2)
    second.save(path)
    assert Model.load(path).fingerprint == second.fingerprint


def test_file_header_describes_the_model(tmp_path):
    model = _model("gru", num_layers=2, head=True, scaling=True)
    model.save(tmp_path / "m.npz")
    arrays = _arrays_of(tmp_path / "m.npz")
    header = _header_of(arrays)
    assert header["format"] == "rnnstream-model"
    assert header["format_version"] == FORMAT_VERSION
    assert (header["cell"], header["input_size"], header["hidden_size"]) == ("gru", 3, 5)
    assert (header["num_layers"], header["has_head"], header["output_size"]) == (2, True, 2)
    assert header["feature_names"] == ["temp", "pressure", "flow"]
    assert header["metadata"]["nested"] == {"lr": 0.01}
    assert header["fingerprint"] == model.fingerprint
    assert set(arrays) == {"header", *_all_arrays(model)}
    assert {"weight_ih_l1", "head.weight", "head.bias", "input_std", "output_mean"} <= set(arrays)


# ---------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_when_one_weight_changes_by_one_ulp():
    model = _model(scaling=False)
    w = model.layers[1].weight_hh.copy()
    w[3, 2] = np.nextafter(w[3, 2], np.float32(1))
    layers = (model.layers[0], dataclasses.replace(model.layers[1], weight_hh=w))
    assert dataclasses.replace(model, layers=layers).fingerprint != model.fingerprint


def test_fingerprint_ignores_metadata_but_covers_feature_names_and_scaling():
    model = _model()
    assert dataclasses.replace(model, metadata={"other": 1}).fingerprint == model.fingerprint
    renamed = dataclasses.replace(model, feature_names=("a", "b", "c"))
    assert renamed.fingerprint != model.fingerprint
    unscaled = dataclasses.replace(model, input_mean=None, input_std=None)
    assert unscaled.fingerprint != model.fingerprint


def test_fingerprint_distinguishes_swapped_arrays_of_equal_shape():
    model = _model(scaling=True)
    swapped = dataclasses.replace(
        model, input_mean=model.input_std, input_std=model.input_mean + 10
    )
    restored = dataclasses.replace(swapped, input_mean=model.input_mean, input_std=model.input_std)
    assert swapped.fingerprint != model.fingerprint
    assert restored.fingerprint == model.fingerprint


def test_fingerprint_is_a_cached_sha256_hex_digest():
    model = _model()
    first = model.fingerprint
    assert len(first) == 64 and int(first, 16) >= 0
    assert model.fingerprint is first


def test_same_seed_gives_same_fingerprint_and_different_seed_differs():
    assert _model(seed=3).fingerprint == _model(seed=3).fingerprint
    assert _model(seed=3).fingerprint != _model(seed=4).fingerprint


# ---------------------------------------------------------------------- construction


def test_arrays_are_copied_to_frozen_float32_c_contiguous():
    source = np.asfortranarray(np.random.default_rng(0).normal(size=(4, 3)))  # float64, F order
    original = source.astype(np.float32)
    layer = LayerWeights(source, np.zeros((4, 4)), np.zeros(4), np.zeros(4))
    model = Model(cell="rnn", input_size=3, hidden_size=4, layers=[layer])
    w = model.layers[0].weight_ih
    assert w.dtype == np.float32 and w.flags.c_contiguous and not w.flags.writeable
    assert isinstance(model.layers, tuple)
    source[0, 0] += 1.0  # the caller's array is not aliased
    np.testing.assert_array_equal(w, original)
    with pytest.raises(ValueError):
        w[0, 0] = 1.0


def test_writeable_float32_input_is_not_shared_with_the_model():
    source = np.ones((4, 3), np.float32)
    layer = LayerWeights(source, np.zeros((4, 4), np.float32), np.zeros(4), np.zeros(4))
    model = Model(cell="rnn", input_size=3, hidden_size=4, layers=(layer,))
    source[:] = 7.0
    assert source.flags.writeable  # the caller's array keeps its flags
    np.testing.assert_array_equal(model.layers[0].weight_ih, np.ones((4, 3), np.float32))


def test_random_uses_pytorch_init_bounds_and_adds_head_only_with_output_size():
    model = Model.random("gru", 4, 16, num_layers=3, output_size=2, seed=7)
    bound = 1 / np.sqrt(16)
    for array in _all_arrays(model).values():
        assert np.abs(array).max() <= bound
    assert model.num_layers == 3 and model.gates == 3 and model.output_size == 2
    assert model.layers[1].weight_ih.shape == (48, 16)
    plain = Model.random("lstm", 4, 16)
    assert plain.head_weight is None and plain.output_size == 16 and plain.num_layers == 1


def test_describe_names_cell_sizes_head_and_params():
    model = Model.random("lstm", 3, 8, num_layers=2, output_size=2)
    text = model.describe()
    params = 4 * 8 * (3 + 8 + 2) + 4 * 8 * (8 + 8 + 2) + 2 * 8 + 2
    assert model.num_parameters == params
    assert "lstm" in text and "3 -> 8 x 2 layers" in text and "2 outputs" in text
    assert f"{params:,} params" in text
    assert "bytes" not in text  # per-stream memory is the engine's figure (rnnstream convert)
    assert "\n" not in text
    assert "relu" in Model.random("rnn", 1, 2, nonlinearity="relu").describe()
    assert model.fingerprint[:12] in repr(model)


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"cell": "transformer"}, ["cell", "transformer"]),
        ({"nonlinearity": "sigmoid"}, ["nonlinearity", "sigmoid"]),
        ({"input_size": 0}, ["input_size", "positive"]),
        ({"layers": ()}, ["layers", "at least one"]),
        ({"head_bias": None}, ["head_weight, head_bias", "both"]),
        ({"head_weight": np.zeros((2, 4)), "head_bias": np.zeros(2)}, ["head_weight", "(2, 4)"]),
        ({"input_std": None}, ["input_mean, input_std", "both"]),
        ({"input_std": np.array([1.0, 0.0, 1.0])}, ["input_std", "> 0", "index 1"]),
        ({"output_mean": np.zeros(5)}, ["output_mean", "(2,)", "(5,)"]),
        ({"feature_names": ("a", "b")}, ["feature_names", "3", "2"]),
        ({"feature_names": ("a", "b", "a")}, ["feature_names", "unique", "a"]),
        ({"feature_names": "abc"}, ["feature_names"]),
        ({"metadata": {"x": object()}}, ["metadata", "JSON"]),
        ({"metadata": {"x": float("nan")}}, ["metadata", "JSON"]),
    ],
)
def test_invalid_fields_raise_value_error_naming_the_field(change, fragments):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(_model(num_layers=2, head=True, scaling=True), **change)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_relu_is_refused_for_gated_cells():
    with pytest.raises(ValueError, match="only cell 'rnn' takes 'relu'"):
        dataclasses.replace(_model("lstm"), nonlinearity="relu")


def test_wrong_layer_shape_names_layer_field_and_both_shapes():
    model = _model("lstm", num_layers=2, scaling=False)
    bad = dataclasses.replace(model.layers[1], weight_ih=np.zeros((20, 3), np.float32))
    with pytest.raises(ValueError) as info:
        dataclasses.replace(model, layers=(model.layers[0], bad))
    message = str(info.value)
    assert "layers[1].weight_ih" in message
    assert "expected shape (20, 5)" in message and "got (20, 3)" in message
    assert "4*hidden_size, hidden_size" in message


def test_missing_bias_and_non_finite_weight_are_refused():
    model = _model("gru", num_layers=1, scaling=False)
    with pytest.raises(ValueError, match=r"layers\[0\].bias_hh: missing"):
        dataclasses.replace(model, layers=(dataclasses.replace(model.layers[0], bias_hh=None),))
    w = model.layers[0].weight_hh.copy()
    w[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"layers\[0\].weight_hh: values must be finite.*\(2, 1\)"):
        dataclasses.replace(model, layers=(dataclasses.replace(model.layers[0], weight_hh=w),))
    huge = model.layers[0].bias_ih.astype(np.float64)
    huge[0] = 1e300  # overflows float32
    with pytest.raises(ValueError, match="bias_ih: values must be finite"):
        dataclasses.replace(model, layers=(dataclasses.replace(model.layers[0], bias_ih=huge),))


# ---------------------------------------------------------------------- corrupt files


@pytest.fixture
def saved(tmp_path) -> tuple[Model, Path]:
    model = _model("lstm", num_layers=2, head=True, scaling=True)
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path


def test_truncated_file_is_reported_as_truncated(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a model file") as info:
        Model.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"hello, not a model\n", b"PK\x03\x04garbage"])
def test_non_zip_file_is_reported_as_not_a_model_file(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="truncated or not a model file") as info:
        Model.load(path)
    assert str(path) in str(info.value)


def test_plain_npy_and_npz_without_header_are_not_model_files(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not a model file"):
        Model.load(tmp_path / "one.npy")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no 'header' entry"):
        Model.load(tmp_path / "other.npz")


def test_flipped_byte_in_weights_is_detected(saved):
    model, path = saved
    data = bytearray(path.read_bytes())
    target = model.layers[1].weight_hh.tobytes()
    offset = bytes(data).find(target)
    assert offset > 0
    data[offset + 17] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt|truncated|fingerprint"):
        Model.load(path)


def test_missing_array_is_named(saved):
    _, path = saved
    arrays = _arrays_of(path)
    del arrays["bias_hh_l1"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="missing array.*bias_hh_l1"):
        Model.load(path)


def test_unexpected_array_is_named(saved):
    _, path = saved
    np.savez(path, **_arrays_of(path), extra=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="unexpected array.*extra"):
        Model.load(path)


def test_wrong_shape_is_named_with_both_shapes(saved):
    _, path = saved
    arrays = _arrays_of(path)
    arrays["weight_ih_l0"] = arrays["weight_ih_l0"][:, :2].copy()
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"'weight_ih_l0' has shape \(20, 2\), expected \(20, 3\)"):
        Model.load(path)


def test_wrong_dtype_is_named(saved):
    _, path = saved
    arrays = _arrays_of(path)
    arrays["head.bias"] = arrays["head.bias"].astype(np.float64)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="'head.bias' has dtype float64, expected float32"):
        Model.load(path)


def test_tampered_weight_fails_the_fingerprint_check(saved):
    _, path = saved
    arrays = _arrays_of(path)
    arrays["weight_hh_l0"] = arrays["weight_hh_l0"] * np.float32(1.5)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="weights do not match the header fingerprint"):
        Model.load(path)


def test_tampered_header_field_fails_the_fingerprint_check(saved):
    _, path = saved
    arrays = _arrays_of(path)
    header = _header_of(arrays)
    header["feature_names"] = ["x", "y", "z"]
    np.savez(path, **_with_header(arrays, header))
    with pytest.raises(ValueError, match="fingerprint"):
        Model.load(path)


def test_edited_metadata_still_loads(saved):
    model, path = saved
    arrays = _arrays_of(path)
    header = _header_of(arrays)
    header["metadata"] = {"note": "edited by hand"}
    np.savez(path, **_with_header(arrays, header))
    loaded = Model.load(path)
    assert loaded.metadata == {"note": "edited by hand"}
    assert loaded.fingerprint == model.fingerprint


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param({"probaton": 30}, "unknown key.*probaton", id="misspelt-key"),
        pytest.param([1], "expected a dict", id="not-a-dict"),
        pytest.param({"features": 2}, "of 2 features.*1 inputs to 1 outputs", id="features"),
        pytest.param({"features": 1.0}, "features: expected a whole number", id="float-features"),
        pytest.param({"norm_window": "2000"}, "norm_window: expected a number", id="text"),
        pytest.param({"alarm": None}, "alarm: expected a number", id="null"),
        pytest.param({"z_clip": True}, "z_clip: expected a number", id="bool"),
        pytest.param({"long_window": 0}, "long_window: .*at least 1", id="zero-window"),
        pytest.param({"err_scale": 0.0}, "err_scale: .*above 0", id="zero-scale"),
        pytest.param({"cooldown": -5}, "cooldown: .*at least 0", id="negative"),
    ],
)
def test_edited_anomaly_section_that_cannot_score_is_refused_at_load(tmp_path, section, message):
    model = dataclasses.replace(
        Model.random("gru", 1, 4, output_size=1), metadata={"anomaly": {"features": 1}}
    )
    path = tmp_path / "model.npz"
    model.save(path)
    arrays = _arrays_of(path)
    header = _header_of(arrays)
    header["metadata"]["anomaly"] = (
        {**header["metadata"]["anomaly"], **section} if isinstance(section, dict) else section
    )
    np.savez(path, **_with_header(arrays, header))

    with pytest.raises(ValueError, match=f"metadata 'anomaly': .*{message}") as info:
        Model.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_format_version_is_refused(saved, version):
    _, path = saved
    arrays = _arrays_of(path)
    header = _header_of(arrays)
    header["format_version"] = version
    np.savez(path, **_with_header(arrays, header))
    with pytest.raises(ValueError, match="format version .* is not supported"):
        Model.load(path)


def test_other_format_name_and_bad_header_are_refused(saved):
    _, path = saved
    arrays = _arrays_of(path)
    header = _header_of(arrays)
    np.savez(path, **_with_header(arrays, {**header, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a model file: format is 'something-else'"):
        Model.load(path)
    np.savez(path, **{**arrays, "header": np.frombuffer(b"\xff{", np.uint8)})
    with pytest.raises(ValueError, match="header is not UTF-8 JSON"):
        Model.load(path)
    np.savez(path, **_with_header(arrays, {**header, "num_layers": "two"}))
    with pytest.raises(ValueError, match="header field 'num_layers' is invalid"):
        Model.load(path)


def test_header_claiming_a_huge_layer_count_is_refused_without_running_out_of_memory(saved):
    _, path = saved
    arrays = _arrays_of(path)
    np.savez(path, **_with_header(arrays, {**_header_of(arrays), "num_layers": 10**9}))
    # in a child whose memory is capped: listing the arrays of 10**9 layers would take hundreds
    # of GB, which would bring down more than this test
    code = (
        "import resource, sys; from engine.model import Model; "
        "resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20)); "
        "Model.load(sys.argv[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ValueError: " in result.stderr, result.stderr[-500:]
    assert "header says 1000000000 layers, but the file holds 14 arrays" in result.stderr


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Model.load(tmp_path / "absent.npz")


# ---------------------------------------------------------------------- torch independence


def test_importing_engine_model_does_not_import_torch():
    code = (
        "import sys, engine.model; m = engine.model.Model.random('lstm', 2, 3); m.describe(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- from_torch


def _torch_params(module) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("cell, nonlinearity", CELL_CASES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_from_torch_copies_parameters_exactly(cell, nonlinearity, num_layers, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = cls(3, 6, num_layers=num_layers, batch_first=batch_first, **kwargs)
    model = Model.from_torch(rnn)

    assert (model.cell, model.nonlinearity) == (cell, nonlinearity)
    assert (model.input_size, model.hidden_size, model.num_layers) == (3, 6, num_layers)
    params = _torch_params(rnn)
    for k, layer in enumerate(model.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            np.testing.assert_array_equal(getattr(layer, name), params[f"{name}_l{k}"])
    assert model.head_weight is None


def test_from_torch_does_not_alias_torch_parameters():
    torch = pytest.importorskip("torch")
    rnn = torch.nn.GRU(2, 4)
    model = Model.from_torch(rnn)
    before = model.layers[0].weight_ih.copy()
    with torch.no_grad():
        rnn.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(model.layers[0].weight_ih, before)


def test_from_torch_without_bias_gives_zero_biases():
    torch = pytest.importorskip("torch")
    model = Model.from_torch(torch.nn.LSTM(3, 4, num_layers=2, bias=False))
    for layer in model.layers:
        assert layer.bias_ih.shape == (16,) and not layer.bias_ih.any() and not layer.bias_hh.any()


def test_from_torch_with_head_copies_linear_and_accepts_dropout():
    torch = pytest.importorskip("torch")
    rnn = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.3, batch_first=True)
    head = torch.nn.Linear(4, 2)
    model = Model.from_torch(
        rnn,
        head,
        scaling={"input_mean": [0, 1, 2], "input_std": [1, 2, 3]},
        feature_names=["a", "b", "c"],
        metadata={"run": 5},
    )
    np.testing.assert_array_equal(model.head_weight, head.weight.detach().numpy())
    np.testing.assert_array_equal(model.head_bias, head.bias.detach().numpy())
    assert model.output_size == 2 and model.feature_names == ("a", "b", "c")
    np.testing.assert_array_equal(model.input_std, np.array([1, 2, 3], np.float32))
    assert model.metadata == {"run": 5}
    no_bias = Model.from_torch(rnn, torch.nn.Linear(4, 3, bias=False))
    assert no_bias.head_bias.shape == (3,) and not no_bias.head_bias.any()


def test_from_torch_converts_float64_modules_to_float32():
    torch = pytest.importorskip("torch")
    rnn = torch.nn.GRU(2, 3).double()
    model = Model.from_torch(rnn)
    assert model.layers[0].weight_hh.dtype == np.float32
    np.testing.assert_array_equal(
        model.layers[0].weight_hh, rnn.weight_hh_l0.detach().numpy().astype(np.float32)
    )


def test_from_torch_refuses_bidirectional_proj_size_and_mismatched_head():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="cannot look ahead"):
        Model.from_torch(torch.nn.GRU(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="proj_size.*unsupported"):
        Model.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="in_features is 5 but the RNN's hidden_size is 4"):
        Model.from_torch(torch.nn.LSTM(3, 4), torch.nn.Linear(5, 1))
    with pytest.raises(TypeError, match="expected torch.nn.RNN, GRU or LSTM"):
        Model.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="scaling: unknown key"):
        Model.from_torch(torch.nn.LSTM(3, 4), scaling={"mean": [0, 0, 0]})


def _reference_forward(model: Model, xs: np.ndarray) -> np.ndarray:
    """Run the model over a (T, I) sequence in float64 from PyTorch's published equations."""

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    hidden = model.hidden_size
    h = [np.zeros(hidden) for _ in model.layers]
    c = [np.zeros(hidden) for _ in model.layers]
    outputs = []
    for x in xs:
        inp = x.astype(np.float64)
        for k, lw in enumerate(model.layers):
            gi = lw.weight_ih.astype(np.float64) @ inp + lw.bias_ih
            gh = lw.weight_hh.astype(np.float64) @ h[k] + lw.bias_hh
            if model.cell == "rnn":
                pre = gi + gh
                h[k] = np.tanh(pre) if model.nonlinearity == "tanh" else np.maximum(pre, 0)
            elif model.cell == "gru":
                r = sigmoid(gi[:hidden] + gh[:hidden])
                z = sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
                n = np.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
                h[k] = (1 - z) * n + z * h[k]
            else:
                g = gi + gh
                i, f = sigmoid(g[:hidden]), sigmoid(g[hidden : 2 * hidden])
                cand, o = np.tanh(g[2 * hidden : 3 * hidden]), sigmoid(g[3 * hidden :])
                c[k] = f * c[k] + i * cand
                h[k] = o * np.tanh(c[k])
            inp = h[k]
        y = inp if model.head_weight is None else model.head_weight @ inp + model.head_bias
        outputs.append(y)
    return np.array(outputs)


@pytest.mark.parametrize("cell, nonlinearity", CELL_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_converted_weights_reproduce_torch_outputs(cell, nonlinearity, bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    rnn = cls(3, 5, num_layers=2, bias=bias, batch_first=True, **kwargs)
    head = torch.nn.Linear(5, 2)
    xs = torch.randn(1, 12, 3)
    with torch.no_grad():
        expected = head(rnn(xs)[0])[0].numpy()
    got = _reference_forward(Model.from_torch(rnn, head), xs[0].numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------------- from_state_dict


def test_from_state_dict_with_prefixes_matches_from_torch():
    torch = pytest.importorskip("torch")
    rnn, head = torch.nn.LSTM(3, 4, num_layers=2), torch.nn.Linear(4, 1)
    state = {f"encoder.{k}": v for k, v in rnn.state_dict().items()}
    state |= {f"fc.{k}": v for k, v in head.state_dict().items()}
    model = Model.from_state_dict(state)
    assert model.cell == "lstm" and model.num_layers == 2 and model.output_size == 1
    assert model.fingerprint == Model.from_torch(rnn, head).fingerprint
    explicit = Model.from_state_dict(state, rnn_prefix="encoder", head_prefix="fc.", cell="lstm")
    assert explicit.fingerprint == model.fingerprint


@pytest.mark.parametrize("cell, gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_from_state_dict_infers_cell_from_gate_count_with_numpy_arrays(cell, gates):
    reference = Model.random(cell, 2, 3, num_layers=3)
    state = {k: np.array(v) for k, v in reference._arrays().items()}
    model = Model.from_state_dict(state)
    assert model.cell == cell and model.gates == gates and model.num_layers == 3
    assert model.fingerprint == reference.fingerprint


def test_from_state_dict_without_biases_and_with_relu():
    reference = Model.random("rnn", 2, 3, nonlinearity="relu")
    state = {k: v for k, v in reference._arrays().items() if k.startswith("weight")}
    model = Model.from_state_dict(state, nonlinearity="relu")
    assert model.nonlinearity == "relu"
    assert not model.layers[0].bias_ih.any() and not model.layers[0].bias_hh.any()


def test_from_state_dict_refuses_bidirectional_projection_and_bad_keys():
    base = {k: np.array(v) for k, v in Model.random("lstm", 2, 3)._arrays().items()}
    with pytest.raises(ValueError, match="weight_ih_l0_reverse.*look ahead"):
        Model.from_state_dict({**base, "weight_ih_l0_reverse": base["weight_ih_l0"]})
    with pytest.raises(ValueError, match="weight_hr_l0.*unsupported"):
        Model.from_state_dict({**base, "weight_hr_l0": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="cell 'gru' with hidden_size 3 needs 9 rows, got 12"):
        Model.from_state_dict(base, cell="gru")
    with pytest.raises(ValueError, match="no RNN weights found"):
        Model.from_state_dict({"fc.weight": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="bias_hh_l2: found, but weight_ih_l1 is missing"):
        Model.from_state_dict({**base, "bias_hh_l2": np.zeros(12)})
    with pytest.raises(ValueError, match="bias_ih_l0: found without its pair"):
        Model.from_state_dict({k: v for k, v in base.items() if k != "bias_hh_l0"})
    with pytest.raises(ValueError, match="cannot be inferred"):
        Model.from_state_dict({"weight_ih_l0": np.zeros((6, 2)), "weight_hh_l0": np.zeros((6, 3))})


def test_from_state_dict_head_detection():
    base = {k: np.array(v) for k, v in Model.random("gru", 2, 3)._arrays().items()}
    rng = np.random.default_rng(0)
    fc = {"fc.weight": rng.normal(size=(2, 3)), "fc.bias": rng.normal(size=2)}
    model = Model.from_state_dict({**base, **fc})
    np.testing.assert_array_equal(model.head_weight, fc["fc.weight"].astype(np.float32))
    weight_only = Model.from_state_dict({**base, "out.weight": fc["fc.weight"]})
    assert weight_only.output_size == 2 and not weight_only.head_bias.any()
    two_heads = {**base, **fc, "other.weight": rng.normal(size=(4, 3))}
    with pytest.raises(ValueError, match="several possible heads.*pass head_prefix"):
        Model.from_state_dict(two_heads)
    with pytest.raises(ValueError, match="neither the RNN nor its head: other.weight"):
        Model.from_state_dict(two_heads, head_prefix="fc")
    with pytest.raises(ValueError, match="head_prefix 'nope'"):
        Model.from_state_dict({**base, **fc}, head_prefix="nope")
    # a second layer after the head cannot be represented, so it is refused, not dropped
    deeper = {**base, **fc, "fc2.weight": rng.normal(size=(1, 2)), "fc2.bias": np.zeros(1)}
    with pytest.raises(ValueError, match="neither the RNN nor its head: fc2.bias, fc2.weight"):
        Model.from_state_dict(deeper)


def test_from_state_dict_with_two_rnns_needs_a_prefix():
    one = {f"a.{k}": np.array(v) for k, v in Model.random("gru", 2, 3)._arrays().items()}
    two = {f"b.{k}": np.array(v) for k, v in Model.random("gru", 3, 3)._arrays().items()}
    with pytest.raises(ValueError, match="several RNNs found.*rnn_prefix"):
        Model.from_state_dict({**one, **two})
    with pytest.raises(ValueError, match="neither the RNN nor its head"):
        Model.from_state_dict({**one, **two}, rnn_prefix="a")
    assert Model.from_state_dict(one, rnn_prefix="a.").input_size == 2
