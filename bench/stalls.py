"""How often this machine takes a core away: spin on every core and record the gaps.

    python bench/stalls.py                 # 10 s
    python bench/stalls.py --seconds 30

Run it on an otherwise idle machine: on the 2-core VM of bench/README.md it shows the stalls
no daemon can avoid and that land in the tail latencies of `rnnstream bench e2e` (which
measures them for a few seconds before it runs). See `engine/bench/stalls.py`. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench.stalls import measure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threshold-us", type=float, default=50.0)
    args = parser.parse_args()
    stalls = measure(args.seconds, args.threshold_us)
    print(f"{args.seconds:g} s, gaps over {args.threshold_us:g} us:")
    for part in stalls.summary().split("; "):
        print(f"  {part}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
