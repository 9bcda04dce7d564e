"""Synthetic generator: deterministic, canonical, and shaped like real interaction data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.hashing import sha256_frame
from recops.data.synthetic import generate, generate_from_settings

SMALL = dict(n_users=300, n_items=600, n_interactions=30_000, n_clusters=6, days=28)


@pytest.fixture(scope="module")
def tables():
    return generate(**SMALL, seed=7)


def _hashes(t) -> dict[str, str]:
    return {name: sha256_frame(df) for name, df in t.as_dict().items()}


def test_same_seed_same_frames(tables) -> None:
    assert _hashes(generate(**SMALL, seed=7)) == _hashes(tables)


def test_other_seed_other_frames(tables) -> None:
    other = generate(**SMALL, seed=8)
    h, h2 = _hashes(tables), _hashes(other)
    assert h[schema.INTERACTIONS] != h2[schema.INTERACTIONS]
    assert h[schema.ITEMS] != h2[schema.ITEMS]
    # Not merely reordered: the item sequences themselves differ.
    assert not np.array_equal(tables.interactions[schema.ITEM_ID], other.interactions[
        schema.ITEM_ID])


def test_shape_and_schema(tables) -> None:
    inter = tables.interactions
    assert len(inter) == SMALL["n_interactions"]
    assert len(tables.users) == SMALL["n_users"] and len(tables.items) == SMALL["n_items"]
    for name, df in tables.as_dict().items():
        for col, dtype in schema.PANDAS_DTYPES[name].items():
            assert str(df[col].dtype) == dtype
            assert not df[col].isna().any()
    assert set(inter[schema.USER_ID]) <= set(tables.users[schema.USER_ID])
    assert set(inter[schema.ITEM_ID]) <= set(tables.items[schema.ITEM_ID])
    assert set(inter[schema.EVENT_TYPE]) <= set(schema.EVENT_TYPES)
    r = inter[schema.RATING]
    assert r.between(0.5, 5.0).all() and ((r * 2) % 1 == 0).all()  # half-star steps
    assert r.nunique() >= 6
    # Every user is active; activity is skewed (a few heavy users).
    per_user = inter.groupby(schema.USER_ID).size()
    assert per_user.min() >= 3 and per_user.max() > 5 * per_user.median()
    # Items carry text built from title, genres and a theme.
    assert tables.items[schema.TEXT].str.contains(". genres: ", regex=False).all()
    assert tables.items[schema.TITLE].nunique() == len(tables.items)


def test_timestamps_span_the_window_and_order_each_user(tables) -> None:
    ts = tables.interactions[schema.EVENT_TIMESTAMP]
    start = pd.Timestamp("2026-01-01", tz="UTC")
    assert ts.min() >= start
    assert ts.max() < start + pd.Timedelta(days=SMALL["days"])
    assert ts.max() - ts.min() > pd.Timedelta(days=SMALL["days"] * 0.8)
    # Strictly increasing per user: the order of a user's events never rests on a tie.
    d = tables.interactions
    diffs = d.groupby(schema.USER_ID)[schema.EVENT_TIMESTAMP].diff().dropna()
    assert (diffs > pd.Timedelta(0)).all()
    # Sessions: most gaps are minutes, some are hours or days.
    assert (diffs < pd.Timedelta(minutes=30)).mean() > 0.5
    assert (diffs > pd.Timedelta(hours=1)).mean() > 0.05


def test_long_tail_popularity(tables) -> None:
    counts = tables.interactions[schema.ITEM_ID].value_counts().to_numpy()
    top = counts[: SMALL["n_items"] // 10].sum() / counts.sum()
    assert top > 0.4  # uniform would give 0.10
    assert counts[-1] < counts[0] / 20


def test_next_item_depends_on_previous(tables) -> None:
    """A bigram predictor (learned on the first half) beats popularity on the second half."""
    d = tables.interactions  # generator order: per user, chronological
    prev = d.groupby(schema.USER_ID)[schema.ITEM_ID].shift()
    pairs = pd.DataFrame({"p": prev, "n": d[schema.ITEM_ID]}).dropna().astype("int64")
    half = len(pairs) // 2
    train, test = pairs.iloc[:half], pairs.iloc[half:]
    top = (train.groupby(["p", "n"]).size().rename("k").reset_index()
           .sort_values(["p", "k"], ascending=[True, False]).groupby("p").head(10))
    known = set(zip(top["p"], top["n"], strict=True))
    bigram_hr = np.mean([(a, b) in known for a, b in zip(test["p"], test["n"], strict=True)])
    popular = set(train["n"].value_counts().index[:10])
    pop_hr = test["n"].isin(popular).mean()
    assert bigram_hr > 2.5 * pop_hr, (bigram_hr, pop_hr)


def test_users_have_taste_clusters(tables) -> None:
    """Users concentrate on few genres: their top genre's share far exceeds a uniform taste."""
    first_genre = tables.items.set_index(schema.ITEM_ID)[schema.GENRES].str.split("|").str[0]
    g = tables.interactions[schema.ITEM_ID].map(first_genre)
    share = (pd.crosstab(tables.interactions[schema.USER_ID], g)
             .pipe(lambda x: x.max(axis=1) / x.sum(axis=1)))
    assert share.median() > 2.5 / SMALL["n_clusters"]


def test_tiny_and_degenerate_sizes() -> None:
    t = generate(n_users=50, n_items=10, n_interactions=20, n_clusters=30, days=1, seed=1)
    assert len(t.interactions) == 20 and len(t.users) == 50
    assert t.interactions[schema.ITEM_ID].between(1, 10).all()


def test_from_settings_uses_seed_and_sizes(home) -> None:
    s = load_settings(overrides={"seed": 3, "data.synthetic.n_users": 40,
                                 "data.synthetic.n_items": 50,
                                 "data.synthetic.n_interactions": 400})
    t = generate_from_settings(s)
    assert len(t.interactions) == 400 and len(t.users) == 40
    assert "seed=3" in t.source
    assert sha256_frame(t.interactions) == sha256_frame(
        generate(n_users=40, n_items=50, n_interactions=400, seed=3).interactions)


def test_start_time_naive_is_utc_and_aware_is_converted() -> None:
    from datetime import datetime, timedelta, timezone

    kw = dict(n_users=5, n_items=10, n_interactions=50, days=2, seed=1)
    naive = generate(start=datetime(2026, 5, 1), **kw).interactions[schema.EVENT_TIMESTAMP]
    aware = generate(start=datetime(2026, 5, 1, 2, tzinfo=timezone(timedelta(hours=2))),
                     **kw).interactions[schema.EVENT_TIMESTAMP]
    assert (naive == aware).all()
    assert naive.min() >= pd.Timestamp("2026-05-01", tz="UTC")
