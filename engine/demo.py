"""`rnnstream demo`: the whole system on the built-in model, live, in one command.

Starts `rnnstream serve` as a child process on free loopback ports, feeds it a fleet of
synthetic sensors with injected, labelled anomalies, shows throughput, latency, live streams and
alerts about once a second, then stops everything and scores the alerts against the labels
(recall and precision) and draws one alerted stream to a PNG.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.alerts import EVENT_CLOSE, EVENT_NONE, EVENT_OPEN
from engine.default_model import default_model_path, load_default_model
from engine.process import ServeProcess
from engine.report import alert_spans, catches


@dataclass
class Observed:
    """What the demo's subscriber has seen so far (shared with the display thread)."""

    predictions: int = 0
    latencies: list[float] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    new_alerts: list[dict] = field(default_factory=list)
    # per stream: tick -> (forecast of the next reading, score)
    history: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _subscribe(endpoint: str, observed: Observed, stop: threading.Event) -> None:
    from consumers.client import Subscriber

    with Subscriber(endpoint, topics=("batch.pred", "alert.")) as sub:
        while not stop.is_set():
            item = sub.recv(timeout=0.2)
            if item is None:
                continue
            kind, payload = item
            now = time.time()
            if kind == "alert":
                with observed.lock:
                    observed.alerts.append(payload)
                    observed.new_alerts.append(payload)
                continue
            if kind != "batch":
                continue
            predictions = payload["prediction"][:, 0].tolist()
            scores = payload["score"].tolist()
            with observed.lock:
                observed.predictions += len(predictions)
                for stream, seq, ts, prediction, score in zip(
                    payload["streams"],
                    payload["seq"],
                    payload["ts"],
                    predictions,
                    scores,
                    strict=True,
                ):
                    observed.history.setdefault(stream, {})[seq - 1] = (prediction, score)
                    if ts is not None:
                        observed.latencies.append(now - ts)


def _alert_line(alert: dict) -> str:
    stream = alert["stream"]
    if alert["event"] == "open":
        value = alert["value"][0] if alert.get("value") else math.nan
        expected = alert["expected"][0] if alert.get("expected") else math.nan
        return (
            f"  ALERT  open  {stream}  reading {alert['seq']}: value {value:.3g}, "
            f"expected {expected:.3g}, score {alert['score']:.3f} ({alert['severity']})"
        )
    # a close that no reading caused (its stream was evicted, say) says why instead
    at = f"reading {alert['seq']}" if alert.get("seq") is not None else alert.get("reason")
    return (
        f"  alert  close {stream}  {at}: after {alert['readings']} readings, "
        f"peak score {alert['peak']:.3f}"
    )


def _percentile_ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.2f} ms" if values else "-"


@dataclass
class Match:
    """Alerts scored against the injected anomalies."""

    eligible: int  # labelled anomalies a stream could have flagged (after its probation)
    caught: int
    alerts: int
    true_alerts: int
    matched_pairs: list[tuple[Any, int]]  # (label, tick of the alert that caught it)

    @property
    def recall(self) -> float:
        return self.caught / self.eligible if self.eligible else math.nan

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else math.nan


def match_alerts(labels: list, opens: list[tuple[str, int]], probation: int, ticks: int) -> Match:
    """Score alert openings (stream, tick) against labelled anomalies.

    A label counts (is eligible) when it starts after the stream's probation and before the last
    tick; it is caught when an alert on its stream catches its window (`report.catches`: opens
    from its start to a few ticks after its end). An alert is true when it catches a window of
    any label of its stream.
    """
    by_stream: dict[str, list] = {}
    for label in labels:
        by_stream.setdefault(label.stream, []).append(label)
    eligible = [a for a in labels if probation <= a.start < ticks]
    caught: list[tuple[Any, int]] = []
    for label in eligible:
        hits = [t for s, t in opens if s == label.stream and catches(t, (label.start, label.end))]
        if hits:
            caught.append((label, min(hits)))
    true_alerts = sum(
        1 for s, t in opens if any(catches(t, (a.start, a.end)) for a in by_stream.get(s, []))
    )
    return Match(len(eligible), len(caught), len(opens), true_alerts, caught)


def _plot(
    path: Path,
    stream: str,
    values: np.ndarray,
    history: dict[int, tuple[float, float]],
    labels: list,
    opens: list[tuple[int, int | None]],
) -> Path:
    from engine.alerts import AlertPolicy
    from engine.report import plot_stream

    expected = np.full(len(values), np.nan)
    scores = np.full(len(values), np.nan)
    for tick, (forecast, score) in history.items():
        if tick + 1 < len(values):
            expected[tick + 1] = forecast  # the forecast made at tick t is for reading t + 1
        if tick < len(values):
            scores[tick] = score
    return plot_stream(
        path,
        values=values,
        expected=expected,
        scores=scores,
        windows=[(label.start, min(label.end, len(values) - 1)) for label in labels],
        alert_spans=opens,
        open_level=AlertPolicy().open_level,  # the daemon's default policy
        title=f"rnnstream demo: stream {stream}",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    parser.add_argument("--streams", type=int, default=300, help="synthetic sensors")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="readings per second per stream (ticks/s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic fleet")
    parser.add_argument(
        "--out", default="rnnstream-demo", help="folder for the picture, logs and daemon state"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from engine.cli import UserError
    from engine.ctl import NoReply, control
    from producers.client import Producer
    from producers.synthetic import SyntheticFleet

    out = out or sys.stdout
    if args.duration <= 0 or args.streams < 1 or args.rate <= 0:
        raise UserError("--duration, --streams and --rate must be positive")
    if args.seed < 0:
        raise UserError("--seed must be at least 0")
    # Made before the daemon and the listener thread start: nothing may fail between their
    # start and the `try` that stops them.
    fleet = SyntheticFleet(args.streams, seed=args.seed)
    workdir = Path(args.out)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {workdir}: {exc.strerror}; choose another --out") from None
    anomaly = load_default_model().metadata.get("anomaly", {})
    probation = int(anomaly.get("probation", 0))

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"starting rnnstream serve (built-in model) with state in {workdir / 'state'} ...")
    daemon = ServeProcess(
        default_model_path(),
        workdir,
        publish_mode="batch",
        extra=["--checkpoint-every", "0"],
    )
    try:
        daemon.start()
    except RuntimeError as exc:
        raise UserError(f"the daemon did not start: {exc}") from None
    except KeyboardInterrupt:  # while it compiles: stop it too, or it would serve on alone
        daemon.kill()
        raise
    observed = Observed()
    stop = threading.Event()
    listener = threading.Thread(target=_subscribe, args=(daemon.publish, observed, stop))
    listener.start()
    values: list[np.ndarray] = []
    sent = 0
    try:
        time.sleep(0.3)  # let the subscription reach the daemon before the first reading
        say(
            f"ready: {args.streams} synthetic sensors at {args.rate:g} readings/s each for "
            f"{args.duration:g} s (Ctrl-C stops early); streams may alert after "
            f"{probation} readings of warm-up"
        )
        with Producer(daemon.ingest) as producer:
            began = time.monotonic()
            next_tick = began
            next_report = began + 1.0
            last_count = 0
            while time.monotonic() - began < args.duration:
                streams, row = fleet.next_readings()
                producer.send_many(streams, row, ts=time.time())
                values.append(row[:, 0].copy())
                sent += len(streams)
                next_tick += 1.0 / args.rate
                now = time.monotonic()
                if now >= next_report:
                    last_count = _report(say, daemon.control, observed, last_count, now - began)
                    next_report += 1.0
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except KeyboardInterrupt:
        say("interrupted: stopping")
    finally:
        deadline = time.monotonic() + 10.0
        while observed.predictions < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            stats = control(daemon.control, "stats", timeout=5.0)
        except NoReply:
            stats = {}
        stop.set()
        listener.join()
        daemon.stop()
    return _summarise(say, args, workdir, fleet, np.array(values), observed, stats, probation)


def _report(say: Any, endpoint: str, observed: Observed, last_count: int, elapsed: float) -> int:
    from engine.ctl import NoReply, control

    with observed.lock:
        count = observed.predictions
        latencies, observed.latencies = observed.latencies, []
        fresh, observed.new_alerts = observed.new_alerts, []
        open_now = sum(1 if a["event"] == "open" else -1 for a in observed.alerts)
    try:
        streams = control(endpoint, "health", timeout=1.0).get("streams", "?")
    except NoReply:
        streams = "?"
    say(
        f"[{elapsed:5.1f}s] {count - last_count:7,d} readings/s   latency p50 "
        f"{_percentile_ms(latencies, 50)}  p99 {_percentile_ms(latencies, 99)}   "
        f"live streams {streams}   alerts open {open_now}"
    )
    for alert in fresh:
        say(_alert_line(alert))
    return count


def _summarise(
    say: Any,
    args: argparse.Namespace,
    workdir: Path,
    fleet: Any,
    values: np.ndarray,
    observed: Observed,
    stats: dict,
    probation: int,
) -> int:
    ticks = len(values)
    opens = [(a["stream"], int(a["seq"]) - 1) for a in observed.alerts if a["event"] == "open"]
    labels = fleet.labels
    match = match_alerts(labels, opens, probation, ticks)
    say("")
    say("summary")
    say(f"  readings processed    {stats.get('readings_in', observed.predictions):,}")
    say(f"  predictions received  {observed.predictions:,}")
    say(f"  alerts raised         {match.alerts}")
    say(
        f"  injected anomalies    {len(labels)} ({match.eligible} after the {probation}-reading "
        "warm-up, so detectable)"
    )
    say(f"  recall                {_ratio(match.caught, match.eligible)}")
    say(f"  precision             {_ratio(match.true_alerts, match.alerts)}")
    if args.no_plot or not match.matched_pairs and not opens:
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say("  (no picture: pip install 'rnnstream[plot]' for matplotlib)")
        return 0
    stream = match.matched_pairs[0][0].stream if match.matched_pairs else opens[0][0]
    column = fleet.streams.index(stream)
    spans = alert_spans(_alert_events(observed.alerts, stream, len(values)))
    path = _plot(
        workdir / f"demo-{stream}.png",
        stream,
        values[:, column],
        observed.history.get(stream, {}),
        [a for a in labels if a.stream == stream],
        spans,
    )
    say(f"  picture               {path}")
    return 0


def _alert_events(alerts: list[dict], stream: str, ticks: int) -> np.ndarray:
    """Return a stream's alert messages as per-tick events (`engine.alerts` codes)."""
    events = np.full(ticks, EVENT_NONE, np.int8)
    for alert in alerts:
        if alert["stream"] != stream or alert["seq"] is None:  # a close between readings
            continue
        tick = int(alert["seq"]) - 1
        if 0 <= tick < ticks:
            events[tick] = EVENT_OPEN if alert["event"] == "open" else EVENT_CLOSE
    return events


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.0%} ({part} of {whole})" if whole else "- (none)"
