"""Train the built-in default model `engine/data/default_model.npz` (no NAB data involved).

A univariate next-step forecaster (GRU) trained with `engine.train` on clean synthetic sensor
series from `producers.synthetic` (anomaly_rate 0; many seeds, hence many stream profiles), each
normalised by `engine.anomaly.online_normalise` exactly as the engine normalises a stream online,
so training and serving see the same distribution. Every random choice is seeded: running it
again with the same arguments gives the same weights.

    python scripts/train_default_model.py            # writes engine/data/default_model.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.anomaly import AnomalySpec  # noqa: E402
from engine.train import TrainConfig, format_epoch, train_scoring_forecaster  # noqa: E402
from producers.synthetic import series as synthetic_series  # noqa: E402

DATA_SEED = 20240501


def training_series(n_series: int, length: int) -> list[np.ndarray]:
    """Return `n_series` clean synthetic series of `length` readings."""
    return [
        synthetic_series(length, seed=DATA_SEED, index=i, anomaly_rate=0.0)[0]
        for i in range(n_series)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "engine" / "data" / "default_model.npz"))
    parser.add_argument("--series", type=int, default=128, help="synthetic streams")
    parser.add_argument("--length", type=int, default=4000, help="readings per stream")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--hidden", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--burn-in", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    spec = AnomalySpec()
    started = time.perf_counter()
    data = training_series(args.series, args.length)
    config = TrainConfig(
        cell=args.cell,
        hidden_size=args.hidden,
        num_layers=1,
        seq_len=args.seq_len,
        batch_size=args.batch,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        burn_in=args.burn_in,
        validation_fraction=0.1,
    )
    model, report = train_scoring_forecaster(
        data,
        config,
        spec,
        progress=lambda s: print(format_epoch(s), file=sys.stderr, flush=True),
        feature_names=("value",),
        metadata={
            "name": "rnnstream default forecaster",
            "trained_by": "scripts/train_default_model.py",
            "data": {
                "source": "producers.synthetic.series (clean: anomaly_rate=0); no NAB data",
                "seed": DATA_SEED,
                "streams": args.series,
                "readings_per_stream": args.length,
            },
        },
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(
        f"wrote {out}: {config.cell} 1x{config.hidden_size}, validation mse "
        f"{report.best_validation_loss:.4f} (initial {report.initial_validation_loss:.4f}), "
        f"{time.perf_counter() - started:.0f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
