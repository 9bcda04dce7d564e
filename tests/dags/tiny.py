"""Tiny settings and data for orchestration tests: small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

# 60 users x 80 items, a 16-dim one-layer SASRec, 10 epochs: about 1 s of training, and enough
# to beat popularity (the gate's baseline) on this data by about 2.5x (2 epochs: about 1.15x).
TINY: dict[str, Any] = {
    "data.dataset": "synthetic", "data.synthetic.n_users": 60, "data.synthetic.n_items": 80,
    "data.synthetic.n_interactions": 3000, "data.synthetic.days": 20,
    "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 1, "model.max_len": 20,
    "train.epochs": 10, "train.lr": 5e-3, "train.batch_size": 32, "train.num_threads": 1,
}


def beats_popularity(metrics: dict[str, Any], margin: float) -> bool:
    """A run's ``metrics.json``: NDCG@10 at least ``margin`` x popularity's on the same users."""
    ours, pop = metrics["overall"]["ndcg@10"], metrics["baseline"]["overall"]["ndcg@10"]
    return bool(ours >= margin * pop > 0)


def tiny_settings(home: Path, **extra: Any):  # noqa: ANN201 - Settings
    from recops.config import load_settings

    return load_settings(overrides={"home": home, **TINY, **extra})


def write_bad_movielens(root: Path) -> Path:
    """An ml-latest-small-format folder that loads but must fail validation (ratings of 9.5)."""
    d = root / "ml-latest-small"
    d.mkdir(parents=True)
    rows = [(u, i, 9.5 if (u + i) % 7 == 0 else 4.0, 1_000_000_000 + 60 * (u * 40 + i))
            for u in range(1, 21) for i in range(1, 31)]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        d / "ratings.csv", index=False)
    pd.DataFrame({"movieId": range(1, 31), "title": [f"Movie {i} (2000)" for i in range(1, 31)],
                  "genres": ["Drama|Comedy"] * 30}).to_csv(d / "movies.csv", index=False)
    return d
