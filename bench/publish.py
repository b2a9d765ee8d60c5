"""What a pass of predictions costs to send: pyzmq or one jitted call, I/O thread as is or
SCHED_BATCH.

    python bench/publish.py [--messages 40] [--gap-ms 0.4] [--passes 2000] [--rounds 2]

A PUB socket on loopback tcp sends passes of two-frame [topic, payload] messages (a 15-byte
topic, a 120-byte payload, as the daemon's predictions) to a SUB in another process, with a
pause between passes as a daemon at moderate load has. Each line: microseconds per message
spent in the send call (median over passes) and the CPU the sending process used (all its
threads: the I/O thread's too) per wall second. `MessageSender(direct=False)` is pyzmq's two
sends per message; `direct=True` one call into libzmq per pass (`engine.fastpaths.zmqcalls`).
Each combination gets a fresh context. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import zmq

from engine.socket_io import MessageSender, context_with_batch_io_threads


def _subscriber(endpoint: str, ready: mp.Event) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.rcvhwm = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    ready.set()
    while sock.recv() != b"stop":
        sock.recv()
    sock.close(linger=0)
    ctx.term()


def one_pass(messages: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(messages):
        parts += [f"pred.s-{i:08d}".encode(), rng.bytes(120)]
    bounds = np.cumsum([0, *map(len, parts)]).astype(np.int64)
    return np.frombuffer(b"".join(parts), np.uint8), bounds


def measure(batch_io: bool, direct: bool, args: argparse.Namespace) -> tuple[float, float]:
    ctx = context_with_batch_io_threads() if batch_io else zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    ready = mp.get_context("spawn").Event()
    sub = mp.get_context("spawn").Process(
        target=_subscriber, args=(f"tcp://127.0.0.1:{port}", ready)
    )
    sub.start()
    ready.wait(30)
    time.sleep(0.5)  # the subscription reaches the PUB
    sender = MessageSender(pub, direct=direct)
    data, bounds = one_pass(args.messages)
    spent = np.empty(args.passes)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(args.passes):
        t = time.perf_counter()
        sender.send_messages(data, bounds)
        spent[k] = time.perf_counter() - t
        time.sleep(args.gap_ms * 1e-3)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    pub.send_multipart([b"stop", b""])
    sub.join(10)
    pub.close(linger=0)
    ctx.term()
    return float(np.median(spent)) / args.messages * 1e6, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40, help="messages per pass")
    parser.add_argument("--gap-ms", type=float, default=0.4, help="pause between passes")
    parser.add_argument("--passes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"{args.messages} messages a pass, {args.gap_ms} ms between passes; {cores} cores")
    print("| I/O thread | send | us per message | process CPU |")
    print("|---|---|---:|---:|")
    for _ in range(args.rounds):
        for batch_io in (False, True):
            for direct in (False, True):
                per_message, cpu = measure(batch_io, direct, args)
                policy = "SCHED_BATCH" if batch_io else "default"
                how = "one jitted call" if direct else "pyzmq"
                print(f"| {policy} | {how} | {per_message:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
