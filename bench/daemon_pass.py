"""What a daemon pass costs a reading, in-process: decode, step and publish, no scheduler noise.

    python bench/daemon_pass.py                          # 20 batch frames of 1024 rows a pass
    python bench/daemon_pass.py --rows 1 --frames 100    # 100 single readings a pass
    python bench/daemon_pass.py --flush-mb 16            # other processes' traffic between passes

The daemon's own methods (`Daemon._process` after `protocol.decode_frames`, as `_intake_pass`
runs them) on pre-encoded frames for 10,000 streams in turn, publishing to a real PUB socket
that nobody subscribes to; the model of `rnnstream bench e2e` (LSTM, 8 inputs, hidden 64, head
to 8). Prints the median and the lowest nanoseconds a reading over the rounds. What it leaves
out is what `rnnstream bench e2e` adds: the sockets' receive and delivery, and two other
processes on the same cores. To compare two commits, run this file from a `git worktree` of
each (copied into the older one), taking turns. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import protocol as P  # noqa: E402
from engine.config import ServeConfig  # noqa: E402
from engine.daemon import Daemon  # noqa: E402
from engine.model import Model  # noqa: E402
from engine.socket_io import MessageSender  # noqa: E402
from engine.stream import StreamEngine  # noqa: E402

STREAMS = 10_000
N_INPUTS = 8


def in_process_daemon(publish_mode: str, state_dir: str, socket: zmq.Socket) -> Daemon:
    model = Model.random("lstm", N_INPUTS, 64, output_size=8, seed=0)
    config = ServeConfig(state_dir=state_dir, publish_mode=publish_mode, checkpoint_every=0)
    daemon = Daemon(config, logging.getLogger("bench"))
    daemon.model = model
    daemon.engine = StreamEngine(model, blas_threads=config.blas_threads)
    daemon.publisher = socket
    daemon.predictions = MessageSender(socket)
    P.compile_jitted_paths(N_INPUTS)
    return daemon


def encoded_passes(passes: int, frames: int, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each pass's frames laid out as the daemon receives them; streams taken in turn."""
    rng = np.random.default_rng(0)
    names = [f"sensor-{i:05d}" for i in range(STREAMS)]
    cursor = 0
    out = []
    for _ in range(passes):
        encoded = []
        for _ in range(frames):
            picked = [names[(cursor + i) % STREAMS] for i in range(rows)]
            cursor += rows
            values = rng.standard_normal((rows, N_INPUTS)).astype(np.float32)
            if rows == 1:
                encoded.append(P.encode_reading(picked[0], values[0].tolist(), ts=time.time()))
            else:
                encoded.append(P.encode_batch(picked, values, ts=time.time()))
        out.append(P._laid_out(encoded))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames a pass")
    parser.add_argument("--rows", type=int, default=1024, help="rows a frame (1: single readings)")
    parser.add_argument("--passes", type=int, default=20, help="distinct passes a round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--flush-mb", type=int, default=0, help="memory written between passes")
    args = parser.parse_args()
    publish_mode = "each" if args.rows == 1 else "batch"
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind("tcp://127.0.0.1:*")
    with tempfile.TemporaryDirectory() as state_dir:
        daemon = in_process_daemon(publish_mode, state_dir, socket)
        passes = encoded_passes(args.passes, args.frames, args.rows)
        flush = np.ones(args.flush_mb << 18, np.float32)
        per_round = []
        for round_ in range(args.rounds + 1):  # the first admits the streams: untimed
            spent = 0.0
            for buf, starts in passes:
                flush += 1
                began = time.perf_counter()
                readings, _ = P.decode_frames(buf, starts, N_INPUTS)
                daemon._process(readings)
                spent += time.perf_counter() - began
            if round_:
                per_round.append(spent / (args.passes * args.frames * args.rows))
    socket.close(linger=0)
    context.term()
    ns = np.array(per_round) * 1e9
    print(
        f"{publish_mode}, {args.frames} frames x {args.rows} rows a pass, flush {args.flush_mb} MB:"
        f" median {np.median(ns):.0f} ns a reading, lowest {ns.min():.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
