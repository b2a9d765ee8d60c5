"""Check a daemon's periodic snapshots while a load runs (`python bench/soak.py`).

A periodic snapshot (`--checkpoint-every`) is what a daemon killed with SIGKILL restarts from,
so the soak checks each one as it appears, not only the one written at shutdown.
`PeriodicSnapshotWatcher` looks at the state folder on every tick of the soak's loop, links a new
snapshot file aside (a hard link: the daemon's next write replaces the folder's entry, not this
file) and has `check_snapshot` check it in a process of its own, one at a time.

What the soak can know about a snapshot, and why it holds. The daemon steps readings, answers
`ctl stats` and copies the states for a snapshot on one thread, never one during another, and
stamps the header's "created" (`time.time()`) just after the copy; the soak stamps its records
with the same wall clock of the same machine (an NTP step of the clock during a run could fail a
check; a slew cannot):

- a steady stream's seq in the snapshot is at least the seq of the last prediction the
  subscriber had received by a record stamped before "created": the daemon published it after
  stepping its reading, so before the copy;
- it is at most the number of rounds the producer had announced (set before each round is sent)
  when read after the file appeared, which is after the copy;
- the number of streams is at least `before.streams - evictions` and at most
  `after.streams + evictions`, where `before` is a `ctl stats` answered before "created", `after`
  one asked after it, and `evictions` the growth of the daemon's eviction counter between them:
  in the soak streams arrive only with readings and leave only by eviction (no drop, no end).

Nothing narrower can be promised: the subscriber may lag the daemon and the producer lead it by
any amount, so any seq between the two bounds is correct.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.alerts import A_SEEN, ALERT_SLAB
from engine.files import write_npz_atomically
from engine.model import Model
from engine.stream import SEQ_SLAB, StreamEngine, read_snapshot

WATCH_TICK_S = 0.1  # the soak's loop looks at the state folder (and the subscriber) this often
COUNT_EVERY_S = 0.5  # and asks `ctl stats` for the table's size this often
# Records kept for a check. A snapshot's copy is taken a write's time before its file appears
# (under half a second at 150,000 streams), so older records are not needed; a check that finds
# none from before the copy says so (`Verdict.lower_known`).
HISTORY_S = 20.0
STEP_SEED = 7


@dataclass(frozen=True)
class TableCount:
    """The daemon's live streams and eviction counter in one `ctl stats` reply.

    The daemon read them at some moment between `asked` and `answered` (wall clock).
    """

    asked: float
    answered: float
    streams: int
    evictions: int


@dataclass(frozen=True)
class SteadyProgress:
    """Per steady stream, the seq of the last prediction the subscriber had received (0: none),
    read just before `stamp` (wall clock)."""

    stamp: float
    received: np.ndarray  # (steady,) int64


@dataclass(frozen=True)
class Evidence:
    """What the soak knew when it took a snapshot file: records from before and after it."""

    announced: int  # steady rounds the producer had announced, read after the file appeared
    progress: list[SteadyProgress]
    counts: list[TableCount]


@dataclass
class Verdict:
    """One periodic snapshot's check: what was found and what is wrong (nothing, when it passed)."""

    name: str
    problems: list[str] = field(default_factory=list)
    streams: int | None = None
    count_bounds: tuple[int, int | None] | None = None
    steady_present: int = 0
    lower_known: bool = False  # a subscriber record from before the copy existed
    above_received: tuple[int, int] | None = None  # min, max of seq - received before the copy
    below_sent: tuple[int, int] | None = None  # min, max of announced - seq
    file_age: float | None = None  # seconds from "created" to the watcher taking the file
    seconds: float = 0.0  # the check's own time

    @property
    def passed(self) -> bool:
        return not self.problems


def check_snapshot(
    path: Path,
    model: Model,
    engine_options: dict[str, Any],
    steady: Sequence[str],
    evidence: Evidence,
    *,
    expected_fingerprint: str,
    taken_at: float,
) -> Verdict:
    """Check the snapshot file at `path` against `evidence`: it loads with `StreamEngine.restore`
    (the daemon's loader at start), carries `expected_fingerprint`, holds a plausible number of
    streams and steady streams with plausible seqs, each whole, and the restored engine steps."""
    began = time.perf_counter()
    verdict = Verdict(path.name)
    try:
        header, _ = read_snapshot(path)
        engine = StreamEngine.restore(path, model, **engine_options)
    except (ValueError, OSError) as exc:
        verdict.problems.append(f"does not load: {str(exc).replace(str(path), path.name)}")
        verdict.seconds = time.perf_counter() - began
        return verdict
    created = float(header.get("created", 0.0))
    verdict.file_age = taken_at - created
    verdict.streams = len(engine)
    if header["model_fingerprint"] != expected_fingerprint:
        verdict.problems.append(
            f"model fingerprint {header['model_fingerprint'][:16]}, the daemon runs "
            f"{expected_fingerprint[:16]}"
        )
    low, high = stream_count_bounds(evidence.counts, created)
    limits = [h for h in (high, engine_options.get("max_streams")) if h is not None]
    verdict.count_bounds = (low, min(limits) if limits else None)
    if verdict.streams < low or (limits and verdict.streams > min(limits)):
        verdict.problems.append(f"{verdict.streams} streams, outside {verdict.count_bounds}")
    verdict.problems += _steady_problems(engine, steady, evidence, created, verdict)
    verdict.problems += _step_problems(engine, steady)
    verdict.seconds = time.perf_counter() - began
    return verdict


def stream_count_bounds(counts: Sequence[TableCount], created: float) -> tuple[int, int | None]:
    """Bounds on the live streams at a copy stamped `created`, from the latest count answered
    before it and the earliest asked after it: (0, None) without both."""
    before = [c for c in counts if c.answered < created]
    after = [c for c in counts if c.asked > created]
    if not before or not after:
        return 0, None
    evicted = after[0].evictions - before[-1].evictions
    return max(0, before[-1].streams - evicted), after[0].streams + evicted


def _seq_of(engine: StreamEngine, stream: str) -> int:
    return int(engine.state_of(stream)[SEQ_SLAB]) - 1  # the slab holds the last seq + 1


def _steady_problems(
    engine: StreamEngine,
    steady: Sequence[str],
    evidence: Evidence,
    created: float,
    verdict: Verdict,
) -> list[str]:
    """Each steady stream: in the snapshot once it had a prediction before the copy, its seq
    between that prediction's and what was announced, its alert state counted every reading."""
    earlier = [p for p in evidence.progress if p.stamp < created]
    received = earlier[-1].received if earlier else np.zeros(len(steady), np.int64)
    verdict.lower_known = bool(earlier)
    found: dict[str, list[str]] = {}  # kind of problem: the streams' details
    above, below = [], []
    for i, stream in enumerate(steady):
        floor = int(received[i])
        if stream not in engine:
            if floor > 0:
                found.setdefault("missing, predicted before the copy", []).append(
                    f"{stream} seq {floor}"
                )
            continue
        state = engine.state_of(stream)
        seq = int(state[SEQ_SLAB]) - 1
        counted = int(state[ALERT_SLAB][A_SEEN])
        if seq < floor:
            found.setdefault("behind the seq predicted before the copy", []).append(
                f"{stream} at {seq}, {floor} predicted"
            )
        if seq > evidence.announced:
            found.setdefault("ahead of the rounds sent", []).append(
                f"{stream} at {seq}, {evidence.announced} sent"
            )
        if counted != seq:  # the rows of one stream copied at different moments
            found.setdefault("with another count of readings than their seq", []).append(
                f"{stream} at {seq}, {counted} counted"
            )
        if floor > 0:
            above.append(seq - floor)
        below.append(evidence.announced - seq)
    verdict.steady_present = len(below)
    verdict.above_received = (min(above), max(above)) if above else None
    verdict.below_sent = (min(below), max(below)) if below else None
    return [
        f"{len(cases)} steady streams {kind} (e.g. {'; '.join(cases[:2])})"
        for kind, cases in found.items()
    ]


def _step_problems(engine: StreamEngine, steady: Sequence[str]) -> list[str]:
    """Step every steady stream of the restored engine once with its next seq: each must be
    stepped (none taken for a duplicate, no gap), give finite outputs and scores in [0, 1], and
    advance its seq."""
    present = [s for s in steady if s in engine]
    if not present:
        return []
    seqs = np.array([_seq_of(engine, s) for s in present], np.int64)
    values = np.random.default_rng(STEP_SEED).normal(0.0, 1.0, (len(present), 1))
    result = engine.process(present, values.astype(np.float32), seq=seqs + 1)
    problems = []
    if result.kept is not None or result.gaps:
        stepped = len(present) if result.kept is None else result.kept.size
        problems.append(f"restored engine stepped {stepped} of {len(present)}, {result.gaps} gaps")
    if not np.isfinite(result.outputs).all():
        problems.append("restored engine gave non-finite outputs")
    if result.scores is not None and not ((result.scores >= 0) & (result.scores <= 1)).all():
        problems.append("restored engine gave scores outside [0, 1]")
    after = np.array([_seq_of(engine, s) for s in present], np.int64)
    if not (after == seqs + 1).all():
        problems.append("restored engine did not advance the steady streams' seqs")
    return problems


# ------------------------------------------------------------------ the watcher and its checker
@dataclass(frozen=True)
class CheckerSetup:
    """What the checker process needs: the daemon's model and engine options, the steady ids."""

    model_path: str
    engine_options: dict[str, Any]
    steady: list[str]
    expected_fingerprint: str
    corrupt: str | None = None  # an experiment: damage each file before checking it


def _checker_main(conn: Any, setup: CheckerSetup) -> None:
    """Check the snapshot files sent as (path, evidence, taken_at) until sent None."""
    # The daemon under test comes first: restoring 150,000 streams takes a core for ~1 s.
    os.nice(10)
    model = Model.load(setup.model_path)
    StreamEngine(model)  # compile (or load) the kernels before saying ready
    conn.send("ready")
    while (job := conn.recv()) is not None:
        path, evidence, taken_at = job
        try:
            if setup.corrupt:
                corrupt_file(path, setup.corrupt)
            verdict = check_snapshot(
                path,
                model,
                setup.engine_options,
                setup.steady,
                evidence,
                expected_fingerprint=setup.expected_fingerprint,
                taken_at=taken_at,
            )
        except Exception as exc:  # a bug in the check fails that snapshot, loudly, not the soak
            traceback.print_exc()
            verdict = Verdict(path.name, [f"check crashed: {exc!r}"])
        path.unlink(missing_ok=True)
        conn.send(verdict)


CORRUPTIONS = ("bytes", "behind", "ahead", "half")


def corrupt_file(path: Path, how: str) -> None:
    """Damage a snapshot file, to see the check notice: "bytes" overwrites 64 bytes in its
    middle; the others rewrite it with every stream's seq 5 lower ("behind": readings lost) or
    higher ("ahead"), or with only the first half of its streams ("half").

    The damaged file is a new one (inode) in place of `path`: a hard link to the daemon's own
    snapshot must not damage that one.
    """
    if how == "bytes":
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = b"\xff" * 64
        path.unlink()
        path.write_bytes(bytes(data))
        return
    header, arrays = read_snapshot(path)
    seq = arrays[f"slab_{SEQ_SLAB}"]
    if how == "behind":
        arrays[f"slab_{SEQ_SLAB}"] = np.maximum(seq - 5, 0)
    elif how == "ahead":
        arrays[f"slab_{SEQ_SLAB}"] = seq + 5
    elif how == "half":
        keep = len(header["streams"]) // 2
        header["streams"] = header["streams"][:keep]
        arrays = {name: rows[:keep] for name, rows in arrays.items()}
    else:
        raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}, not {how!r}")
    encoded = np.frombuffer(json.dumps(header).encode(), np.uint8)
    path.unlink()
    write_npz_atomically(path, {**arrays, "header": encoded}, mode=0o600)


@dataclass
class WatchSummary:
    """The periodic snapshots of a run: how many the daemon wrote and what their checks found."""

    written: int
    skipped: int  # appeared while another was being checked
    verdicts: list[Verdict]

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]


class PeriodicSnapshotWatcher:
    """Take each new snapshot file the daemon writes to `state_path` and check it.

    `tick()` on every turn of the soak's loop (every `WATCH_TICK_S`): records the subscriber's
    progress, a table count every `COUNT_EVERY_S`, and when the file is new, links it into
    `aside` and sends it to the checker process with the records (none while a check runs: that
    file is skipped). `finish()` waits for the last check and returns the summary.
    """

    def __init__(
        self,
        state_path: Path,
        aside: Path,
        setup: CheckerSetup,
        count_table: Callable[[], dict],
        announced: Callable[[], int],
        received: Callable[[], np.ndarray],
    ) -> None:
        self.state_path = state_path
        self.aside = aside
        self.setup = setup
        self._stats = count_table
        self._announced = announced
        self._received = received
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._checker = ctx.Process(target=_checker_main, args=(child, setup), daemon=True)
        self._progress: deque[SteadyProgress] = deque(maxlen=int(HISTORY_S / WATCH_TICK_S))
        self._counts: deque[TableCount] = deque(maxlen=int(HISTORY_S / COUNT_EVERY_S))
        self._next_count = 0.0
        self._last_file: tuple[int, int, int] | None = None
        self._in_flight = False
        self._taken = 0
        self._skipped = 0
        self._verdicts: list[Verdict] = []
        self._snapshots_at_start = 0
        self._snapshots_now = 0

    def start(self, timeout: float = 120.0) -> PeriodicSnapshotWatcher:
        """Start the checker; the file in the folder now (written before the load) is not new."""
        self.aside.mkdir(parents=True, exist_ok=True)
        self._checker.start()
        if not self._conn.poll(timeout):
            raise RuntimeError("the snapshot checker did not start")
        self._conn.recv()
        self._snapshots_at_start = self._count()["snapshots"]
        self._last_file = _file_identity(self.state_path)
        return self

    def tick(self) -> Verdict | None:
        """Record, take a new file if there is one, collect a finished check (returned)."""
        received = self._received().copy()
        self._progress.append(SteadyProgress(time.time(), received))
        if time.monotonic() >= self._next_count:
            self._count()
        self._take_new_file()
        return self._collect(wait=0.0)

    def finish(self, timeout: float = 120.0) -> WatchSummary:
        """Wait for the check in flight, stop the checker, return what was found."""
        if self._in_flight:
            self._collect(wait=timeout)
        self._conn.send(None)
        self._checker.join(10)
        if self._checker.is_alive():
            self._checker.kill()
        written = self._snapshots_now - self._snapshots_at_start
        return WatchSummary(written, self._skipped, self._verdicts)

    def _count(self) -> dict:
        asked = time.time()
        stats = self._stats()
        self._counts.append(TableCount(asked, time.time(), stats["streams"], stats["evictions"]))
        self._next_count = time.monotonic() + COUNT_EVERY_S
        self._snapshots_now = stats["snapshots"]
        return stats

    def _take_new_file(self) -> None:
        identity = _file_identity(self.state_path)
        if identity is None or identity == self._last_file:
            return
        if self._in_flight:
            self._last_file = identity
            self._skipped += 1
            return
        self._taken += 1
        aside = self.aside / f"periodic-{self._taken:04d}.npz"
        # The name may point at a newer file by now: that one is linked, whole either way.
        os.link(self.state_path, aside)
        self._last_file = _file_identity(aside)
        taken_at = time.time()
        self._count()  # asked after the copy: the upper bound of its stream count
        evidence = Evidence(self._announced(), list(self._progress), list(self._counts))
        self._conn.send((aside, evidence, taken_at))
        self._in_flight = True

    def _collect(self, wait: float) -> Verdict | None:
        if not self._in_flight or not self._conn.poll(wait):
            return None
        verdict = self._conn.recv()
        self._in_flight = False
        self._verdicts.append(verdict)
        return verdict


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """Inode, modification time and size: a snapshot rewritten in place of another (a new inode,
    which may reuse a freed number) differs in one of them."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
