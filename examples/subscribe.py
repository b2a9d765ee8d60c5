"""Print what `rnnstream serve` publishes, with nothing but pyzmq and msgpack (wire protocol v1).

Subscribes to predictions (`pred.`), alerts (`alert.`) and rejected input (`error`) and prints
each message as one JSON line with its topic. ZeroMQ subscriptions are prefixes, so `pred.pump-7`
also matches `pred.pump-70`: with --stream the script subscribes to that stream's prefixes and then
keeps only messages whose payload names exactly that stream. See docs/PROTOCOL.md.
"""

import argparse
import json

import msgpack
import zmq

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="the daemon's PUB socket")
parser.add_argument("--stream", action="append", help="only this exact stream id (repeatable)")
parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
parser.add_argument(
    "--timeout", type=float, default=0, help="exit after this many quiet seconds (0: never)"
)
args = parser.parse_args()

wanted = set(args.stream or [])
if wanted:
    topics = [f"{kind}.{stream}".encode() for stream in wanted for kind in ("pred", "alert")]
else:
    topics = [b"pred.", b"alert."]

context = zmq.Context()
sub = context.socket(zmq.SUB)
sub.connect(args.endpoint)
for topic in [*topics, b"error"]:
    sub.setsockopt(zmq.SUBSCRIBE, topic)

printed = 0
while not args.count or printed < args.count:
    if not sub.poll(args.timeout * 1000 if args.timeout else None):
        break  # quiet for --timeout seconds
    topic, payload = sub.recv_multipart()
    msg = msgpack.unpackb(payload)
    stream = msg.get("stream")  # errors about a whole message carry no stream
    if wanted and stream is not None and stream not in wanted:
        continue  # a longer id that shares the prefix
    print(json.dumps({"topic": topic.decode(), **msg}), flush=True)
    printed += 1

sub.close(linger=0)
context.term()
