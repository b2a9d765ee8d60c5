"""Measure step / step_many speed on one core against PyTorch in the same process.

Headline model: LSTM, 1 layer, 8 inputs, hidden 64, linear head to 8 outputs, 10,000 live
streams. For each model this times, alternating rnnstream and PyTorch round by round so that load
from other processes hits both alike:

- `step`: one reading of a random stream (median microseconds per call); PyTorch runs
  `nn.LSTMCell` / `nn.GRUCell` + `nn.Linear` on one row, the state sliced from and written back to
  a per-stream tensor store.
- `step_many`: one call with `--batch` readings of distinct random streams (median readings/s);
  PyTorch runs the batched cell with `index_select` / `index_copy_` of the states and the head.
- the bare numpy sgemm of the batch, `(batch, I + H + 1) @ (I + H + 1, C)`: the compute floor.
- warm start: a subprocess doing `import engine` + `Model.load` + `StreamEngine(model)` with the
  kernels already in Numba's cache, timed from launch to exit.

One core: BLAS, OpenMP and Numba are limited to one thread. The environment variables only act
if set before numpy is imported, so `rnnstream bench` sets them (engine/cli.py) before importing
this module; imported otherwise, it limits OpenBLAS at run time with threadpoolctl;
the report states the BLAS thread count it saw. PyTorch gets `torch.set_num_threads(1)`.
PyTorch is optional: without it the torch columns read "n/a".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from engine.cli import ONE_THREAD_VARS, UserError

HEADLINE_CELL = "lstm"
HEADLINE_HIDDEN = 64
INPUTS = 8
OUTPUTS = 8
STEP_TARGET_US = 4.0
STEP_TARGET_RATIO = 8.0
MANY_TARGET_RATE = 2e6
MANY_TARGET_RATIO = 3.0
WARM_START_TARGET_S = 2.0
SCORING_TARGET = 0.25  # anomaly scoring may add at most this share to step_many
CELLS = ("lstm", "gru")


@dataclass(frozen=True)
class Plan:
    """How many timed repetitions to run."""

    step_rounds: int  # blocks of `step_block` single steps, each timed as a whole
    step_block: int
    many_rounds: int  # step_many calls
    turn: int  # timed repetitions per side before the other side's turn
    sgemm_rounds: int
    warm_starts: int


FULL = Plan(
    step_rounds=300, step_block=50, many_rounds=150, turn=5, sgemm_rounds=300, warm_starts=5
)
QUICK = Plan(step_rounds=40, step_block=25, many_rounds=20, turn=4, sgemm_rounds=40, warm_starts=2)


@dataclass
class CaseResult:
    """Medians for one model. Times in seconds; None where PyTorch was not run."""

    cell: str
    hidden: int
    streams: int
    batch: int
    step: float
    step_torch: float | None
    many: float  # seconds per step_many call
    many_torch: float | None
    sgemm: float
    max_abs_diff: float | None  # rnnstream vs PyTorch outputs and final states
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> bool:
        return self.cell == HEADLINE_CELL and self.hidden == HEADLINE_HIDDEN


# ---------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `rnnstream bench` options."""
    parser.add_argument(
        "--cells",
        default="lstm,gru",
        help="comma-separated cells to time (lstm, gru)",
    )
    parser.add_argument(
        "--hidden",
        default="64,16,32,128,256",
        help="comma-separated hidden sizes; every cell is timed at each",
    )
    parser.add_argument("--streams", type=int, default=10_000, help="live streams")
    parser.add_argument(
        "--batch", type=int, default=1024, help="readings (distinct streams) per step_many call"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument(
        "--no-warm-start", action="store_true", help="skip the warm start subprocess"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="also write the report here (.md)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a headline target is missed"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, readings, streams")
    suites = parser.add_subparsers(dest="suite", metavar="e2e")
    e2e_parser = suites.add_parser(
        "e2e",
        help="end-to-end throughput and latency against a real daemon (rnnstream bench e2e -h)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from engine.bench import e2e

    e2e.add_arguments(e2e_parser)


def run(args: argparse.Namespace) -> int:
    """Time every requested model, print the markdown report, optionally write it."""
    if args.suite == "e2e":
        from engine.bench import e2e

        return e2e.run(args)
    cells = _parse_list(args.cells, "--cells", str)
    for cell in cells:
        if cell not in CELLS:
            raise UserError(f"--cells: unknown cell {cell!r}; choose from {', '.join(CELLS)}")
    hidden_sizes = _parse_list(args.hidden, "--hidden", int)
    if any(h < 1 for h in hidden_sizes):
        raise UserError("--hidden: sizes must be positive integers, e.g. --hidden 64,128")
    if args.batch < 1:
        raise UserError("--batch must be at least 1")
    if args.streams < args.batch:
        raise UserError(
            f"--streams ({args.streams}) must be at least --batch ({args.batch}): a batch holds "
            "distinct streams"
        )
    plan = QUICK if args.quick else FULL
    torch = None if args.no_torch else _import_torch()
    command = "rnnstream bench " + shlex.join(sys.argv[2:] if _called_from_cli() else [])
    machine = machine_info(torch)
    load_before = os.getloadavg()
    results: list[CaseResult] = []
    with _one_thread():
        machine["blas threads seen"] = _blas_threads()
        for cell in cells:
            for hidden in hidden_sizes:
                print(f"timing {cell} H={hidden} ...", file=sys.stderr, flush=True)
                results.append(
                    measure_case(
                        cell, hidden, args.streams, args.batch, plan, torch, seed=args.seed
                    )
                )
    scoring = None
    if HEADLINE_CELL in cells and HEADLINE_HIDDEN in hidden_sizes:
        print("timing anomaly scoring overhead ...", file=sys.stderr, flush=True)
        with _one_thread():
            scoring = measure_scoring(args.streams, args.batch, plan, seed=args.seed)
    warm = None
    if not args.no_warm_start:
        print("timing warm start ...", file=sys.stderr, flush=True)
        warm = measure_warm_start(HEADLINE_CELL, HEADLINE_HIDDEN, plan.warm_starts)
    machine["load average (1 min) before / after"] = (
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"
    )
    report = render_report(
        results, warm, command=command, machine=machine, plan=plan, scoring=scoring
    )
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.strict and not all(_headline_targets_met(results, warm)):
        return 1
    return 0


def _parse_list(text: str, option: str, kind: type) -> list[Any]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{option}: give at least one value")
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise UserError(
            f"{option}: expected comma-separated {kind.__name__}s, got {text!r}"
        ) from None


def _called_from_cli() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "bench"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Limit BLAS / OpenMP pools to one thread for the block."""
    with threadpool_limits(limits=1):
        yield


def _blas_threads() -> str:
    pools = [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()]
    return ", ".join(pools) or "no pool found"


# ---------------------------------------------------------------------- measuring
def _elapsed_ns(fn: Callable[..., object], *args: Any) -> int:
    t0 = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - t0


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def measure_case(
    cell: str,
    hidden: int,
    streams: int,
    batch: int,
    plan: Plan,
    torch: Any = None,
    *,
    seed: int = 0,
) -> CaseResult:
    """Time step, step_many and the sgemm floor for one model; PyTorch too if `torch` is given."""
    from engine.model import Model
    from engine.stream import StreamEngine

    model = Model.random(cell, INPUTS, hidden, output_size=OUTPUTS, seed=seed)
    engine = StreamEngine(model, capacity=streams)
    baseline = TorchStreams(torch, model, streams) if torch is not None else None
    rng = np.random.default_rng(seed)
    ids = [f"sensor-{i:05d}" for i in range(streams)]

    context = torch.inference_mode() if torch is not None else contextlib.nullcontext()
    context.__enter__()
    # Admit every stream with one reading each, in the same order on both sides.
    first = rng.normal(size=(streams, INPUTS)).astype(np.float32)
    y = engine.step_many(ids, first)
    diffs = []
    if baseline is not None:
        baseline.admit(ids)
        diffs.append(np.abs(baseline.step_many(ids, first) - y).max())

    n_pairs = 4096
    pick = rng.integers(0, streams, n_pairs)
    step_ids = [ids[i] for i in pick]
    step_x = list(rng.normal(size=(n_pairs, INPUTS)).astype(np.float32))
    batches = []
    for _ in range(16):
        chosen = rng.choice(streams, batch, replace=False)
        batches.append(
            ([ids[i] for i in chosen], rng.normal(size=(batch, INPUTS)).astype(np.float32))
        )

    block = plan.step_block
    cursor = 0

    def step_block(step: Callable[[str, np.ndarray], object], start: int) -> None:
        for stream, x in zip(
            step_ids[start : start + block], step_x[start : start + block], strict=True
        ):
            step(stream, x)

    # Each side runs `plan.turn` timed repetitions in a row, after one untimed one, then the
    # other side takes its turn on the same inputs: turns spread load from other processes over
    # both sides, and the untimed repetition keeps the other library's cache footprint out of the
    # figures (a server runs one of them, not both).
    sides = [(engine, [], [])]
    if baseline is not None:
        sides.append((baseline, [], []))
    with _no_gc():
        for _ in range(-(-plan.step_rounds // plan.turn)):
            starts = []
            for _ in range(plan.turn + 1):
                starts.append(cursor)
                cursor = (cursor + block) % (n_pairs - block)
            for side, step_times, _ in sides:
                for k, start in enumerate(starts):
                    elapsed = _elapsed_ns(step_block, side.step, start) / block
                    if k:
                        step_times.append(elapsed)
        for turn in range(-(-plan.many_rounds // plan.turn)):
            chosen = [
                batches[(turn * (plan.turn + 1) + k) % len(batches)] for k in range(plan.turn + 1)
            ]
            for side, _, many_times in sides:
                for k, (ids_r, x_r) in enumerate(chosen):
                    elapsed = _elapsed_ns(side.step_many, ids_r, x_r)
                    if k:
                        many_times.append(elapsed)
    step_ns, many_ns = sides[0][1], sides[0][2]
    step_torch_ns = sides[1][1] if baseline is not None else []
    many_torch_ns = sides[1][2] if baseline is not None else []
    with _no_gc():
        # Same inputs in the same order on both sides: outputs and states must still agree.
        ids_r, x_r = batches[0]
        y = engine.step_many(ids_r, x_r)
        if baseline is not None:
            diffs.append(np.abs(baseline.step_many(ids_r, x_r) - y).max())
            diffs.append(baseline.state_difference(engine, ids[:: max(1, streams // 500)]))
        sgemm_ns = _time_sgemm(engine, batch, plan.sgemm_rounds, rng)
    context.__exit__(None, None, None)

    return CaseResult(
        cell=cell,
        hidden=hidden,
        streams=streams,
        batch=batch,
        step=statistics.median(step_ns) / 1e9,
        step_torch=statistics.median(step_torch_ns) / 1e9 if step_torch_ns else None,
        many=statistics.median(many_ns) / 1e9,
        many_torch=statistics.median(many_torch_ns) / 1e9 if many_torch_ns else None,
        sgemm=statistics.median(sgemm_ns) / 1e9,
        max_abs_diff=float(max(diffs)) if diffs else None,
    )


def measure_scoring(
    streams: int, batch: int, plan: Plan, *, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Return median process() seconds without and with anomaly scoring, per model.

    For the headline weights declared an 8-feature forecaster, and for the built-in default
    model with its "anomaly" section removed: the scoring engine also normalises each stream,
    scores the previous forecast's error and tracks alerts. Both engines of a pair first take
    every stream past the scoring probation, then take turns on the same batches.
    """
    import dataclasses

    from engine.anomaly import AnomalySpec
    from engine.default_model import load_default_model
    from engine.model import Model

    headline = Model.random(HEADLINE_CELL, INPUTS, HEADLINE_HIDDEN, output_size=OUTPUTS, seed=seed)
    spec = AnomalySpec(features=INPUTS).to_dict()
    default = load_default_model()
    pairs = {
        f"{HEADLINE_CELL} H={HEADLINE_HIDDEN}, {INPUTS} features": (
            headline,
            dataclasses.replace(headline, metadata={"anomaly": spec}),
        ),
        "built-in model (gru H=24, 1 feature)": (
            dataclasses.replace(default, metadata={}),
            default,
        ),
    }
    return {
        name: _time_pair(plain, scored, streams, batch, plan, seed)
        for name, (plain, scored) in pairs.items()
    }


def engines_past_probation(
    plain: Any, scored: Any, ids: list[str], rng: np.random.Generator
) -> list[Any]:
    """Return engines of the two models whose streams `ids` are all past the scoring probation.

    As in a daemon that has run a while: a stream still in probation skips the likelihood part
    of its score, so timing it would understate what scoring costs. Both engines take the same
    readings.
    """
    from engine.stream import StreamEngine

    engines = [StreamEngine(m, capacity=len(ids)) for m in (plain, scored)]
    for _ in range(engines[1].anomaly.probation + 1):
        readings = rng.normal(size=(len(ids), plain.input_size)).astype(np.float32)
        for engine in engines:
            engine.process(ids, readings)
    return engines


def _time_pair(
    plain: Any, scored: Any, streams: int, batch: int, plan: Plan, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    ids = [f"sensor-{i:05d}" for i in range(streams)]
    engines = engines_past_probation(plain, scored, ids, rng)
    inputs = plain.input_size
    batches = []
    for _ in range(16):
        chosen = rng.choice(streams, batch, replace=False)
        batches.append(
            ([ids[i] for i in chosen], rng.normal(size=(batch, inputs)).astype(np.float32))
        )
    times: list[list[int]] = [[], []]
    with _no_gc():
        for turn in range(-(-plan.many_rounds // plan.turn)):
            chosen = [
                batches[(turn * (plan.turn + 1) + k) % len(batches)] for k in range(plan.turn + 1)
            ]
            for engine, elapsed in zip(engines, times, strict=True):
                for k, (ids_r, x_r) in enumerate(chosen):
                    ns = _elapsed_ns(engine.process, ids_r, x_r)
                    if k:
                        elapsed.append(ns)
    return statistics.median(times[0]) / 1e9, statistics.median(times[1]) / 1e9


def _time_sgemm(engine: Any, batch: int, rounds: int, rng: np.random.Generator) -> list[int]:
    """Time the first layer's sgemm alone on a batch: the floor under step_many."""
    wt = engine._packed.layer_wt[0]
    z = rng.normal(size=(batch, wt.shape[0])).astype(np.float32)
    gates = np.empty((batch, wt.shape[1]), np.float32)
    return [_elapsed_ns(np.matmul, z, wt, gates) for _ in range(rounds)]


class TorchStreams:
    """The PyTorch baseline: a cell + head over a per-stream state store, like StreamEngine."""

    def __init__(self, torch: Any, model: Any, streams: int) -> None:
        nn = torch.nn
        hidden = model.hidden_size
        self.torch = torch
        self.lstm = model.cell == "lstm"
        cell_type = nn.LSTMCell if self.lstm else nn.GRUCell
        self.cell = cell_type(model.input_size, hidden)
        self.head = nn.Linear(hidden, model.output_size)
        layer = model.layers[0]
        with torch.no_grad():
            self.cell.weight_ih.copy_(torch.tensor(layer.weight_ih))
            self.cell.weight_hh.copy_(torch.tensor(layer.weight_hh))
            self.cell.bias_ih.copy_(torch.tensor(layer.bias_ih))
            self.cell.bias_hh.copy_(torch.tensor(layer.bias_hh))
            self.head.weight.copy_(torch.tensor(model.head_weight))
            self.head.bias.copy_(torch.tensor(model.head_bias))
        self.cell.eval()
        self.head.eval()
        self.h = torch.zeros(streams, hidden)
        self.c = torch.zeros(streams, hidden)
        self.slot_of: dict[str, int] = {}

    def admit(self, ids: list[str]) -> None:
        for stream in ids:
            self.slot_of[stream] = len(self.slot_of)

    def step(self, stream: str, x: np.ndarray) -> np.ndarray:
        slot = self.slot_of[stream]
        xt = self.torch.from_numpy(x).unsqueeze(0)
        if self.lstm:
            h, c = self.cell(xt, (self.h[slot : slot + 1], self.c[slot : slot + 1]))
            self.c[slot] = c[0]
        else:
            h = self.cell(xt, self.h[slot : slot + 1])
        self.h[slot] = h[0]
        return self.head(h)[0].numpy()

    def step_many(self, ids: list[str], X: np.ndarray) -> np.ndarray:
        torch = self.torch
        index = torch.tensor(list(map(self.slot_of.__getitem__, ids)), dtype=torch.int64)
        xt = torch.from_numpy(X)
        if self.lstm:
            h, c = self.cell(xt, (self.h.index_select(0, index), self.c.index_select(0, index)))
            self.c.index_copy_(0, index, c)
        else:
            h = self.cell(xt, self.h.index_select(0, index))
        self.h.index_copy_(0, index, h)
        return self.head(h).numpy()

    def state_difference(self, engine: Any, ids: list[str]) -> float:
        """Return the largest |h - h_torch| (and |c - c_torch|) over `ids`."""
        worst = 0.0
        for stream in ids:
            state = engine.state_of(stream)
            slot = self.slot_of[stream]
            worst = max(worst, float(np.abs(state["h"][0] - self.h[slot].numpy()).max()))
            if self.lstm:
                worst = max(worst, float(np.abs(state["c"][0] - self.c[slot].numpy()).max()))
        return worst


_WARM_START_CODE = """
import sys
import engine
from engine.model import Model
from engine.stream import StreamEngine
StreamEngine(Model.load(sys.argv[1]))
"""


def measure_warm_start(cell: str, hidden: int, runs: int) -> list[float]:
    """Return wall times (s) of `runs` fresh interpreters loading a model and building an engine.

    One unmeasured run first fills Numba's on-disk cache, so these are warm (cached) starts.
    """
    from engine.model import Model

    model = Model.random(cell, INPUTS, hidden, output_size=OUTPUTS, seed=0)
    env = dict(os.environ)
    for var in ONE_THREAD_VARS:
        env.setdefault(var, "1")
    times = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        model.save(path)
        command = [sys.executable, "-c", _WARM_START_CODE, str(path)]
        for i in range(runs + 1):
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"warm start subprocess failed:\n{done.stderr}")
            if i > 0:
                times.append(elapsed)
    return times


# ---------------------------------------------------------------------- reporting
def machine_info(torch: Any = None) -> dict[str, str]:
    """Describe the CPU and the library versions the figures depend on."""
    import llvmlite
    import numba

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores ({usable} usable); timings use one",
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": f"{numba.__version__} (llvmlite {llvmlite.__version__})",
        "torch": torch.__version__ if torch is not None else "not installed or skipped",
        "blas": _blas_description(),
    }
    return info


def _blas_description() -> str:
    pools = [
        f"{p['internal_api']} {p.get('version')} ({p.get('architecture')})"
        for p in threadpool_info()
        if p.get("user_api") == "blas"
    ]
    return ", ".join(pools) or "unknown"


def _ratio(slow: float | None, fast: float) -> float | None:
    return None if slow is None else slow / fast


def _fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1f}x"


def _verdict(ok_absolute: bool, ratio: float | None, min_ratio: float) -> str:
    if ratio is None:
        return "yes (ratio not checked: no torch)" if ok_absolute else "**no**"
    return "yes" if ok_absolute and ratio >= min_ratio else "**no**"


def _headline_targets_met(results: list[CaseResult], warm: list[float] | None) -> list[bool]:
    met = []
    for res in results:
        if not res.headline:
            continue
        step_ratio = _ratio(res.step_torch, res.step)
        many_ratio = _ratio(res.many_torch, res.many)
        rate = res.batch / res.many
        met.append(res.step <= STEP_TARGET_US * 1e-6 and (step_ratio or 1e9) >= STEP_TARGET_RATIO)
        met.append(rate >= MANY_TARGET_RATE and (many_ratio or 1e9) >= MANY_TARGET_RATIO)
    if warm:
        met.append(statistics.median(warm) < WARM_START_TARGET_S)
    return met


def render_report(
    results: list[CaseResult],
    warm: list[float] | None,
    *,
    command: str,
    machine: dict[str, str],
    plan: Plan,
    scoring: dict[str, tuple[float, float]] | None = None,
) -> str:
    """Return the markdown report: context, the headline targets, then every model's medians."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = ["# rnnstream bench", "", f"- command: `{command}`", f"- date: {now}"]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += [
        f"- repetitions: step {plan.step_rounds} blocks of {plan.step_block} calls (median of "
        f"per-call block means); step_many {plan.many_rounds} calls; sgemm {plan.sgemm_rounds}; "
        f"rnnstream and torch take turns of {plan.turn} timed repetitions, each turn after one "
        "untimed repetition",
        "",
    ]
    headline = [res for res in results if res.headline]
    if headline or warm:
        lines += [
            f"## Targets ({HEADLINE_CELL}, I={INPUTS}, H={HEADLINE_HIDDEN}, O={OUTPUTS}, one core)",
            "",
            "| measure | rnnstream | torch | speed-up | target | met |",
            "|---|---|---|---|---|---|",
        ]
    for res in headline:
        step_ratio = _ratio(res.step_torch, res.step)
        many_ratio = _ratio(res.many_torch, res.many)
        rate = res.batch / res.many
        torch_step = "n/a" if res.step_torch is None else f"{res.step_torch * 1e6:.2f} us"
        torch_rate = (
            "n/a" if res.many_torch is None else f"{res.batch / res.many_torch / 1e6:.2f} M/s"
        )
        step_met = _verdict(res.step <= STEP_TARGET_US * 1e-6, step_ratio, STEP_TARGET_RATIO)
        many_met = _verdict(rate >= MANY_TARGET_RATE, many_ratio, MANY_TARGET_RATIO)
        lines.append(
            f"| step, median per call ({res.streams} streams) | {res.step * 1e6:.2f} us | "
            f"{torch_step} | {_fmt_ratio(step_ratio)} | <= {STEP_TARGET_US:g} us and >= "
            f"{STEP_TARGET_RATIO:g}x | {step_met} |"
        )
        lines.append(
            f"| step_many({res.batch}), median readings/s | {rate / 1e6:.2f} M/s | {torch_rate} | "
            f"{_fmt_ratio(many_ratio)} | >= {MANY_TARGET_RATE / 1e6:g} M/s and >= "
            f"{MANY_TARGET_RATIO:g}x | {many_met} |"
        )
    if warm:
        median = statistics.median(warm)
        runs = ", ".join(f"{t:.2f}" for t in warm)
        met = "yes" if median < WARM_START_TARGET_S else "**no**"
        lines.append(
            f"| warm start: new interpreter + import + Model.load + StreamEngine, median of "
            f"{len(warm)} ({runs} s) | {median:.2f} s | | | < {WARM_START_TARGET_S:g} s | {met} |"
        )
    for name, (plain, scored) in (scoring or {}).items():
        added = scored / plain - 1
        met = "yes" if added <= SCORING_TARGET else "**no**"
        lines.append(
            f"| anomaly scoring added to step_many, streams past probation, {name}: "
            f"{plain * 1e6:.0f} -> {scored * 1e6:.0f} us | +{added:.0%} | | | <= "
            f"+{SCORING_TARGET:.0%} | {met} |"
        )
    if results:
        lines += [
            "",
            "## All models",
            "",
            "Medians. Speed-up = torch time / rnnstream time in the same run. sgemm floor = the "
            "bare numpy `(batch, I+H+1) @ (I+H+1, C)` of one step_many call, as readings/s. "
            "max |diff| = largest difference between rnnstream and torch outputs and final "
            "states.",
            "",
            "| cell | H | step | torch step | speed-up | step_many | torch step_many | speed-up "
            "| sgemm floor | max \\|diff\\| |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for res in results:
        torch_step = "n/a" if res.step_torch is None else f"{res.step_torch * 1e6:.2f} us"
        torch_rate = (
            "n/a" if res.many_torch is None else f"{res.batch / res.many_torch / 1e6:.2f} M/s"
        )
        diff = "n/a" if res.max_abs_diff is None else f"{res.max_abs_diff:.1e}"
        lines.append(
            f"| {res.cell} | {res.hidden} | {res.step * 1e6:.2f} us | {torch_step} | "
            f"{_fmt_ratio(_ratio(res.step_torch, res.step))} | "
            f"{res.batch / res.many / 1e6:.2f} M/s ({res.many * 1e6:.0f} us) | {torch_rate} | "
            f"{_fmt_ratio(_ratio(res.many_torch, res.many))} | "
            f"{res.batch / res.sgemm / 1e6:.2f} M/s ({res.sgemm * 1e6:.0f} us) | {diff} |"
        )
    return "\n".join(lines) + "\n"
