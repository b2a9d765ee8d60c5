"""Convert a saved PyTorch RNN / GRU / LSTM (module or state dict) into an rnnstream model file.

INPUT is a file written by `torch.save` holding either an nn.Module (a bare RNN/GRU/LSTM, or a
module with exactly one such submodule and optionally one nn.Linear head applied to its output)
or a state dict. It is read with `torch.load(weights_only=True)`; a full pickled module needs
`--trust-pickle`, because unpickling it can run arbitrary code from the file.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.cli import UserError

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
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
        help="rnn activation (default: from the module; 'tanh' for a state dict, which cannot "
        "tell)",
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
    common = {
        "scaling": _scaling(args),
        "feature_names": _names(args.feature_names),
        "metadata": {"source": source.name, "torch_version": str(torch.__version__)},
    }
    try:
        if isinstance(obj, torch.nn.Module):
            model = _from_module(torch, obj, args, common)
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
                print(
                    "rnnstream convert: note: a state dict does not record the rnn "
                    "nonlinearity; assumed tanh (pass --nonlinearity relu if it was relu)"
                )
    except (ValueError, TypeError) as exc:
        raise UserError(f"{source}: {exc}") from exc

    try:
        model.save(out)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    print(f"wrote {out}: {model.describe()}, fingerprint {model.fingerprint[:16]}")
    return 0


def _load(torch: Any, source: Path, *, trust_pickle: bool) -> Any:
    """Return the object in `source`, unpickling arbitrary classes only with --trust-pickle."""
    try:
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


def _from_module(torch: Any, module: Any, args: argparse.Namespace, common: dict) -> Any:
    """Find the one RNN (and optional Linear head) in `module` and convert them."""
    from engine.model import Model

    nn = torch.nn
    rnn_name, rnn = _pick(module, nn.RNNBase, args.rnn_prefix, "RNN/GRU/LSTM", "--rnn-prefix")
    if rnn is None:
        raise ValueError("module holds no torch.nn.RNN, GRU or LSTM")
    _, head = _pick(module, nn.Linear, args.head_prefix, "Linear", "--head-prefix")
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
    return model


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
