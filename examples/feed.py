"""Feed readings to `rnnstream serve` with nothing but pyzmq and msgpack (wire protocol v1).

Sends --count single readings of one stream, numbered from seq 1 and stamped with the time, then
one columnar batch: a reading each for two neighbours (`pump-70`, `pump-71` for `pump-7`) and the
next reading of the stream itself, its values packed as little-endian float32 bytes, row-major.
Prints every reading it sends as one JSON line. See docs/PROTOCOL.md.
"""

import argparse
import json
import math
import struct
import time

import msgpack
import zmq

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="the daemon's ingest socket")
parser.add_argument("--stream", default="pump-7", help="stream id")
parser.add_argument("--count", type=int, default=10, help="single readings to send")
parser.add_argument("--inputs", type=int, default=1, help="values per reading (the model's)")
args = parser.parse_args()


def reading(seq: int, k: int = 0) -> list[float]:
    """Return a made-up reading: one value per model input."""
    return [round(20 + 5 * math.sin(0.3 * seq + k + i), 4) for i in range(args.inputs)]


context = zmq.Context()
push = context.socket(zmq.PUSH)
push.linger = 5000  # on close, wait up to 5 s for queued readings to go out
push.connect(args.endpoint)

for seq in range(1, args.count + 1):
    msg = {"stream": args.stream, "values": reading(seq), "seq": seq, "ts": time.time()}
    push.send(msgpack.packb(msg))
    print(json.dumps(msg), flush=True)

# One columnar message: row i is a reading of streams[i]; "ts" may be one number for all rows.
streams = [f"{args.stream}0", f"{args.stream}1", args.stream]
rows = [reading(1, k=1), reading(1, k=2), reading(args.count + 1)]
seqs = [1, 1, args.count + 1]
flat = [v for row in rows for v in row]
batch = {
    "streams": streams,
    "values": struct.pack(f"<{len(flat)}f", *flat),  # n_rows * n_inputs float32, little-endian
    "seq": seqs,
    "ts": time.time(),
}
push.send(msgpack.packb(batch))
for stream, row, seq in zip(streams, rows, seqs, strict=True):
    print(json.dumps({"stream": stream, "values": row, "seq": seq, "ts": batch["ts"]}), flush=True)

push.close()  # lingers until sent
context.term()
