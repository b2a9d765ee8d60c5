"""StreamEngine: one recurrent state per stream, advanced one time step per reading."""

from __future__ import annotations

import json
import operator
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.alerts import (
    A_LENGTH,
    A_OPEN,
    A_OPENED_TS,
    A_PEAK,
    A_THRESHOLD,
    ALERT_SLAB,
    SCORING_SLAB,
    AlertPolicy,
    ClosedAlert,
    CloseReason,
    check_open_level,
    count_open,
)
from engine.anomaly import AnomalyScorer, AnomalySpec, norm_to_planar
from engine.blas import BlasThreads
from engine.files import write_npz_atomically
from engine.kernels import cells
from engine.kernels.sequence import NO_SEQ, check_sequence
from engine.memory import release_freed_memory
from engine.model import Model
from engine.packed import PackedModel
from engine.state import StateTable, check_stream_id, row_bytes

SNAPSHOT_FORMAT = "rnnstream-snapshot"
# 2: the scoring rows' normaliser statistics are kept a statistic for all features at a time
# (engine.anomaly NORM), not a feature at a time as in 1; files of version 1 are still restored.
SNAPSHOT_VERSION = 2
_SWEEP_INTERVAL = 1.0  # seconds between idle-eviction sweeps
SEQ_SLAB = "seq"  # each stream's last sequence number + 1 (0: none), see kernels.sequence


@dataclass
class StepResult:
    """Everything one `process` call produced, row i for reading i.

    `scores`, `expected`, `events` and the alert details are None for a model that does not
    score (one without an "anomaly" section in its metadata).
    """

    outputs: np.ndarray  # (n, n_outputs) float32: the model's output (a forecaster: next reading)
    scores: np.ndarray | None = None  # (n,) float64 anomaly score in [0, 1]
    surprise: np.ndarray | None = None  # (n,) float64: forecast error / the stream's typical one
    expected: np.ndarray | None = None  # (n, n_inputs) float32: forecast made for this reading
    events: np.ndarray | None = None  # (n,) int8: alerts.EVENT_NONE / EVENT_OPEN / EVENT_CLOSE
    peaks: np.ndarray | None = None  # (n,) float64: for events, the incident's peak score
    lengths: np.ndarray | None = None  # (n,) float64: for events, its length in readings
    opened: np.ndarray | None = None  # (n,) float64: for events, ts of its opening reading
    # With `seq`: the rows of the call that were stepped (result row i is reading kept[i]),
    # None when all were; and the number of forward jumps in the streams' seqs.
    kept: np.ndarray | None = None
    gaps: int = 0

    @classmethod
    def empty(cls, n: int, n_outputs: int, scoring: bool) -> StepResult:
        outputs = np.empty((n, n_outputs), np.float32)
        if not scoring:
            return cls(outputs)
        return cls(
            outputs,
            np.empty(n, np.float64),
            np.empty(n, np.float64),
            np.empty((n, n_outputs), np.float32),
            np.zeros(n, np.int8),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
        )

    def put(self, rows: np.ndarray, part: StepResult) -> None:
        """Copy `part`'s rows into rows `rows` of this result."""
        for name in _ROW_FIELDS:
            mine = getattr(self, name)
            if mine is not None:
                mine[rows] = getattr(part, name)


_ROW_FIELDS = ("outputs", "scores", "surprise", "expected", "events", "peaks", "lengths", "opened")

# Ids (or slots) per call into a C loop that holds the GIL while a snapshot is written on a
# thread: json.dumps of 300,000 ids in one call held the daemon's loop up for 30-45 ms.
_WRITER_CHUNK = 4096


@dataclass(frozen=True)
class SnapshotCopy:
    """Every stream's state at one moment, as `StreamEngine.snapshot_copy` takes it.

    It is taken on the engine's thread, so it is cheap by design: each slab's rows up to the
    highest live slot and their last-used times, copied whole at memcpy speed, and the streams
    with their slots in admission order. `arrays` puts the rows in the file's order, on the
    thread that writes the file.
    """

    header: dict[str, Any]  # the snapshot's header; "streams": ids in admission order
    slots: list[int]  # the slot of header["streams"][i] when the copy was taken
    rows: dict[str, np.ndarray]  # each slab's rows [0, used)
    last_used: np.ndarray  # (used,) float64: the slots' last-used times
    now: float  # the engine's clock when the copy was taken

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the snapshot's arrays: per slab its streams' rows, then their idle seconds."""
        slots = _int64_array(self.slots)
        arrays = {f"slab_{name}": rows[slots] for name, rows in self.rows.items()}
        arrays["idle_seconds"] = np.maximum(self.now - self.last_used[slots], 0.0)
        return arrays


class NeedsReset(ValueError):
    """`swap_model` refused a model without `reset`: `reason` says why, `effect` what reset does.

    The message names the keyword (`reset=True`); the daemon names the ctl option instead.
    """

    def __init__(self, reason: str, effect: str) -> None:
        super().__init__(f"{reason}: pass reset=True to {effect}")
        self.reason = reason
        self.effect = effect


class StreamEngine:
    """Keep one hidden state per stream and step it with a Model, one reading at a time.

    `step(stream, x)` advances one stream; `step_many(streams, X)` advances many in one call and
    returns what a loop of `step` over the rows would, to float32 rounding (its matrix products
    add in another order). A stream's state starts at zeros with
    its first reading. Memory per stream: `bytes_per_stream` (4 bytes * layers * hidden, twice for
    LSTM, plus 16; more for a scoring model) in the slabs, plus the id and about 100 bytes of dict
    entry.

    A model whose metadata has an "anomaly" section (the built-in default model) is a next-step
    forecaster on per-stream normalised readings: the engine normalises each stream online, turns
    the previous forecast's error into an anomaly score, tracks alerts with `alerts`, and returns
    forecasts in the stream's own units. `process(streams, X, ts)` returns all of that as a
    `StepResult`; `step` and `step_many` return just the outputs.

    A stream whose state is discarded while its alert is open (dropped, reset, evicted, or a
    reload that does not keep alert states) has that incident closed: `take_closed_alerts`
    returns them. They are kept until taken, one small record each.
    """

    def __init__(
        self,
        model: Model,
        *,
        max_streams: int | None = None,
        idle_timeout: float | None = None,
        capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        alerts: AlertPolicy | None = None,
        blas_threads: int = 1,
    ) -> None:
        self.model = model
        # More than one: big matrix products of step_many / process use that many BLAS threads
        # and small ones one (engine/blas.py); one leaves the BLAS pools alone.
        self.blas_threads = blas_threads
        self._blas = BlasThreads(blas_threads) if blas_threads > 1 else None
        self._packed = PackedModel(model)
        p = self._packed
        self.anomaly = _anomaly_spec(model)
        self.alerts = alerts or AlertPolicy()
        self._table = StateTable(
            _slab_specs(model, self.anomaly),
            capacity=capacity,
            max_streams=max_streams,
            idle_timeout=idle_timeout,
            clock=clock,
            on_evict=self._close_evicted,
        )
        self._closed_alerts: list[ClosedAlert] = []
        self._clock = clock
        self._next_sweep = clock() + _SWEEP_INTERVAL
        self._x_shape = (p.inputs,)
        self._work = np.zeros(p.work_size, np.float32)
        self._out = np.zeros(p.outputs, np.float32)
        self._seen = np.zeros(self._table.capacity, np.int32)
        self._shrinks_followed = 0
        self._batch_rows = 0
        self._ensure_batch(64)
        self.snapshot_extra: dict[str, Any] = {}
        if self.anomaly is not None:
            self._scorer = AnomalyScorer(self.anomaly, slabs=self._table.slabs)
        self._alert_policy: AlertPolicy | None = None  # the one _alert_params were made from
        self._alert_params = np.zeros(6)
        self._warm_up()

    @property
    def scoring(self) -> bool:
        """Whether this engine produces anomaly scores and alerts."""
        return self.anomaly is not None

    # ----------------------------------------------------------------- stepping
    def step(self, stream: str, x: Any) -> np.ndarray:
        """Advance `stream` by one reading x (n_inputs,); return the output (n_outputs,)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != self._x_shape:
            raise ValueError(f"reading has shape {x.shape}, the model expects {self._x_shape}")
        if self.anomaly is not None:
            return self.process([stream], x.reshape(1, -1)).outputs[0]
        table = self._table
        slot = table.slot_of.get(stream) if isinstance(stream, str) else None
        now = self._clock()
        new = slot is None
        if new:
            check_stream_id(stream)
            _check_finite_row(x)
            slot = table.admit(stream)
        h = table.slabs["h"]
        c = table.slabs.get("c", h)
        p = self._packed
        stale = table.idle_timeout is not None and now - table.last_used[slot] > table.idle_timeout
        if stale and np.isfinite(x).all():
            table.expire(slot)
        if cells.step_one(p.params, p.layout, x, h, c, slot, self._out, self._work):
            _check_finite_row(x)  # raises, naming the bad value
        table.last_used[slot] = now
        if now >= self._next_sweep:
            self._sweep(now)
        return self._out.copy()

    def step_many(self, streams: Sequence[str], X: Any) -> np.ndarray:
        """Advance each streams[i] by the reading X[i]; return outputs (n, n_outputs).

        Rows are applied in order: a stream listed several times advances once per row, so the
        result equals calling `step` for each row in turn. Bad input raises ValueError before any
        state changes.
        """
        return self.process(streams, X).outputs

    def process(
        self,
        streams: Sequence[str],
        X: Any,
        ts: Any = None,
        seq: Any = None,
        *,
        ids: np.ndarray | None = None,
    ) -> StepResult:
        """Advance each streams[i] by X[i] like `step_many`; return outputs, scores and alerts.

        ts (n,) are the readings' timestamps (epoch seconds, NaN or None if unknown); they only
        date alerts. seq (n,) are per-stream sequence numbers (`NO_SEQ` where a reading has
        none): a reading whose seq is not after its stream's last is a re-sent duplicate and is
        not stepped (`kernels.sequence`); the result then covers only `result.kept`. ids, when
        given, are the same streams' UTF-8 ids each followed by a 0 byte (as the jitted decoder
        gives them): known streams are then found without their strings.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        n = len(streams)
        if X.ndim != 2 or X.shape != (n, self._packed.inputs):
            raise ValueError(
                f"readings have shape {X.shape}, expected ({n}, {self._packed.inputs}) "
                f"for {n} streams"
            )
        if n == 0:
            return StepResult.empty(0, self._packed.outputs, self.anomaly is not None)
        # checked before any lookup: a stream admitted or a seq taken in, then an error, would
        # leave state behind, and a re-sent reading would then be dropped as a duplicate
        if seq is not None:
            seq = _one_per_reading(seq, np.int64, n, "seq", "whole numbers")
        if ts is not None:
            ts = _one_per_reading(ts, np.float64, n, "ts", "numbers")
        if not cells.all_finite(X):
            row, col = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"reading {row} ({streams[row]!r}) holds {X[row, col]} at input {col}")
        table = self._table
        slots = None if ids is None else table.index.find(ids, n)
        if slots is None:
            slots = self._slots_admitting(streams)
        now = self._clock()
        if table.idle_timeout is not None:
            stale = slots[table.last_used[slots] < now - table.idle_timeout]
            for slot in np.unique(stale).tolist():  # a stream listed twice expires once
                table.expire(slot)
        kept = None
        gaps = 0
        if seq is not None:
            keep = np.empty(n, np.bool_)
            duplicates, gaps = check_sequence(slots, seq, table.slabs[SEQ_SLAB], keep)
            if duplicates:
                kept = np.flatnonzero(keep)
                n = kept.size
                slots, X = slots[kept], X[kept]
                if ts is not None:
                    ts = ts[kept]
        if self._seen.shape[0] < table.capacity:
            self._seen = np.zeros(table.capacity, np.int32)
        self._ensure_batch(n)
        ranks = self._ranks[:n]
        waves = cells.occurrence_ranks(slots, self._seen, ranks)
        scoring = self.anomaly is not None
        if scoring:
            stamps = np.full(n, np.nan) if ts is None else ts
        result = StepResult.empty(n, self._packed.outputs, scoring)
        result.kept, result.gaps = kept, gaps
        if waves == 1:
            self._advance_wave(slots, X, stamps if scoring else None, result)
        else:
            for wave in range(waves):
                rows = np.flatnonzero(ranks == wave)
                part = StepResult.empty(rows.size, self._packed.outputs, scoring)
                self._advance_wave(slots[rows], X[rows], stamps[rows] if scoring else None, part)
                result.put(rows, part)
        table.last_used[slots] = now
        if now >= self._next_sweep:
            self._sweep(now)
        return result

    def _advance_wave(
        self, slots: np.ndarray, X: np.ndarray, ts: np.ndarray | None, result: StepResult
    ) -> None:
        """Advance rows with distinct slots; with scoring, normalise, score and track alerts."""
        if self.anomaly is None:
            self._advance(slots, X, result.outputs)
            return
        z = self._scorer.normalise(slots, X)
        normalised = self._normalised_out[: slots.shape[0]]
        self._advance(slots, z, normalised)
        policy = self.alerts
        if policy is not self._alert_policy:
            self._alert_policy = policy
            self._alert_params = policy.kernel_params()
        self._scorer.finish(slots, z, normalised, ts, self._alert_params, result)

    def _advance(self, slots: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
        """One step for rows whose slots are all distinct: sgemm per layer, jitted gates."""
        p = self._packed
        n = slots.shape[0]
        h = self._table.slabs["h"]
        c = self._table.slabs.get("c", h)
        z = self._layer_inputs[0][:n]
        cells.gather_first_layer(X, slots, h, p.input_mean, p.input_inv_std, z)
        gates = self._gates[:n]
        blas = self._blas
        if blas is not None:
            blas.use_for(gates.size)
        for k in range(p.layers):
            np.matmul(z, p.layer_wt[k], out=gates)
            dest = self._layer_inputs[k + 1][:n] if k + 1 < p.layers else self._top[:n]
            cells.apply_gates_batch(p.cell_code, gates, slots, h, c, k, dest)
            z = dest
        if p.has_head:
            if blas is not None:
                blas.use_for(out.size)
            np.matmul(self._top[:n], p.head, out=out)
        elif p.output_mean is not None:
            np.multiply(self._top[:n, : p.hidden], p.output_std, out=out)
            out += p.output_mean
        else:
            out[:] = self._top[:n, : p.hidden]

    def _slots_admitting(self, streams: Sequence[str]) -> np.ndarray:
        """The streams' slots, admitting the new ones."""
        table = self._table
        n = len(streams)
        try:
            # one C-level call for all lookups: ~1.5x faster than list(map(dict.get, ...))
            found = operator.itemgetter(*streams)(table.slot_of)
        except (KeyError, TypeError):  # a new stream, or an unhashable id
            try:
                found = list(map(table.slot_of.get, streams))
            except TypeError:
                found = [None] * n
            found = self._admit_batch(streams, found)
        if n > 1:
            return np.fromiter(found, np.int64, n)  # ~20% faster than np.array: no type discovery
        return np.array(found, np.int64, ndmin=1)  # itemgetter of one key: a bare int

    def _admit_batch(self, streams: Sequence[str], found: list[int | None]) -> list[int]:
        """Admit the batch's new streams, never evicting one that this batch uses."""
        table = self._table
        new = [s for s, slot in zip(streams, found, strict=True) if slot is None]
        for stream in new:
            check_stream_id(stream)
        distinct_new = list(dict.fromkeys(new))
        if table.max_streams is not None:
            distinct = len(set(streams))
            if distinct > table.max_streams:
                raise ValueError(
                    f"batch holds {distinct} distinct streams, more than max_streams="
                    f"{table.max_streams}"
                )
        known = np.array([s for s in found if s is not None], dtype=np.int64)
        saved = table.last_used[known].copy()
        table.last_used[known] = np.inf  # shields this batch's streams from LRU eviction
        try:
            for stream in distinct_new:
                table.admit(stream, now=np.inf)
        finally:
            table.last_used[known] = saved
        return [table.slot_of[s] for s in streams]

    # ------------------------------------------------------------ stream admin
    def reset(self, stream: str) -> bool:
        """Zero a stream's state (not its own alert level), closing its open alert; return
        whether the stream existed."""
        slot = self._table.slot_of.get(stream)
        if slot is None:
            return False
        self._close_open_alerts(np.array([slot], np.int64), CloseReason.RESET)
        alerts = self._table.slabs.get(ALERT_SLAB)
        level = None if alerts is None else alerts[slot, A_THRESHOLD]
        self._table.zero(slot)
        if alerts is not None:  # an operator's level for the stream is a setting, not its state
            alerts[slot, A_THRESHOLD] = level
        return True

    def drop(self, stream: str, reason: CloseReason = CloseReason.DROPPED) -> bool:
        """Forget a stream and free its slot, closing its open alert for `reason` (DROPPED or
        END); return whether it existed."""
        slot = self._table.slot_of.get(stream)
        if slot is None:
            return False
        self._close_open_alerts(np.array([slot], np.int64), reason)
        self._table.release(stream)
        self._follow_table()
        return True

    def take_closed_alerts(self) -> list[ClosedAlert]:
        """Return the incidents closed since the last call because their streams' state was
        discarded, in the order they closed, and forget them."""
        closed, self._closed_alerts = self._closed_alerts, []
        return closed

    def open_alerts(self) -> int:
        """Return how many streams have an open alert now (0 for a model that does not score).

        Safe from another thread while the engine steps (a metrics scrape): the count runs
        with the GIL let go over whichever slab the table holds as it starts.
        """
        if self.anomaly is None:
            return 0
        return count_open(self._table.slabs[ALERT_SLAB])

    def set_threshold(self, stream: str, level: float | None) -> bool:
        """Give one stream its own alert open level (None: back to the policy's).

        Return whether the stream exists; the level lives with the stream's state, so it is
        snapshotted with it, kept through a `reset` and forgotten when the stream is dropped or
        evicted.
        """
        if self.anomaly is None:
            raise ValueError("this model does not score anomalies, so it has no alerts")
        if level is not None:
            check_open_level(level)
        slot = self._table.slot_of.get(stream)
        if slot is None:
            return False
        self._table.slabs[ALERT_SLAB][slot, A_THRESHOLD] = 0.0 if level is None else level
        return True

    def evict_idle(self) -> list[str]:
        """Drop streams idle for longer than idle_timeout now; return their ids."""
        gone = self._table.evict_idle()
        self._follow_table()
        return gone

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, stream: object) -> bool:
        return stream in self._table.slot_of

    def streams(self) -> list[str]:
        """Return the live stream ids."""
        return list(self._table.slot_of)

    def state_of(self, stream: str) -> dict[str, np.ndarray]:
        """Return copies of a stream's state arrays: "h", and "c" for LSTM, each (layers, H);
        "seq", its last sequence number + 1 (0: none); a scoring model's statistics."""
        slot = self._table.slot_of[stream]
        return {name: slab[slot].copy() for name, slab in self._table.slabs.items()}

    @property
    def evictions(self) -> int:
        return self._table.evictions

    @property
    def bytes_per_stream(self) -> int:
        return self._table.bytes_per_stream()

    def stats(self) -> dict[str, Any]:
        """Return counters and sizes for monitoring."""
        t = self._table
        return {
            "streams": len(t),
            "capacity": t.capacity,
            "evictions": t.evictions,
            "evicted_idle": t.evicted_idle,
            "evicted_lru": t.evicted_lru,
            "evicted_reload": t.evicted_reload,
            "bytes_per_stream": t.bytes_per_stream(),
            "open_alerts": self.open_alerts(),
            "model_fingerprint": self.model.fingerprint,
        }

    def swap_model(self, model: Model, *, reset: bool = False) -> None:
        """Switch to another model, keeping every stream's state when the state shapes match.

        With different state shapes (cell, layers or hidden size) or inputs this refuses
        (`NeedsReset`, a ValueError) unless `reset`, in which case every stream is forgotten
        (counted in `evicted_reload`) and restarts from zeros with its next reading. Open alerts
        are kept with the states when the new model scores alike (same scoring state shape),
        else closed for RELOAD.
        """
        same_shape = (model.cell, model.num_layers, model.hidden_size) == (
            self.model.cell,
            self.model.num_layers,
            self.model.hidden_size,
        )
        if model.input_size != self.model.input_size and not reset:
            raise NeedsReset(
                f"new model takes {model.input_size} inputs, the current one "
                f"{self.model.input_size}: producers would break",
                "force it",
            )
        if not same_shape and not reset:
            raise NeedsReset(
                "new model's state shape differs (cell, layers or hidden size); "
                "states cannot be kept",
                "restart every stream from zeros",
            )
        old = self._table
        replacement = StreamEngine(
            model,
            max_streams=old.max_streams,
            idle_timeout=old.idle_timeout,
            capacity=old.initial_capacity,  # so that a past burst's slabs may still shrink
            clock=self._clock,
            alerts=self.alerts,
            blas_threads=self.blas_threads,
        )
        new = replacement._table
        keeps_alerts = (
            same_shape and not reset and old.specs.get(ALERT_SLAB) == new.specs.get(ALERT_SLAB)
        )
        if not keeps_alerts:
            self._close_open_alerts(old.live()[1], CloseReason.RELOAD)
        # The replacement's table reports evictions to the engine that takes its place
        new.on_evict = self._close_evicted
        replacement._closed_alerts = self._closed_alerts
        if same_shape and not reset:
            # Slabs the two models share (recurrent state, and anomaly statistics of the same
            # shape) carry over; the rest start from zeros.
            ids, slots = old.live()
            shared = {
                name: old.slabs[name][slots]
                for name, spec in new.specs.items()
                if old.specs.get(name) == spec
            }
            new.load(ids, shared)
            for stream, slot in zip(ids, slots.tolist(), strict=True):
                new.last_used[new.slot_of[stream]] = old.last_used[slot]
        # Streams a reset forgot are evictions too (cause "reload"): every stream that leaves
        # is counted under some cause, as an operator adding them up expects.
        forgotten = len(old) - len(new)
        new.evictions = old.evictions + forgotten
        new.evicted_idle, new.evicted_lru = old.evicted_idle, old.evicted_lru
        new.evicted_reload = old.evicted_reload + forgotten
        replacement.snapshot_extra = self.snapshot_extra
        self.__dict__.update(replacement.__dict__)

    # --------------------------------------------------------------- snapshots
    def snapshot(self, path: str | os.PathLike[str]) -> int:
        """Write every stream's state to `path` atomically; return the number of streams."""
        return write_snapshot(path, self.snapshot_copy())

    def snapshot_memory(self) -> int:
        """Bytes of memory for a `snapshot_copy` now, with room for 1/8 more streams (and 64)
        admitted before it is taken."""
        used = self._table.used()
        return self._table.copy_bytes(used + used // 8 + 64)

    def snapshot_copy(self, memory: np.ndarray | None = None) -> SnapshotCopy:
        """Copy every stream's state as it is now, for `write_snapshot`, which may write it
        while the engine goes on stepping (the daemon does, so readings wait for this copy
        only, not for the file).

        Only copies here, into `memory` (uint8, `state.faulted_in(snapshot_memory())` made
        on another thread) when it is big enough: gathering the streams' rows in admission
        order is left to `SnapshotCopy.arrays`, on the writer's thread.
        """
        table = self._table
        rows, last_used = table.copy_used(memory)
        header = {
            "format": SNAPSHOT_FORMAT,
            "format_version": SNAPSHOT_VERSION,
            "model_fingerprint": self.model.fingerprint,
            "scoring_fingerprint": self.model.scoring_fingerprint,
            "streams": list(table.slot_of),
            "created": time.time(),
            "extra": json.loads(json.dumps(self.snapshot_extra)),
        }
        return SnapshotCopy(header, list(table.slot_of.values()), rows, last_used, self._clock())

    @classmethod
    def restore(
        cls, path: str | os.PathLike[str], model: Model, **engine_options: Any
    ) -> StreamEngine:
        """Build an engine from a snapshot made with the same model weights and anomaly settings.

        Reads the snapshots of this rnnstream and of earlier ones (format version 1 and on).
        Raises ValueError for a snapshot of another model, or a truncated or corrupt file, and
        OSError for a file it cannot open. Of a
        snapshot with more streams than `max_streams`, the least recently used beyond it are
        evicted (`evicted_lru`).
        """
        path = Path(path)
        header, arrays = read_snapshot(path)
        if header["model_fingerprint"] != model.fingerprint:
            raise ValueError(
                f"snapshot {path} was made with model {header['model_fingerprint'][:16]}, "
                f"not with this model ({model.fingerprint[:16]}): refusing to mix states"
            )
        # Snapshots from before the field was written carry no scoring fingerprint to check.
        scoring = header.get("scoring_fingerprint", model.scoring_fingerprint)
        if scoring != model.scoring_fingerprint:
            raise ValueError(
                f"snapshot {path} was made with the same weights but other anomaly settings "
                "(its metadata's 'anomaly' section): refusing to mix states"
            )
        engine = cls(model, **engine_options)
        table = engine._table
        ids = header["streams"]
        for name, (shape, dtype) in table.specs.items():
            got = arrays.get(f"slab_{name}")
            if got is None and name == SEQ_SLAB:
                continue  # a snapshot from before streams kept their seq: none seen yet
            if got is None or got.shape != (len(ids), *shape) or got.dtype != dtype:
                raise ValueError(f"snapshot {path} is corrupt: state array {name!r} is malformed")
        idle = arrays.get("idle_seconds")
        # a NaN or negative age would keep its stream from ever being idle
        if (
            idle is None
            or idle.shape != (len(ids),)
            or idle.dtype != np.float64
            or not (idle >= 0).all()
        ):
            raise ValueError(f"snapshot {path} is corrupt: idle_seconds is malformed")
        if header["format_version"] == 1 and engine.anomaly is not None:
            norm_to_planar(arrays[f"slab_{SCORING_SLAB}"], engine.anomaly)
        # Every stream first, then the least recently used beyond max_streams go as evictions
        # (their open alerts closed): a lowered --max-streams costs those streams, not all.
        limit, table.max_streams = table.max_streams, None
        table.load(
            ids, {name: arrays[key] for name in table.specs if (key := f"slab_{name}") in arrays}
        )
        now = engine._clock()
        for stream, seconds in zip(ids, idle.tolist(), strict=True):
            table.last_used[table.slot_of[stream]] = now - seconds
        table.max_streams = limit
        table.evict_over_limit()
        engine.snapshot_extra = header.get("extra", {})
        return engine

    # ----------------------------------------------------------------- private
    def _close_evicted(self, slots: np.ndarray) -> None:
        self._close_open_alerts(slots, CloseReason.EVICTED)

    def _close_open_alerts(self, slots: np.ndarray, reason: CloseReason) -> None:
        """Close the open alerts of `slots` (int64), whose state is about to be discarded: keep
        each incident for `take_closed_alerts` and mark its row closed."""
        if self.anomaly is None:
            return
        table = self._table
        state = table.slabs[ALERT_SLAB]
        for slot in slots[state[slots, A_OPEN] > 0.0].tolist():
            row = state[slot]
            self._closed_alerts.append(
                ClosedAlert(
                    table.stream_of[slot],
                    reason,
                    float(row[A_PEAK]),
                    int(row[A_LENGTH]),
                    float(row[A_OPENED_TS]),
                )
            )
            row[A_OPEN] = 0.0

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_INTERVAL
        self._table.evict_idle(now)
        self._follow_table()

    def _follow_table(self) -> None:
        """After streams left, if the table shrank: let go of what was sized for it before and
        give the freed memory back to the system."""
        if self._table.shrinks == self._shrinks_followed:
            return
        self._shrinks_followed = self._table.shrinks
        if self._seen.shape[0] > self._table.capacity:
            self._seen = np.zeros(self._table.capacity, np.int32)
        if self.anomaly is not None:
            self._scorer.views()  # drops its views of a replaced scoring slab
        release_freed_memory()

    def _ensure_batch(self, n: int) -> None:
        if n <= self._batch_rows:
            return
        rows = max(n, 2 * self._batch_rows)
        p = self._packed
        widths = [p.inputs + p.hidden + 1] + [2 * p.hidden + 1] * (p.layers - 1)
        self._layer_inputs = [np.zeros((rows, w), np.float32) for w in widths]
        self._gates = np.zeros((rows, p.columns), np.float32)
        self._top = np.zeros((rows, p.hidden + 1), np.float32)
        self._ranks = np.zeros(rows, np.int64)
        self._normalised_out = np.zeros((rows, p.outputs), np.float32)
        self._batch_rows = rows

    def _warm_up(self) -> None:
        """Compile (or load from cache) every kernel before the first real reading."""
        probe = "\x00warm-up"
        x = np.zeros(self._x_shape, np.float32)
        self.step(probe, x)
        self.process([probe, probe], np.zeros((2, *self._x_shape), np.float32), seq=[1, NO_SEQ])
        self.drop(probe)
        self.open_alerts()  # else a metrics scrape would compile it, on its thread


def bytes_per_stream(model: Model) -> int:
    """Return the slab bytes one stream of `model` takes in a StreamEngine, as its
    `bytes_per_stream` says (not the id and its dict and index entries)."""
    return row_bytes(_slab_specs(model, _anomaly_spec(model)))


def _slab_specs(
    model: Model, anomaly: AnomalySpec | None
) -> dict[str, tuple[tuple[int, ...], type]]:
    """Return `{slab: (shape, dtype)}` per stream: recurrent state, last seq, scoring state."""
    specs: dict[str, tuple[tuple[int, ...], type]] = {
        "h": ((model.num_layers, model.hidden_size), np.float32),
        SEQ_SLAB: ((), np.int64),
    }
    if model.cell == "lstm":
        specs["c"] = ((model.num_layers, model.hidden_size), np.float32)
    if anomaly is not None:
        # one row per stream: statistics, forecast and alert state (engine.anomaly)
        specs.update(anomaly.slab_specs())
    return specs


def _anomaly_spec(model: Model) -> AnomalySpec | None:
    """Return the model's anomaly spec, or None for a model that does not score."""
    section = model.metadata.get("anomaly")
    return None if section is None else AnomalySpec.from_metadata(section)


def _one_per_reading(values: Any, dtype: type, n: int, name: str, kind: str) -> np.ndarray:
    """Return `values` as a (n,) array of `dtype`, or raise ValueError saying what is wrong."""
    try:
        array = np.asarray(values, dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {kind}, one per reading ({exc})") from None
    if array.size != n:
        plural = "value" if array.size == 1 else "values"
        raise ValueError(f"{name} holds {array.size} {plural} for {n} readings, one per reading")
    return array


def _check_finite_row(x: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"reading holds {x[bad[0]]} at input {bad[0]}: values must be finite")


def write_snapshot(path: str | os.PathLike[str], copy: SnapshotCopy) -> int:
    """Write a `StreamEngine.snapshot_copy` to `path` atomically; return the number of streams.

    Meant for a thread beside the engine's: the big copies and the file's writes let the GIL
    go, and the per-stream work that cannot is cut into `_WRITER_CHUNK` calls.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = _header_json(copy.header)
    # streams' data: for the daemon's user only
    write_npz_atomically(path, {**copy.arrays(), "header": encoded}, mode=0o600)
    return len(copy.header["streams"])


def _header_json(header: dict[str, Any]) -> np.ndarray:
    """Return json.dumps(header) as UTF-8 bytes (uint8), made a chunk of ids per call.

    No call handles the whole id list: at 300,000 ids, json.dumps of it took ~30 ms and a
    join, concatenation or encoding of the result ~3-6 ms each, all holding the GIL.
    """
    pieces = [b"{"]
    for i, (key, value) in enumerate(header.items()):
        pieces.append(f"{', ' if i else ''}{json.dumps(key)}: ".encode())
        if key != "streams":
            pieces.append(json.dumps(value).encode())
            continue
        pieces.append(b"[")
        for start in range(0, len(value), _WRITER_CHUNK):
            chunk = json.dumps(value[start : start + _WRITER_CHUNK])[1:-1]
            pieces.append(f"{', ' if start else ''}{chunk}".encode())
        pieces.append(b"]")
    pieces.append(b"}")
    out = np.empty(sum(map(len, pieces)), np.uint8)
    at = 0
    for piece in pieces:
        out[at : at + len(piece)] = np.frombuffer(piece, np.uint8)
        at += len(piece)
    return out


def _int64_array(values: list[int]) -> np.ndarray:
    """np.array(values, np.int64), converted a chunk per call."""
    out = np.empty(len(values), np.int64)
    for start in range(0, len(values), _WRITER_CHUNK):
        part = values[start : start + _WRITER_CHUNK]
        out[start : start + len(part)] = np.fromiter(part, np.int64, len(part))
    return out


def read_snapshot(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a snapshot file's header and arrays; ValueError says what is wrong with
    them, OSError why the file could not be opened (which says nothing of its content)."""
    with open(path, "rb") as file:
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise ValueError(f"snapshot {path} is truncated or corrupt ({exc})") from None
    raw = arrays.pop("header", None)
    try:
        header = json.loads(raw.tobytes().decode()) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path} is not an rnnstream snapshot (no valid header)")
    if header.get("format_version") not in range(1, SNAPSHOT_VERSION + 1):
        raise ValueError(
            f"snapshot {path} has format version {header.get('format_version')}, "
            f"this rnnstream reads versions 1 to {SNAPSHOT_VERSION}"
        )
    if not isinstance(header.get("streams"), list) or not isinstance(
        header.get("model_fingerprint"), str
    ):
        raise ValueError(f"snapshot {path} is corrupt: header lacks streams or fingerprint")
    seen: set[str] = set()
    for stream in header["streams"]:
        if not isinstance(stream, str):
            raise ValueError(f"snapshot {path} is corrupt: stream id {stream!r} is not a str")
        if stream in seen:  # restored, it would take two slots, one of them never to be freed
            raise ValueError(f"snapshot {path} is corrupt: it holds stream {stream!r} twice")
        seen.add(stream)
    if not isinstance(header.get("extra", {}), dict):
        raise ValueError(f"snapshot {path} is corrupt: its header's extra is not a dict")
    return header, arrays
