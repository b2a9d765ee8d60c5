"""Turning per-reading anomaly scores into alerts: one incident, one open and one close.

Per stream, in the first ALERT_COLUMNS columns of slot-indexed slab `ALERT_SLAB`: an alert
opens when the score stays at or above the open level for `min_duration` readings in a row, and
closes when it falls below the close level (hysteresis: close < open keeps a score hovering at
the threshold from flapping). After a close the stream stays quiet for `cooldown` readings. A
stream may carry its own open level (`threshold` column; 0 means the policy's). No alert opens
during a stream's first `warmup` readings: a young stream has seen little of its own range, so
most of its "new extremes" are ordinary (bench/results/alerts.md measures the defaults on
synthetic fleets).

An incident also closes when its stream's state is discarded (the stream ends, is dropped, reset
or evicted, or a reload drops the alert states): the engine reports it as a `ClosedAlert` with
its `CloseReason`, and marks the row closed, so that the open rows of the slab are exactly the
open incidents (`count_open`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from engine.kernels._jit import inline_kernel, kernel
from engine.kernels.cells import SLOT_PREFETCH_AHEAD, prefetch_slot

# One float64 row per stream holds all of a scoring engine's state (engine.anomaly), alert state
# first: the alert columns below index that row too, so the alert state is found under its name.
SCORING_SLAB = "scoring"
ALERT_SLAB = SCORING_SLAB
# columns of the alert slab
A_OPEN = 0  # 1.0 while an alert is open
A_RUN = 1  # consecutive readings at or above the open level while closed
A_COOLDOWN = 2  # readings left before the stream may open again
A_PEAK = 3  # highest score since the alert opened
A_LENGTH = 4  # readings since the alert opened
A_OPENED_TS = 5  # producer ts of the opening reading (NaN if unknown)
A_THRESHOLD = 6  # this stream's open level; 0 (a fresh row) means the policy's
A_SEEN = 7  # readings of this stream seen by the alert kernel (for the warm-up)
ALERT_COLUMNS = 8

EVENT_NONE = 0
EVENT_OPEN = 1
EVENT_CLOSE = 2


class CloseReason(StrEnum):
    """Why an incident closed: the `reason` of a close publication (docs/PROTOCOL.md)."""

    SCORE = "score"  # its score fell below the close level
    END = "end"  # its stream ended: a reading with `end: true`
    DROPPED = "dropped"  # its stream was dropped by the control command `drop`
    RESET = "reset"  # its stream was reset: the control command, or a reading with `reset: true`
    EVICTED = "evicted"  # its stream was evicted: idle past --idle-timeout, or at --max-streams
    RELOAD = "reload"  # a model reload did not keep the alert states (`reset`, or no scoring)


@dataclass(frozen=True)
class ClosedAlert:
    """An incident closed because its stream's state was discarded, as far as the state knew it.

    No reading caused it, so it has no score of its own; the engine's caller says which reading,
    if any, went with it (the daemon: the reading whose `end` dropped the stream).
    """

    stream: str
    reason: CloseReason
    peak: float  # the highest score since the incident opened
    readings: int  # the incident's length in readings, its opening one included
    opened_ts: float  # ts of the opening reading (NaN if unknown)


def check_open_level(level: float) -> None:
    """Raise ValueError unless `level` can be an alert open level, global or a stream's own:
    in (0, 1] (NaN is not)."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"alert level must be in (0, 1], got {level}")


@dataclass(frozen=True)
class AlertPolicy:
    """Levels and timing of alerts; levels are anomaly scores in [0, 1], times in readings.

    The defaults come from bench/alert_quality.py (bench/results/alerts.md): with the built-in
    score almost every false alert is a single "new extreme" of a young stream whose reading the
    model forecast well, so an alert also needs a reading at least `error_gate` times the
    stream's typical forecast error away from its forecast; an open level below the score's 1.0
    lets strong forecast errors alert too.
    """

    open_level: float = 0.3
    close_level: float = 0.2
    min_duration: int = 1
    cooldown: int = 30
    warmup: int = 0
    error_gate: float = 3.0  # open only if the reading's surprise is at least this (0: off)

    def __post_init__(self) -> None:
        if not 0.0 < self.close_level <= self.open_level <= 1.0:
            raise ValueError("need 0 < close_level <= open_level <= 1")
        if self.min_duration < 1 or self.cooldown < 0 or self.warmup < 0:
            raise ValueError("min_duration must be >= 1, cooldown and warmup >= 0")
        if self.error_gate < 0:
            raise ValueError("error_gate must be >= 0")

    def kernel_params(self) -> np.ndarray:
        """Return the policy as the float64 array `anomaly.finish_batch` takes, in its order."""
        return np.array(
            [
                self.open_level,
                self.close_level,
                float(self.min_duration),
                float(self.cooldown),
                float(self.warmup),
                self.error_gate,
            ]
        )

    @staticmethod
    def slab_specs() -> dict[str, tuple[tuple[int, ...], type]]:
        """Return `{name: (shape, dtype)}` of the per-stream alert state (zeros = fresh)."""
        return {ALERT_SLAB: ((ALERT_COLUMNS,), np.float64)}


@kernel
def alert_batch(
    slots,
    scores,
    surprise,
    ts,
    state,
    open_level,
    close_level,
    min_duration,
    cooldown,
    warmup,
    error_gate,
    events,
    peaks,
    lengths,
    opened,
):  # pragma: no cover - jitted
    """Advance each row's stream alert state by one score; write EVENT_* codes to events (n,).

    slots (n,) int64; scores (n,) float; surprise (n,) float64, each reading's forecast error
    in units of its stream's typical error (NaN if unknown); ts (n,) float64 (NaN if unknown);
    state (capacity, ALERT_COLUMNS) float64. For a close, peaks / lengths / opened receive the
    incident's peak score, its length in readings and the ts of its opening reading; for an
    open, the opening score, 1 and its ts. Per row, with level the stream's own open level (or
    open_level) and close = min(close_level, level): an open alert closes at a score < close,
    then `cooldown` readings pass without opening; a closed stream opens once `min_duration`
    readings in a row score >= level with a surprise of at least `error_gate` (NaN passes),
    none of them among the stream's first `warmup` readings.
    """
    n = slots.shape[0]
    for i in range(n):
        if i + SLOT_PREFETCH_AHEAD < n:
            prefetch_slot(state, slots[i + SLOT_PREFETCH_AHEAD])
        alert_row(
            i,
            state,
            slots[i],
            scores[i],
            surprise[i],
            ts[i],
            open_level,
            close_level,
            min_duration,
            cooldown,
            warmup,
            error_gate,
            events,
            peaks,
            lengths,
            opened,
        )


@inline_kernel
def alert_row(
    i,
    state,
    slot,
    score,
    surprise,
    ts,
    open_level,
    close_level,
    min_duration,
    cooldown,
    warmup,
    error_gate,
    events,
    peaks,
    lengths,
    opened,
):
    """Advance state[slot] by the score of batch row i (see `alert_batch`)."""
    score = float(score)
    level = state[slot, A_THRESHOLD]
    if level <= 0.0:
        level = open_level
    close = min(close_level, level)
    warm = state[slot, A_SEEN] >= warmup
    state[slot, A_SEEN] += 1.0
    events[i] = EVENT_NONE
    if state[slot, A_OPEN] > 0.0:
        state[slot, A_LENGTH] += 1.0
        state[slot, A_PEAK] = max(state[slot, A_PEAK], score)
        if score < close:
            events[i] = EVENT_CLOSE
            peaks[i] = state[slot, A_PEAK]
            lengths[i] = state[slot, A_LENGTH]
            opened[i] = state[slot, A_OPENED_TS]
            state[slot, A_OPEN] = 0.0
            state[slot, A_RUN] = 0.0
            state[slot, A_COOLDOWN] = cooldown
    elif state[slot, A_COOLDOWN] > 0.0:
        state[slot, A_COOLDOWN] -= 1.0
    elif score >= level and warm and not surprise < error_gate:
        state[slot, A_RUN] += 1.0
        if state[slot, A_RUN] >= min_duration:
            events[i] = EVENT_OPEN
            peaks[i] = score
            lengths[i] = 1.0
            opened[i] = ts
            state[slot, A_OPEN] = 1.0
            state[slot, A_PEAK] = score
            state[slot, A_LENGTH] = 1.0
            state[slot, A_OPENED_TS] = ts
    else:
        state[slot, A_RUN] = 0.0


@kernel
def count_open(state):  # pragma: no cover - jitted
    """Return how many rows of state (capacity, >= ALERT_COLUMNS) float64 have an open alert.

    Jitted for the GIL it lets go: a metrics scrape counts on its own thread while the daemon's
    loop goes on (a free slot's row is never open, see the module docstring).
    """
    n = 0
    for slot in range(state.shape[0]):
        if state[slot, A_OPEN] > 0.0:
            n += 1
    return n
