"""The `rnnstream` command line: one console script, one module per subcommand.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Only the chosen subcommand's module is imported, so `rnnstream --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from engine import __version__

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("engine.demo", "run the whole system on synthetic sensors and report what it caught"),
    "convert": ("engine.convert", "convert a saved PyTorch module or state dict into a model file"),
    "serve": ("engine.daemon", "run the streaming inference daemon"),
    "ctl": ("engine.ctl", "send a control command to a running daemon and print the reply"),
    "keygen": ("engine.keys", "write CURVE certificates for encrypted, authenticated sockets"),
    "produce": ("producers.cli", "send readings: synthetic sensors or a replay of CSV files"),
    "consume": ("consumers.cli", "tail predictions, record them to a file, or collect alerts"),
    "train": ("engine.train", "train a next-step forecaster on a CSV and write a model file"),
    "report": (
        "engine.report",
        "draw a stream's readings, expectation, anomaly score and alerts to a PNG",
    ),
    "nab": ("engine.nab", "run or score an anomaly detector on the Numenta Anomaly Benchmark"),
    "bench": ("engine.bench.steps", "measure step / step_many speed against PyTorch"),
}


# Commands that start with single-threaded BLAS and Numba: the daemon shares the machine with
# producers and subscribers (it raises BLAS threads for big batches only, engine/blas.py), and the
# benchmark measures one core. BLAS reads these variables once, when numpy loads it, so they are
# set before the command's module is imported.
SINGLE_THREADED = frozenset({"serve", "bench"})
ONE_THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except None / False ones whose help says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class UserError(Exception):
    """An error the user caused and can fix: printed as one line, exit status 2."""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnstream",
        description="Streaming real-time inference for recurrent neural networks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items())
        + "\n\nRun `rnnstream COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"rnnstream {__version__}")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # handles --help, --version and unknown commands
        top.print_help()
        return 2
    name = argv[0]
    if name in SINGLE_THREADED:
        for var in ONE_THREAD_VARS:
            os.environ.setdefault(var, "1")
        # OpenBLAS threads sleep at once after a product (2**4 cycles) instead of spinning
        # for ~0.1 s, so an idle BLAS thread leaves the core to producers and subscribers.
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"rnnstream {name}",
        description=(module.__doc__ or COMMANDS[name][1]).strip().splitlines()[0],
        formatter_class=HelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    if name != "serve":  # the daemon has its own orderly stop for these signals
        # `kill`, `timeout` or a service manager stops a tool with SIGTERM: end the run as Ctrl-C
        # does (a recording flushed, a producer's queue sent, the demo's daemon stopped) rather
        # than die where it stands.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # so that a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:
        # `rnnstream ... | head`: the reader has gone. Python flushes stdout once more at exit;
        # let that write to /dev/null rather than fail again (the Python docs' "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except UserError as exc:
        print(f"rnnstream {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run engine.cli's main, not this __main__ copy, so subcommands' UserError is the one caught.
    from engine.cli import main as _main

    sys.exit(_main())
