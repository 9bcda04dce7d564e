"""Small canonical frames and raw staged batches for the validation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recops import schema

N_ITEMS = 60
N_USERS = 40
SOURCE = "test-source"


def make_items(n: int = N_ITEMS) -> pd.DataFrame:
    ids = np.arange(1, n + 1)
    return pd.DataFrame({schema.ITEM_ID: ids, schema.TITLE: [f"Movie {i}" for i in ids],
                         schema.GENRES: "Drama|Comedy",
                         schema.TEXT: [f"Movie {i} drama" for i in ids]})


def make_users(n: int = N_USERS) -> pd.DataFrame:
    return pd.DataFrame({schema.USER_ID: np.arange(1, n + 1)})


def make_interactions(n: int = 300, seed: int = 0, start: str = "2024-01-01",
                      ratings: np.ndarray | None = None) -> pd.DataFrame:
    """Valid events: distinct (user, item, time) triples, ratings on MovieLens' 0.5 scale."""
    rng = np.random.default_rng(seed)
    scale = np.arange(0.5, 5.01, 0.5)
    return pd.DataFrame({
        schema.USER_ID: rng.integers(1, N_USERS + 1, n),
        schema.ITEM_ID: rng.integers(1, N_ITEMS + 1, n),
        schema.RATING: (ratings if ratings is not None else rng.choice(scale, n)).astype("float32"),
        schema.EVENT_TYPE: "rating",
        # one event per minute: (user, item, time) is unique by construction
        schema.EVENT_TIMESTAMP: pd.Timestamp(start, tz="UTC") + pd.to_timedelta(
            np.arange(n) * 60 + 60 * 60 * 24 * seed, unit="s"),
    })


def stage_raw(staging: Path, frames: dict[str, pd.DataFrame], staged_id: str,
              source: str = SOURCE) -> str:
    """A staged batch written as the stager writes it, but with frames as they are (unconformed)."""
    d = staging / staged_id
    d.mkdir(parents=True)
    for name, df in frames.items():
        df.to_parquet(d / f"{name}.parquet", index=False)
    (d / "manifest.json").write_text(json.dumps({
        "id": staged_id, "source": source, "rows": {n: len(f) for n, f in frames.items()}}))
    return staged_id


def parquet_rows(folder: Path) -> dict[str, int]:
    return {p.stem: len(pd.read_parquet(p)) for p in folder.glob("*.parquet")}
