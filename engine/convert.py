"""Convert a saved PyTorch RNN / GRU / LSTM (module or state dict) into an rnnstream model file.

INPUT is a file written by `torch.save` holding either an nn.Module (a bare RNN/GRU/LSTM, or a
module with exactly one such submodule and optionally one nn.Linear head applied to its output)
or a state dict. It is read with `torch.load(weights_only=True)`; a full pickled module needs
`--trust-pickle`, because unpickling it can run arbitrary code from the file.

Only what the engine reproduces is converted. A module's own forward is run on a few random
sequences and must give the converted model's outputs, so an activation, an input layer or
arithmetic in forward is refused rather than dropped. A state dict holds weights only: its entries
must be one RNN and at most one Linear head, and an nn.RNN's needs --nonlinearity, which it does
not record. TorchScript archives are refused: they hold compiled code, not layers.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.cli import UserError

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
# random sequences the module's forward is checked on; batch != steps, so that a forward which
# swaps the two axes cannot pass on shape alone
_CHECK_BATCH, _CHECK_STEPS = 3, 16
# largest difference allowed, relative to 1 + the largest |output|: float32 stepping agrees with
# torch to ~1e-6, while a dropped activation or layer is off by far more
_CHECK_TOLERANCE = 1e-4
_STATE_DICT_WAY = (
    "if at inference the model does compute just the RNN and a Linear on its output, convert its "
    "state dict instead (torch.save(model.state_dict(), path)), naming the parts with "
    "--rnn-prefix / --head-prefix and, for an nn.RNN, --nonlinearity: that is on your "
    "responsibility, as weights alone cannot show what forward does"
)
# options without a fixed default: argparse.SUPPRESS keeps "(default: None)" out of --help
_OPTIONAL = (
    "cell",
    "nonlinearity",
    "rnn_prefix",
    "head_prefix",
    "feature_names",
    "input_mean",
    "input_std",
    "output_mean",
    "output_std",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `rnnstream convert` options."""
    parser.add_argument("input", metavar="INPUT", help="file written by torch.save (.pt/.pth)")
    parser.add_argument(
        "--out",
        required=True,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="model file to write (.npz)",
    )
    parser.add_argument(
        "--cell",
        choices=("lstm", "gru", "rnn"),
        default=argparse.SUPPRESS,
        help="cell type (default: from the module, or inferred from the state dict's gate count)",
    )
    parser.add_argument(
        "--nonlinearity",
        choices=("tanh", "relu"),
        default=argparse.SUPPRESS,
        help="rnn activation (default: from the module; required for an nn.RNN state dict, "
        "which does not record it)",
    )
    parser.add_argument(
        "--rnn-prefix",
        default=argparse.SUPPRESS,
        metavar="PREFIX",
        help="submodule / key prefix of the RNN, e.g. 'encoder.' (needed only if ambiguous)",
    )
    parser.add_argument(
        "--head-prefix",
        default=argparse.SUPPRESS,
        metavar="PREFIX",
        help="submodule / key prefix of the Linear head, e.g. 'fc.' (default: auto-detect)",
    )
    parser.add_argument(
        "--feature-names",
        default=argparse.SUPPRESS,
        metavar="A,B,C",
        help="comma-separated input names (default: none)",
    )
    for side in ("input", "output"):
        parser.add_argument(
            f"--{side}-mean",
            default=argparse.SUPPRESS,
            metavar="M1,M2,...",
            help=f"per-{side} means (comma-separated); "
            + ("the cell sees (x - mean) / std" if side == "input" else "output is y * std + mean"),
        )
        parser.add_argument(
            f"--{side}-std",
            default=argparse.SUPPRESS,
            metavar="S1,S2,...",
            help=f"per-{side} standard deviations (comma-separated, > 0)",
        )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a full pickled nn.Module (runs code from the file: trusted files only)",
    )


def run(args: argparse.Namespace) -> int:
    """Read INPUT, build a `Model`, write it to --out and print a one-line summary."""
    args = argparse.Namespace(**{**dict.fromkeys(_OPTIONAL), **vars(args)})
    source = Path(args.input)
    if not source.is_file():
        raise UserError(f"{source}: no such file")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file path such as {out}/model.npz")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    try:
        import torch  # optional dependency, only this subcommand needs it
    except ImportError as exc:
        raise UserError(
            "reading PyTorch files needs torch: pip install 'rnnstream[torch]'"
        ) from exc

    from engine.model import Model

    obj = _load(torch, source, trust_pickle=args.trust_pickle)
    checked = ""
    common = {
        "scaling": _scaling(args),
        "feature_names": _names(args.feature_names),
        "metadata": {"source": source.name, "torch_version": str(torch.__version__)},
    }
    try:
        if isinstance(obj, torch.nn.Module):
            model, difference = _from_module(torch, obj, args, common)
            checked = (
                f"; checked against the module's forward (max relative difference {difference:.1e})"
            )
        else:
            state_dict = _state_dict_of(torch, obj, source)
            model = Model.from_state_dict(
                state_dict,
                cell=args.cell,
                nonlinearity=args.nonlinearity or "tanh",
                head_prefix=args.head_prefix,
                rnn_prefix=args.rnn_prefix,
                **common,
            )
            if model.cell == "rnn" and args.nonlinearity is None:
                raise ValueError(
                    "this is an nn.RNN state dict, which does not record whether the RNN used "
                    "tanh or relu, and the two compute different outputs; pass --nonlinearity "
                    "tanh or --nonlinearity relu as in the model's definition (nn.RNN's default "
                    "is tanh)"
                )
    except (ValueError, TypeError) as exc:
        raise UserError(f"{source}: {exc}") from exc

    try:
        model.save(out)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    from engine.stream import bytes_per_stream

    # The engine's figure (`ctl stats` bytes_per_stream), which is what memory is sized by: it
    # adds a stream's last seq and last-used time to its recurrent state.
    per_stream = f"{bytes_per_stream(model):,} bytes per stream in the engine, plus its id"
    print(
        f"wrote {out}: {model.describe()}, {per_stream}, "
        f"fingerprint {model.fingerprint[:16]}{checked}"
    )
    return 0


def _load(torch: Any, source: Path, *, trust_pickle: bool) -> Any:
    """Return the object in `source`, unpickling arbitrary classes only with --trust-pickle."""
    if _is_torchscript(source):
        raise UserError(
            f"{source}: is a TorchScript archive (torch.jit.save of a scripted or traced model), "
            "which holds compiled code rather than layers, so it cannot be converted; in the "
            "training code, save the weights with torch.save(model.state_dict(), path), or the "
            "module with torch.save(model, path) (then convert with --trust-pickle)"
        )
    try:
        with warnings.catch_warnings():  # torch warns before refusing a TorchScript archive
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch reports a refused class as "Unsupported global: GLOBAL module.Class"; any other
        # weights-only failure means the bytes are not a pickle at all
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused is None:
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
            reason = detail[1] if detail else _first_line(exc)
            raise UserError(f"{source}: not a readable torch.save file ({reason})") from exc
        if not trust_pickle:
            raise UserError(
                f"{source}: holds a pickled Python object ({refused[1]}), and unpickling can run "
                "arbitrary code; re-run with --trust-pickle if you trust this file, or save "
                "model.state_dict() instead"
            ) from exc
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... on bad files
        raise UserError(f"{source}: not a readable torch.save file ({_first_line(exc)})") from exc
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except Exception as exc:  # the pickle may reference classes that are not importable here
        raise UserError(
            f"{source}: cannot unpickle ({_first_line(exc)}); the module's class must be "
            "importable, or save model.state_dict() instead"
        ) from exc


def _is_torchscript(source: Path) -> bool:
    """Tell whether `source` is a torch.jit.save archive (torch.save archives hold no constants)."""
    try:
        with zipfile.ZipFile(source) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _from_module(
    torch: Any, module: Any, args: argparse.Namespace, common: dict
) -> tuple[Any, float]:
    """Convert the one RNN (and optional Linear head) in `module`; check it against forward.

    Return the model and the largest difference between its outputs and the module's.
    """
    from engine.model import Model

    nn = torch.nn
    rnn_name, rnn = _pick(module, nn.RNNBase, args.rnn_prefix, "RNN/GRU/LSTM", "--rnn-prefix")
    if rnn is None:
        raise ValueError("module holds no torch.nn.RNN, GRU or LSTM")
    head_name, head = _pick(module, nn.Linear, args.head_prefix, "Linear", "--head-prefix")
    owned = {id(t) for part in (rnn, head) if part is not None for t in _tensors(part)}
    stray = [name for name, t in _named_tensors(module) if id(t) not in owned]
    if stray:
        raise ValueError(
            f"module has weights outside the RNN{' and its head' if head else ''}: "
            f"{', '.join(stray)}; a model is one RNN optionally followed by one Linear"
        )
    model = Model.from_torch(rnn, head, **common)
    if args.cell is not None and args.cell != model.cell:
        raise ValueError(f"--cell {args.cell}: the module's {rnn_name or 'RNN'} is a {model.cell}")
    if args.nonlinearity is not None and args.nonlinearity != model.nonlinearity:
        raise ValueError(
            f"--nonlinearity {args.nonlinearity}: the module uses {model.nonlinearity}"
        )
    what = f"{type(rnn).__name__} {rnn_name!r}" if rnn_name else type(rnn).__name__
    if head is not None:
        what += f" followed by its Linear {head_name!r}" if head_name else " and Linear"
    # the scaling options wrap the model around the module, so check the model without them
    difference = _check_forward(torch, module, rnn, Model.from_torch(rnn, head), what)
    return model, difference


def _check_forward(torch: Any, module: Any, rnn: Any, model: Any, what: str) -> float:
    """Return max |model - forward| / (1 + max |forward|) over a few random input sequences.

    `model` steps the sequences one reading at a time, as the engine will; the module's own
    forward runs in eval mode (dropout off) and float32 on one tensor laid out as its RNN expects,
    or, failing that, the other way round (a forward may transpose). Raise ValueError if forward
    cannot be run, its result is neither the model's outputs at every step nor at the last, or
    the two differ by more than float32 rounding; `what` names the converted parts.
    """
    import numpy as np

    from engine.stream import StreamEngine

    batch, steps = _CHECK_BATCH, _CHECK_STEPS
    x = np.random.default_rng(0).standard_normal((batch, steps, model.input_size))
    x = x.astype(np.float32)
    engine = StreamEngine(model)
    streams = [f"check-{i}" for i in range(batch)]
    got = np.stack([engine.step_many(streams, x[:, t]) for t in range(steps)], axis=1)
    module.float().eval()  # in place: the module is ours, and its weights are already copied
    outcomes: list[ValueError | float] = []
    for batch_first in (rnn.batch_first, not rnn.batch_first):
        try:
            expected = _run_forward(torch, module, x, batch_first, model.output_size)
        except ValueError as exc:
            outcomes.append(exc)
            continue
        got_steps = got if expected.ndim == 3 else got[:, -1]
        difference = float(np.abs(got_steps - expected).max() / (1 + np.abs(expected).max()))
        if difference <= _CHECK_TOLERANCE:
            return difference
        outcomes.append(difference)
    if isinstance(outcomes[0], ValueError):  # the RNN's own layout says most
        raise outcomes[0]
    raise ValueError(
        f"on random input sequences the module's output differs by up to {outcomes[0]:.2g} "
        f"(relative) from what its {what} compute, so its forward does something more (an "
        f"activation, a layer without weights, arithmetic), which rnnstream cannot reproduce; "
        f"{_STATE_DICT_WAY}"
    )


def _run_forward(torch: Any, module: Any, x: Any, batch_first: bool, outputs: int) -> Any:
    """Return module(x) as float64 (batch, steps, outputs), or (batch, outputs) for a last step.

    `x` is (batch, steps, inputs), handed to forward transposed unless `batch_first`. A tuple
    result counts by its first element; a squeezed size-1 output axis is restored.
    """
    import numpy as np

    batch, steps = x.shape[:2]
    layout = (batch, steps) if batch_first else (steps, batch)
    tensor = torch.from_numpy(x if batch_first else np.ascontiguousarray(x.transpose(1, 0, 2)))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = module(tensor)
    except Exception as exc:  # whatever forward needs beyond one tensor, the engine cannot give
        raise ValueError(
            f"cannot run the module's forward on one input tensor of shape {layout + x.shape[2:]} "
            f"to check the conversion ({_first_line(exc)}); {_STATE_DICT_WAY}"
        ) from exc
    if isinstance(result, (tuple, list)) and result:
        result = result[0]
    if not isinstance(result, torch.Tensor):
        raise ValueError(
            f"the module's forward returns a {type(result).__name__}, not a tensor (or a tuple "
            f"starting with one), so the conversion cannot be checked; {_STATE_DICT_WAY}"
        )
    found = result.detach().to("cpu", torch.float64).numpy()
    if outputs == 1 and found.shape in (layout, (batch,)):
        found = found[..., None]
    if found.shape == (*layout, outputs):
        return found if batch_first else found.transpose(1, 0, 2)
    if found.shape == (batch, outputs):
        return found
    raise ValueError(
        f"the module's forward maps input of shape {layout + x.shape[2:]} to shape "
        f"{tuple(found.shape)}, which is neither every step nor the last of the converted "
        f"model's {outputs} outputs, so the conversion cannot be checked; {_STATE_DICT_WAY}"
    )


def _pick(module: Any, kind: type, prefix: str | None, label: str, flag: str) -> tuple[str, Any]:
    """Return the (name, submodule) of type `kind`: the one named by `prefix`, else the only one."""
    if prefix is not None:
        name = prefix.rstrip(".")
        try:
            found = module.get_submodule(name) if name else module
        except AttributeError as exc:
            raise ValueError(f"{flag} {prefix!r}: no such submodule") from exc
        if not isinstance(found, kind):
            raise ValueError(f"{flag} {prefix!r}: is a {type(found).__name__}, not a {label}")
        return name, found
    matches = [(name, sub) for name, sub in module.named_modules() if isinstance(sub, kind)]
    if len(matches) > 1:
        names = ", ".join(repr(name) for name, _ in matches)
        raise ValueError(f"module has several {label} submodules ({names}); pick one with {flag}")
    return matches[0] if matches else ("", None)


def _tensors(module: Any) -> list[Any]:
    return [t for _, t in _named_tensors(module)]


def _named_tensors(module: Any) -> list[tuple[str, Any]]:
    return [*module.named_parameters(), *module.named_buffers()]


def _state_dict_of(torch: Any, obj: Any, source: Path) -> Mapping[str, Any]:
    """Return the state dict in `obj`, unwrapping a {'state_dict': ...} style checkpoint."""
    if not isinstance(obj, Mapping):
        raise UserError(
            f"{source}: holds a {type(obj).__name__}; expected an nn.Module or a state dict"
        )
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        raise UserError(f"{source}: the dict holds no tensors; expected a state dict")
    return obj


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise UserError(f"{flag}: expected comma-separated numbers, got {text!r}") from exc


def _scaling(args: argparse.Namespace) -> dict[str, list[float]]:
    scaling = {}
    for side in ("input", "output"):
        for stat in ("mean", "std"):
            values = _floats(getattr(args, f"{side}_{stat}"), f"--{side}-{stat}")
            if values is not None:
                scaling[f"{side}_{stat}"] = values
        if (f"{side}_mean" in scaling) != (f"{side}_std" in scaling):
            raise UserError(f"--{side}-mean and --{side}-std: give both or neither")
    return scaling


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(","))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
