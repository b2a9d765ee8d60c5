"""Realistic synthetic sensor signals with labelled anomalies, pure numpy and seeded.

Each stream has its own family (gauge, count, percent), base level and scale, a daily profile
built from a few random harmonics, a weekly pattern (weekends lower and flatter by a random
amount), AR(1) noise, a slow mean-reverting drift and occasional unlabelled regime shifts. On top,
labelled anomalies start at random (`anomaly_rate` per sample) with these kinds:

- `spike`: 1-3 samples far outside the normal range;
- `level_shift`: the level jumps by several noise scales for a while, then comes back;
- `variance_burst`: noise several times stronger;
- `flatline`: the value sticks at its last reading;
- `dropout`: the sensor reads 0;
- `frequency_change`: the daily cycle runs faster or slower.

A label `Anomaly(stream, kind, start, end)` covers samples `start..end` inclusive. Generation is
deterministic per (seed, stream index) and does not depend on how the samples are requested:
`generate(300)` equals `generate(100)` followed by `generate(200)`, and a stream's signal does
not depend on how many other streams the fleet has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

ANOMALY_KINDS = (
    "spike",
    "level_shift",
    "variance_burst",
    "flatline",
    "dropout",
    "frequency_change",
)
FAMILIES = ("gauge", "count", "percent")
DEFAULT_PERIOD = 288  # one sample every 5 minutes
DEFAULT_ANOMALY_RATE = 1.0 / (4 * DEFAULT_PERIOD)  # about one anomaly per stream every 4 days
# (speed of the daily cycle, length in days) with (speed - 1) * length a whole number of days
_FREQUENCY_CHANGES = ((2.0, 1.0), (2.0, 2.0), (3.0, 0.5), (3.0, 1.0), (0.5, 2.0), (0.25, 4 / 3))


class Anomaly(NamedTuple):
    """A labelled anomaly window: samples `start..end` inclusive of `stream`."""

    stream: str
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Profile:
    """The random but fixed character of one stream."""

    family: str
    base: float
    daily_amp: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) of harmonics 1, 2, 3
    weekend_level: float  # added at weekends, in units of daily_amp
    weekend_amp: float  # factor on the daily amplitude at weekends
    day_offset: int  # which weekday sample 0 falls on
    noise_sd: float
    phi: float
    drift_sd: float  # stationary sd of the slow drift
    drift_tau: float  # its time constant in samples
    shift_rate: float  # unlabelled regime shifts per sample
    shift_sd: float

    @property
    def scale(self) -> float:
        """Return the unit of anomaly sizes: the larger of the noise and a tenth of the cycle."""
        return max(self.noise_sd, 0.1 * self.daily_amp, 1e-3)


def _draw_profile(rng: np.random.Generator, period: int) -> Profile:
    family = str(rng.choice(FAMILIES, p=[0.5, 0.25, 0.25]))
    if family == "percent":
        base = rng.uniform(15.0, 60.0)
        daily_amp = rng.uniform(0.05, 0.4) * base
    elif family == "count":
        base = float(np.exp(rng.uniform(np.log(20.0), np.log(2000.0))))
        daily_amp = rng.uniform(0.2, 0.7) * base
    else:
        base = float(rng.choice([-1.0, 1.0], p=[0.15, 0.85]) * np.exp(rng.uniform(-1.0, 7.0)))
        daily_amp = rng.uniform(0.0, 0.3) * abs(base) + 0.05
    amps = np.array([1.0, rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.3)])
    phases = rng.uniform(0.0, 2 * np.pi, 3)
    weekly_strength = rng.uniform(0.0, 1.0) ** 2  # many streams barely care about weekdays
    noise_frac = rng.uniform(0.03, 0.25)
    return Profile(
        family=family,
        base=float(base),
        daily_amp=float(daily_amp),
        harmonics=tuple((float(a), float(p)) for a, p in zip(amps, phases, strict=True)),
        weekend_level=float(-weekly_strength * rng.uniform(0.3, 1.0)),
        weekend_amp=float(1.0 - weekly_strength * rng.uniform(0.3, 0.8)),
        day_offset=int(rng.integers(0, 7)),
        noise_sd=float(noise_frac * daily_amp + 0.02 * abs(base) * rng.uniform(0.1, 1.0) + 1e-3),
        phi=float(rng.uniform(0.3, 0.95)),
        drift_sd=float(rng.uniform(0.0, 0.3) * daily_amp),
        drift_tau=float(rng.uniform(2.0, 20.0) * period),
        shift_rate=float(rng.uniform(0.0, 1.0) / (15.0 * period)),
        shift_sd=float(rng.uniform(0.2, 0.8) * daily_amp),
    )


@dataclass
class _Event:
    kind: str
    start: int
    end: int  # inclusive
    size: float  # shift (level_shift, spike), factor (variance_burst, frequency_change)
    held: float | None = None  # the value a flatline sticks at


class SensorSignal:
    """One synthetic sensor: call `generate(n)` repeatedly for its next samples."""

    def __init__(
        self,
        seed: int = 0,
        index: int = 0,
        *,
        stream: str | None = None,
        period: int = DEFAULT_PERIOD,
        anomaly_rate: float = DEFAULT_ANOMALY_RATE,
        kinds: tuple[str, ...] = ANOMALY_KINDS,
    ) -> None:
        if period < 4:
            raise ValueError("period must be at least 4 samples per day")
        unknown = set(kinds) - set(ANOMALY_KINDS)
        if unknown:
            raise ValueError(
                f"unknown anomaly kinds {sorted(unknown)}; choose from {ANOMALY_KINDS}"
            )
        if anomaly_rate < 0 or (anomaly_rate > 0 and not kinds):
            raise ValueError("anomaly_rate must be >= 0 and needs at least one kind")
        self.stream = stream if stream is not None else f"sensor-{index:04d}"
        self.period = int(period)
        self.anomaly_rate = float(anomaly_rate)
        self.kinds = tuple(kinds)
        # Separate generators per component keep the output independent of request sizes.
        children = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(5)
        profile_rng, self._noise_rng, self._drift_rng, self._event_rng, self._shift_rng = (
            np.random.default_rng(c) for c in children
        )
        self.profile = _draw_profile(profile_rng, self.period)
        self.t = 0  # next sample index
        self.labels: list[Anomaly] = []
        self._events: list[_Event] = []
        self._next_anomaly = self._gap(0, self._event_rng, self.anomaly_rate)
        self._next_shift = self._gap(0, self._shift_rng, self.profile.shift_rate)
        self._shift_sizes: dict[int, float] = {}
        self._ar = 0.0
        self._drift = 0.0
        self._phase0 = float(profile_rng.uniform(0.0, 1.0))  # in days
        self._phase_ticks = 0.0  # samples of daily cycle elapsed, faster or slower in anomalies
        self._last = self.profile.base

    @staticmethod
    def _gap(after: int, rng: np.random.Generator, rate: float) -> int:
        if rate <= 0:
            return 2**62
        return after + int(rng.geometric(min(rate, 1.0)))

    def _schedule(self, stop: int) -> None:
        """Create the anomalies and regime shifts that start before sample `stop`."""
        p = self.period
        rng = self._event_rng
        while self._next_anomaly < stop:
            start = self._next_anomaly
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            sign = float(rng.choice([-1.0, 1.0]))
            if kind == "spike":
                length, size = int(rng.integers(1, 4)), sign * rng.uniform(6.0, 12.0)
            elif kind == "level_shift":
                length, size = int(rng.integers(p // 8, p + 1)), sign * rng.uniform(4.0, 8.0)
            elif kind == "variance_burst":
                length, size = int(rng.integers(p // 12, p // 2 + 1)), rng.uniform(3.0, 6.0)
            elif kind == "flatline":
                length, size = int(rng.integers(p // 12, p // 2 + 1)), 0.0
            elif kind == "dropout":
                length, size = int(rng.integers(max(p // 24, 1), p // 4 + 1)), 0.0
            else:  # frequency_change
                # Speed and length are paired so the cycle gains or loses whole days: after the
                # anomaly it is back in step with the clock. Speeds are multiples of 1/8 so the
                # running phase sum stays exact however the samples are requested.
                size, days = _FREQUENCY_CHANGES[int(rng.integers(len(_FREQUENCY_CHANGES)))]
                length = max(round(days * p), 1)
            end = start + max(length, 1) - 1
            self._events.append(_Event(kind, start, end, float(size)))
            self.labels.append(Anomaly(self.stream, kind, start, end))
            # Leave normal data between anomalies so each one has a clear onset.
            self._next_anomaly = self._gap(end + p // 4, rng, self.anomaly_rate)
        while self._next_shift < stop:
            self._shift_sizes[self._next_shift] = float(
                self._shift_rng.normal(0.0, self.profile.shift_sd)
            )
            self._next_shift = self._gap(self._next_shift, self._shift_rng, self.profile.shift_rate)

    def generate(self, n: int) -> np.ndarray:
        """Return the next `n` samples (float64) and advance; labels grow as anomalies start."""
        pr = self.profile
        t0, t1 = self.t, self.t + n
        self._schedule(t1)
        self._events = [e for e in self._events if e.end >= t0]
        active = [e for e in self._events if e.start < t1]
        idx = np.arange(t0, t1)

        speed = np.ones(n)
        for e in active:
            if e.kind == "frequency_change":
                speed[max(e.start, t0) - t0 : min(e.end + 1, t1) - t0] = e.size
        ticks = self._phase_ticks + np.cumsum(speed)
        self._phase_ticks = float(ticks[-1]) if n else self._phase_ticks
        # Reduce before scaling so a cycle that gained whole days gives bit-identical values.
        angle = 2 * np.pi * (self._phase0 + (ticks % self.period) / self.period)
        daily = sum(a * np.cos(k * angle + ph) for k, (a, ph) in enumerate(pr.harmonics, 1))
        daily = daily / sum(a for a, _ in pr.harmonics)

        weekday = ((idx // self.period) + pr.day_offset) % 7
        weekend = weekday >= 5
        seasonal = pr.daily_amp * np.where(
            weekend, pr.weekend_amp * daily + pr.weekend_level, daily
        )

        noise_e = self._noise_rng.standard_normal(n) * (pr.noise_sd * math.sqrt(1 - pr.phi**2))
        drift_e = self._drift_rng.standard_normal(n) * (pr.drift_sd * math.sqrt(2.0 / pr.drift_tau))
        for t, size in list(self._shift_sizes.items()):
            if t0 <= t < t1:
                drift_e[t - t0] += size
                del self._shift_sizes[t]
        noise, drift = self._recurse(noise_e, drift_e)

        burst = np.ones(n)
        extra = np.zeros(n)
        for e in active:
            sl = slice(max(e.start, t0) - t0, min(e.end + 1, t1) - t0)
            if e.kind == "variance_burst":
                burst[sl] = e.size
            elif e.kind in ("spike", "level_shift"):
                extra[sl] += e.size * pr.scale
        values = pr.base + drift + seasonal + noise * burst + extra
        values = self._shape(values)

        for e in active:
            lo, hi = max(e.start, t0) - t0, min(e.end + 1, t1) - t0
            if e.kind == "dropout":
                values[lo:hi] = 0.0
            elif e.kind == "flatline":
                if e.held is None:  # the anomaly starts in this block: hold the sample before it
                    e.held = float(values[lo - 1]) if lo > 0 else self._last
                values[lo:hi] = e.held
        if n:
            self._last = float(values[-1])
        self.t = t1
        return values

    def _recurse(self, noise_e: np.ndarray, drift_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # AR(1) noise and the Ornstein-Uhlenbeck drift are recursive; one pass over floats.
        phi = self.profile.phi
        keep = 1.0 - 1.0 / self.profile.drift_tau
        ar, dr = self._ar, self._drift
        noise = noise_e.tolist()
        drift = drift_e.tolist()
        for i in range(len(noise)):
            ar = phi * ar + noise[i]
            dr = keep * dr + drift[i]
            noise[i] = ar
            drift[i] = dr
        self._ar, self._drift = ar, dr
        return np.asarray(noise), np.asarray(drift)

    def _shape(self, values: np.ndarray) -> np.ndarray:
        family = self.profile.family
        if family == "count":
            return np.maximum(np.round(values), 0.0)
        if family == "percent":
            return np.clip(values, 0.0, 100.0)
        return values


class SyntheticFleet:
    """N synthetic sensors advancing together, one sample per stream per tick.

    `next_readings()` returns `(streams, values)` for the next tick with values of shape (n, 1);
    `labels` lists the anomalies that have started so far, as `Anomaly(stream, kind, start_tick,
    end_tick)` (end inclusive; the end may lie in the future for an anomaly still running).
    """

    def __init__(
        self,
        n_streams: int,
        seed: int = 0,
        *,
        period: int = DEFAULT_PERIOD,
        anomaly_rate: float = DEFAULT_ANOMALY_RATE,
        kinds: tuple[str, ...] = ANOMALY_KINDS,
        prefix: str = "sensor-",
        block: int = 256,
    ) -> None:
        if n_streams < 1:
            raise ValueError("n_streams must be at least 1")
        width = max(4, len(str(n_streams - 1)))
        self.signals = [
            SensorSignal(
                seed,
                i,
                stream=f"{prefix}{i:0{width}d}",
                period=period,
                anomaly_rate=anomaly_rate,
                kinds=kinds,
            )
            for i in range(n_streams)
        ]
        self.streams = [s.stream for s in self.signals]
        self.tick = 0  # index of the next tick next_readings returns
        self._block = int(block)
        self._buffer = np.empty((0, n_streams))
        self._buffer_start = 0

    def _fill(self) -> None:
        self._buffer_start = self.signals[0].t
        self._buffer = np.stack([s.generate(self._block) for s in self.signals], axis=1)

    def next_block(self, n_ticks: int) -> np.ndarray:
        """Return the next `n_ticks` ticks as an array (n_ticks, n_streams) and advance."""
        rows = []
        while n_ticks > 0:
            offset = self.tick - self._buffer_start
            if offset >= len(self._buffer):
                self._fill()
                offset = 0
            take = min(n_ticks, len(self._buffer) - offset)
            rows.append(self._buffer[offset : offset + take])
            self.tick += take
            n_ticks -= take
        if not rows:
            return np.empty((0, len(self.streams)))
        return np.concatenate(rows)

    def next_readings(self) -> tuple[list[str], np.ndarray]:
        """Return the stream ids and the (n_streams, 1) float32 values of the next tick."""
        row = self.next_block(1)[0]
        return list(self.streams), row.astype(np.float32).reshape(-1, 1)

    @property
    def labels(self) -> list[Anomaly]:
        """Return the anomalies started before the current tick, ordered by start then stream."""
        started = [a for s in self.signals for a in s.labels if a.start < self.tick]
        return sorted(started, key=lambda a: (a.start, a.stream))


def series(
    n_samples: int,
    seed: int = 0,
    *,
    period: int = DEFAULT_PERIOD,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
    index: int = 0,
    stream: str = "series",
) -> tuple[np.ndarray, list[Anomaly]]:
    """Return one synthetic series of `n_samples` (float64) and its anomaly windows.

    Use `anomaly_rate=0` for clean training data; vary `seed` / `index` for different sensors.
    Windows whose end lies past the series are clipped to its last sample.
    """
    signal = SensorSignal(
        seed, index, stream=stream, period=period, anomaly_rate=anomaly_rate, kinds=kinds
    )
    values = signal.generate(n_samples)
    windows = [a._replace(end=min(a.end, n_samples - 1)) for a in signal.labels]
    return values, windows
