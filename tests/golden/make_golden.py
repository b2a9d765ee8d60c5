"""Generate tests/golden/golden.npz: PyTorch outputs that pin the float64 reference to torch.

Regenerate (needs torch; the test suite itself does not):

    cd /work/main && /tmp/venv/bin/python tests/golden/make_golden.py

Seeds are fixed, so with the same torch version the stored arrays come out identical (only the
zip timestamps differ: don't commit a regeneration that changes no array). If a new torch changes
the numbers, commit the file together with the version string it records.

Cases: cell in {rnn_tanh, rnn_relu, gru, lstm} x layers in {1, 2} x head in {yes, no} = 16, named
like `lstm_l2_head` / `gru_l1_nohead`. Sizes: input 3, hidden 8, head 2 outputs, 100 steps,
float32. Every other case builds the torch module with batch_first=True. Each sequence goes
through `rnn(x)` in one call from the zero state, then the head (if any) on every output step.

Keys stored for a case `<case>`:

    <case>.rnn.weight_ih_l<k>, .rnn.weight_hh_l<k>, .rnn.bias_ih_l<k>, .rnn.bias_hh_l<k>
                              the module's state dict, PyTorch key names under "rnn."
    <case>.head.weight, <case>.head.bias     nn.Linear(8, 2), head cases only
    <case>.input              (100, 3) float32, the input sequence
    <case>.output             (100, O) float32, torch's output (O = 2 with a head, else 8)
    <case>.h_n, <case>.c_n    (layers, 8) float32, torch's final state (c_n for LSTM only)
    <case>.batch_first        bool scalar, how the torch module was built
    torch_version             str scalar, e.g. "2.13.0+cpu"
    cases                     str array of the case names, in generation order
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 3
HIDDEN_SIZE = 8
OUTPUT_SIZE = 2
STEPS = 100
SEED = 20240611
OUT_PATH = Path(__file__).resolve().parent / "golden.npz"

CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")


def case_name(cell: str, layers: int, head: bool) -> str:
    """Return the key prefix of a case, e.g. 'lstm_l2_head'."""
    return f"{cell}_l{layers}_{'head' if head else 'nohead'}"


def make_input(rng: np.random.Generator) -> np.ndarray:
    """Return a (STEPS, INPUT_SIZE) float32 sensor-like sequence with a few large spikes.

    Smooth signals of order 1 plus noise, like standardised sensor readings, and a handful of
    anomalous readings of magnitude 6 to 20 (as a standardised sensor shows during a fault), so
    gate pre-activations reach about +-8 and sigmoid/tanh saturate at those steps.
    """
    t = np.arange(STEPS, dtype=np.float64)
    freqs = rng.uniform(0.03, 0.2, size=INPUT_SIZE)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=INPUT_SIZE)
    x = np.sin(t[:, None] * freqs[None, :] * 2.0 * np.pi + phases[None, :])
    x += 0.3 * rng.standard_normal((STEPS, INPUT_SIZE))
    x += rng.uniform(-0.5, 0.5, size=INPUT_SIZE)  # nonzero offsets per feature
    n_spikes = 8
    spikes = rng.choice(STEPS, size=n_spikes, replace=False)
    signs = rng.choice([-1.0, 1.0], n_spikes)
    x[spikes, rng.integers(0, INPUT_SIZE, size=n_spikes)] = signs * rng.uniform(6.0, 20.0, n_spikes)
    return x.astype(np.float32)


def build_rnn(cell: str, layers: int, batch_first: bool) -> nn.Module:
    """Return a freshly initialised torch recurrent module for a case."""
    kwargs = dict(
        input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, num_layers=layers, batch_first=batch_first
    )
    if cell == "rnn_tanh":
        return nn.RNN(nonlinearity="tanh", **kwargs)
    if cell == "rnn_relu":
        return nn.RNN(nonlinearity="relu", **kwargs)
    if cell == "gru":
        return nn.GRU(**kwargs)
    if cell == "lstm":
        return nn.LSTM(**kwargs)
    raise ValueError(cell)


def run_case(index: int, cell: str, layers: int, head: bool) -> dict[str, np.ndarray]:
    """Build, run and record one case; return its arrays keyed as documented above."""
    name = case_name(cell, layers, head)
    batch_first = index % 2 == 1
    torch.manual_seed(SEED + index)
    rng = np.random.default_rng(SEED + index)

    rnn = build_rnn(cell, layers, batch_first).float().eval()
    linear = nn.Linear(HIDDEN_SIZE, OUTPUT_SIZE).float().eval() if head else None
    X = make_input(rng)

    with torch.no_grad():
        xt = torch.from_numpy(X)
        xt = xt.unsqueeze(0) if batch_first else xt.unsqueeze(1)  # batch of one
        out, hidden = rnn(xt)
        out = out[0] if batch_first else out[:, 0]  # (STEPS, HIDDEN_SIZE)
        Y = linear(out) if linear is not None else out

    arrays: dict[str, np.ndarray] = {}
    for key, value in rnn.state_dict().items():
        arrays[f"{name}.rnn.{key}"] = value.detach().numpy().astype(np.float32)
    if linear is not None:
        for key, value in linear.state_dict().items():
            arrays[f"{name}.head.{key}"] = value.detach().numpy().astype(np.float32)
    arrays[f"{name}.input"] = X
    arrays[f"{name}.output"] = Y.numpy().astype(np.float32)
    h_n, c_n = hidden if cell == "lstm" else (hidden, None)
    arrays[f"{name}.h_n"] = h_n[:, 0].numpy().astype(np.float32)
    if c_n is not None:
        arrays[f"{name}.c_n"] = c_n[:, 0].numpy().astype(np.float32)
    arrays[f"{name}.batch_first"] = np.array(batch_first)
    return arrays


def main() -> None:
    """Generate every case and write golden.npz."""
    torch.set_num_threads(1)  # one thread: the same summation order on every machine we use
    arrays: dict[str, np.ndarray] = {}
    names = []
    index = 0
    for cell in CELLS:
        for layers in (1, 2):
            for head in (True, False):
                arrays.update(run_case(index, cell, layers, head))
                names.append(case_name(cell, layers, head))
                index += 1
    arrays["torch_version"] = np.array(torch.__version__)
    arrays["cases"] = np.array(names)
    np.savez_compressed(OUT_PATH, **arrays)
    print(f"wrote {len(names)} cases to {OUT_PATH} ({OUT_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
