"""Tests for `rnnstream convert` (engine.convert): PyTorch files in, validated model files out."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from engine import ctl
from engine.cli import main
from engine.model import Model
from engine.process import ServeProcess

REPO = Path(__file__).resolve().parents[1]


try:
    import torch
except ImportError:  # the torch-free tests below still run
    torch = None

if torch is not None:

    class Forecaster(torch.nn.Module):
        """A typical trained module: one LSTM, one Linear applied to its output."""

        def __init__(self, bidirectional: bool = False) -> None:
            super().__init__()
            self.encoder = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True,
                                         bidirectional=bidirectional)  # fmt: skip
            self.fc = torch.nn.Linear(6 * (2 if bidirectional else 1), 1)

        def forward(self, x):
            return self.fc(self.encoder(x)[0])

    class WithNorm(torch.nn.Module):
        """A module with weights outside the RNN and head, which a model cannot hold."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(3)
            self.rnn = torch.nn.GRU(3, 4)
            self.fc = torch.nn.Linear(4, 1)

    class Sequenced(torch.nn.Module):
        """An RNN, then `after` applied to its output sequence (a head, or more than a head)."""

        def __init__(self, rnn: torch.nn.Module, after: torch.nn.Module) -> None:
            super().__init__()
            self.rnn = rnn
            self.after = after

        def forward(self, x):
            return self.after(self.rnn(x)[0])

    class LastStep(torch.nn.Module):
        """A Linear on the last step only, squeezed to (batch,): the streamed output's last row."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1]).squeeze(-1)

    class BatchFirstAroundTimeMajor(torch.nn.Module):
        """Takes (batch, time, inputs) and transposes for its time-major RNN, and back."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.rnn(x.transpose(0, 1))[0]).transpose(0, 1)

    class InputLayer(torch.nn.Module):
        """A Linear or Embedding feeding the RNN (input_size == hidden_size, like a head)."""

        def __init__(self, embedding: bool = False) -> None:
            super().__init__()
            self.proj = torch.nn.Embedding(10, 4) if embedding else torch.nn.Linear(4, 4)
            self.rnn = torch.nn.GRU(4, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(self.proj(x))[0]

    class HeadFirst(torch.nn.Module):
        """A correct RNN -> Linear whose __init__ creates the head before the RNN."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.rnn = torch.nn.GRU(3, 4)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    class NeedsLengths(torch.nn.Module):
        """A forward that cannot be called with the input tensor alone."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)

        def forward(self, x, lengths):
            return self.rnn(x)[0]

    class ReturnsDict(torch.nn.Module):
        """A forward whose result is not a tensor."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return {"out": self.rnn(x)[0]}

    def _module(name: str) -> torch.nn.Module:
        """Build one of the named test modules with seeded weights."""
        torch.manual_seed(0)
        nn = torch.nn
        return {
            "rnn_relu_time_major": lambda: nn.RNN(3, 5, num_layers=2, nonlinearity="relu"),
            "gru_linear_batch_first": lambda: Sequenced(
                nn.GRU(3, 4, num_layers=2, batch_first=True, dropout=0.3), nn.Linear(4, 2)
            ),
            "lstm_dropout_linear": lambda: Sequenced(
                nn.LSTM(3, 5, batch_first=True),
                nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Linear(5, 1)),
            ),
            "float64_lstm_linear": lambda: Forecaster().double(),
            "last_step_squeezed": LastStep,
            "batch_first_around_time_major": BatchFirstAroundTimeMajor,
            "sigmoid_after_head": lambda: Sequenced(
                nn.GRU(3, 4, batch_first=True), nn.Sequential(nn.Linear(4, 2), nn.Sigmoid())
            ),
            "softmax_after_head": lambda: Sequenced(
                nn.GRU(3, 4, batch_first=True), nn.Sequential(nn.Linear(4, 2), nn.Softmax(-1))
            ),
            "relu_between": lambda: Sequenced(
                nn.LSTM(3, 5, batch_first=True), nn.Sequential(nn.ReLU(), nn.Linear(5, 1))
            ),
            "input_projection": InputLayer,
        }[name]()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "convert", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _convert(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- end to end (subprocess)


def test_cli_converts_a_saved_bare_module_with_trust_pickle(tmp_path):
    pytest.importorskip("torch")
    torch.manual_seed(0)
    rnn = torch.nn.GRU(4, 8, num_layers=2, batch_first=True)
    torch.save(rnn, tmp_path / "gru.pt")
    out = tmp_path / "gru.npz"

    result = _cli(str(tmp_path / "gru.pt"), "--out", str(out), "--trust-pickle")

    assert result.returncode == 0, result.stderr
    model = Model.load(out)
    assert model.fingerprint == Model.from_torch(rnn).fingerprint
    assert result.stdout.count("\n") == 1
    assert "gru 4 -> 8 x 2 layers" in result.stdout
    assert f"fingerprint {model.fingerprint[:16]}" in result.stdout
    assert model.metadata["source"] == "gru.pt"


def test_cli_converts_a_saved_state_dict_with_head_and_scaling(tmp_path):
    pytest.importorskip("torch")
    torch.manual_seed(1)
    net = Forecaster()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    out = tmp_path / "model.npz"

    result = _cli(
        str(tmp_path / "sd.pt"),
        "--out",
        str(out),
        "--feature-names",
        "temp, load,flow",
        "--input-mean",
        "1,2,3",
        "--input-std",
        "0.5,1,2",
    )

    assert result.returncode == 0, result.stderr
    model = Model.load(out)
    expected = Model.from_torch(
        net.encoder,
        net.fc,
        scaling={"input_mean": [1, 2, 3], "input_std": [0.5, 1, 2]},
        feature_names=["temp", "load", "flow"],
    )
    assert model.fingerprint == expected.fingerprint
    assert model.feature_names == ("temp", "load", "flow")
    np.testing.assert_array_equal(model.head_weight, net.fc.weight.detach().numpy())


def test_cli_per_stream_bytes_are_what_the_daemon_reports(tmp_path):
    # A 2-layer LSTM H=16 holds 256 bytes of recurrent state; the engine keeps 16 more per
    # stream (last seq, last-used time), and that is what a user sizing memory needs.
    pytest.importorskip("torch")
    torch.manual_seed(2)
    torch.save(torch.nn.LSTM(1, 16, num_layers=2).state_dict(), tmp_path / "lstm.pt")
    out = tmp_path / "lstm.npz"
    result = _cli(str(tmp_path / "lstm.pt"), "--out", str(out))
    assert result.returncode == 0, result.stderr

    with ServeProcess(out, tmp_path) as server:
        reported = ctl.control(server.control, "stats")["bytes_per_stream"]
    assert reported == 272
    assert f", {reported} bytes per stream in the engine, plus its id," in result.stdout
    assert "256" not in result.stdout


# ---------------------------------------------------------------------- in process


def test_full_module_without_trust_pickle_is_refused_with_the_reason(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(Forecaster(), tmp_path / "net.pt")
    code, out, err = _convert(capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz")
    assert code == 2
    assert "--trust-pickle" in err and "arbitrary code" in err
    assert not (tmp_path / "m.npz").exists()


def test_module_with_rnn_and_linear_submodules_converts(tmp_path, capsys):
    pytest.importorskip("torch")
    net = Forecaster()
    torch.save(net, tmp_path / "net.pt")
    code, out, err = _convert(
        capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle"
    )
    assert code == 0, err
    model = Model.load(tmp_path / "m.npz")
    assert model.fingerprint == Model.from_torch(net.encoder, net.fc).fingerprint
    assert model.output_size == 1 and "linear head -> 1 outputs" in out


def test_module_options_must_agree_with_the_module(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(Forecaster(), tmp_path / "net.pt")
    args = (tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle")
    code, _, err = _convert(capsys, *args, "--cell", "gru")
    assert code == 2 and "--cell gru" in err and "lstm" in err
    code, _, err = _convert(capsys, *args, "--head-prefix", "encoder")
    assert code == 2 and "--head-prefix 'encoder'" in err and "not a Linear" in err
    code, _, err = _convert(capsys, *args, "--rnn-prefix", "missing")
    assert code == 2 and "no such submodule" in err


def test_bidirectional_module_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(Forecaster(bidirectional=True), tmp_path / "net.pt")
    code, _, err = _convert(
        capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle"
    )
    assert code == 2 and "cannot look ahead" in err


def test_module_with_weights_outside_rnn_and_head_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(WithNorm(), tmp_path / "net.pt")
    code, _, err = _convert(
        capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle"
    )
    assert code == 2 and "norm.weight" in err and "outside the RNN" in err


def test_checkpoint_dict_with_nested_state_dict_converts(tmp_path, capsys):
    pytest.importorskip("torch")
    rnn = torch.nn.RNN(2, 3, nonlinearity="relu")
    torch.save({"epoch": 7, "state_dict": rnn.state_dict()}, tmp_path / "ckpt.pt")
    code, out, err = _convert(
        capsys, tmp_path / "ckpt.pt", "--out", tmp_path / "m.npz", "--nonlinearity", "relu"
    )
    assert code == 0, err
    assert Model.load(tmp_path / "m.npz").fingerprint == Model.from_torch(rnn).fingerprint
    assert "rnn(relu)" in out


def test_rnn_state_dict_without_nonlinearity_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(torch.nn.RNN(2, 3).state_dict(), tmp_path / "sd.pt")
    args = (tmp_path / "sd.pt", "--out", tmp_path / "m.npz")
    code, out, err = _convert(capsys, *args)
    assert code == 2 and "--nonlinearity" in err and "tanh or relu" in err
    assert err.count("\n") == 1 and not (tmp_path / "m.npz").exists()
    code, out, err = _convert(capsys, *args, "--nonlinearity", "tanh")
    assert code == 0 and "rnn(tanh)" in out, err


@pytest.mark.parametrize(
    "name",
    [
        "rnn_relu_time_major",
        "gru_linear_batch_first",
        "lstm_dropout_linear",
        "float64_lstm_linear",
        "last_step_squeezed",
        "batch_first_around_time_major",
    ],
)
def test_module_whose_forward_the_model_reproduces_converts_after_a_check(name, tmp_path, capsys):
    pytest.importorskip("torch")
    module = _module(name)
    torch.save(module, tmp_path / "net.pt")
    code, out, err = _convert(
        capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle"
    )
    assert code == 0, err
    assert "checked against the module's forward" in out and out.count("\n") == 1
    assert Model.load(tmp_path / "m.npz").input_size == 3


@pytest.mark.parametrize(
    "name", ["sigmoid_after_head", "softmax_after_head", "relu_between", "input_projection"]
)
def test_module_whose_forward_does_more_than_rnn_and_linear_is_refused(name, tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(_module(name), tmp_path / "net.pt")
    code, out, err = _convert(
        capsys, tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle"
    )
    assert code == 2 and "output differs" in err and "state_dict()" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()


def test_module_whose_forward_cannot_be_checked_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    args = (tmp_path / "net.pt", "--out", tmp_path / "m.npz", "--trust-pickle")
    torch.save(NeedsLengths(), tmp_path / "net.pt")
    code, _, err = _convert(capsys, *args)
    assert code == 2 and "cannot run the module's forward" in err and "lengths" in err
    assert err.count("\n") == 1
    torch.save(ReturnsDict(), tmp_path / "net.pt")
    code, _, err = _convert(capsys, *args)
    assert code == 2 and "returns a dict" in err
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("embedding", [False, True], ids=["linear", "embedding"])
def test_state_dict_with_an_input_layer_shaped_like_a_head_is_refused(embedding, tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(InputLayer(embedding).state_dict(), tmp_path / "sd.pt")
    code, _, err = _convert(capsys, tmp_path / "sd.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "proj.weight" in err and "input layer" in err
    assert err.count("\n") == 1 and not (tmp_path / "m.npz").exists()


def test_state_dict_head_that_could_be_an_input_layer_needs_head_prefix(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(HeadFirst().state_dict(), tmp_path / "first.pt")
    args = ("--out", tmp_path / "m.npz")
    code, _, err = _convert(capsys, tmp_path / "first.pt", *args)
    assert code == 2 and "fc.weight" in err and "--head-prefix" in err
    code, out, err = _convert(capsys, tmp_path / "first.pt", *args, "--head-prefix", "fc")
    assert code == 0 and "linear head -> 2 outputs" in out, err
    # no bias and input_size == hidden_size: an Embedding's weight has the same shape
    no_bias = Sequenced(torch.nn.GRU(4, 4), torch.nn.Linear(4, 3, bias=False))
    torch.save(no_bias.state_dict(), tmp_path / "nobias.pt")
    code, _, err = _convert(capsys, tmp_path / "nobias.pt", *args)
    assert code == 2 and "after.weight" in err and "no bias" in err
    code, out, err = _convert(capsys, tmp_path / "nobias.pt", *args, "--head-prefix", "after")
    assert code == 0 and "linear head -> 3 outputs" in out, err


@pytest.mark.parametrize("trust", [False, True], ids=["plain", "trust_pickle"])
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file_is_refused_with_how_to_save_instead(how, trust, tmp_path, capsys):
    pytest.importorskip("torch")
    net = Forecaster().eval()
    with warnings.catch_warnings():  # torch deprecates jit, and tracing warns; files still exist
        warnings.simplefilter("ignore")
        compiled = (
            torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.ones(1, 2, 3))
        )
        compiled.save(str(tmp_path / "ts.pt"))
    args = (tmp_path / "ts.pt", "--out", tmp_path / "m.npz", *(["--trust-pickle"] * trust))
    code, _, err = _convert(capsys, *args)
    assert code == 2 and "TorchScript" in err and "torch.save(model.state_dict(), path)" in err
    assert "weights_only" not in err and "Warning" not in err and err.count("\n") == 1


def test_state_dict_problems_become_one_line_user_errors(tmp_path, capsys):
    pytest.importorskip("torch")
    state = {**Forecaster().state_dict(), "extra.weight": torch.zeros(2, 6)}
    torch.save(state, tmp_path / "sd.pt")
    code, _, err = _convert(capsys, tmp_path / "sd.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "several possible heads" in err and err.count("\n") == 1
    code, _, err = _convert(
        capsys, tmp_path / "sd.pt", "--out", tmp_path / "m.npz", "--head-prefix", "fc"
    )
    assert code == 2 and "extra.weight" in err
    torch.save({"lr": 0.1}, tmp_path / "cfg.pt")
    code, _, err = _convert(capsys, tmp_path / "cfg.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "holds no tensors" in err
    torch.save([1, 2], tmp_path / "list.pt")
    code, _, err = _convert(capsys, tmp_path / "list.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "expected an nn.Module or a state dict" in err


def test_bad_scaling_and_feature_flags_are_user_errors(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(torch.nn.GRU(3, 4).state_dict(), tmp_path / "sd.pt")
    args = (tmp_path / "sd.pt", "--out", tmp_path / "m.npz")
    code, _, err = _convert(capsys, *args, "--input-mean", "0,0,0")
    assert code == 2 and "--input-mean and --input-std" in err
    code, _, err = _convert(capsys, *args, "--input-mean", "0,x,0", "--input-std", "1,1,1")
    assert code == 2 and "comma-separated numbers" in err
    code, _, err = _convert(capsys, *args, "--input-mean", "0,0", "--input-std", "1,1")
    assert code == 2 and "input_mean: expected shape (3,)" in err
    code, _, err = _convert(capsys, *args, "--input-mean", "0,0,0", "--input-std", "1,0,1")
    assert code == 2 and "input_std: every value must be > 0" in err
    code, _, err = _convert(capsys, *args, "--feature-names", "a,b")
    assert code == 2 and "feature_names: expected 3 names" in err
    assert not (tmp_path / "m.npz").exists()


def test_missing_or_unreadable_input_is_a_user_error(tmp_path, capsys):
    pytest.importorskip("torch")
    code, _, err = _convert(capsys, tmp_path / "absent.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "no such file" in err
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    code, _, err = _convert(capsys, tmp_path / "junk.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "not a readable torch.save file" in err
    Model.random("gru", 2, 3).save(tmp_path / "model.npz")
    code, _, err = _convert(capsys, tmp_path / "model.npz", "--out", tmp_path / "m.npz")
    assert code == 2 and "not a readable torch.save file" in err


def test_output_path_problems_are_user_errors(tmp_path, capsys):
    pytest.importorskip("torch")
    torch.save(torch.nn.GRU(3, 4).state_dict(), tmp_path / "sd.pt")
    code, _, err = _convert(capsys, tmp_path / "sd.pt", "--out", tmp_path)
    assert code == 2 and "is a directory" in err
    code, _, err = _convert(capsys, tmp_path / "sd.pt", "--out", tmp_path / "no" / "m.npz")
    assert code == 2 and "does not exist" in err


def test_missing_torch_tells_how_to_install_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "sd.pt").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    code, _, err = _convert(capsys, tmp_path / "sd.pt", "--out", tmp_path / "m.npz")
    assert code == 2 and "pip install 'rnnstream[torch]'" in err


def test_importing_engine_convert_does_not_import_torch():
    code = "import sys, engine.convert; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
