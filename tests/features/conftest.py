"""Fixtures for the features area: small event tables and one applied Feast repo per store."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import require_service

MAX_LEN = 5
# Users the push tests change online; the read-only tests leave them out.
PUSH_USERS = (3, 4)
NEW_USER = 10_001


def make_events(seed: int = 7, n_users: int = 12, n_items: int = 40, n: int = 360) -> pd.DataFrame:
    """Old (2012) events on whole hours, so many share a second; some implicit (no rating)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2012-03-01", tz="UTC")
    hours = rng.integers(0, 24 * 40, n)
    rating = rng.choice([0.5, 1.0, 2.5, 3.0, 4.0, 5.0, np.nan], n).astype("float32")
    return pd.DataFrame({
        "user_id": rng.integers(1, n_users + 1, n).astype("int64"),
        "item_id": rng.integers(1, n_items + 1, n).astype("int64"),
        "rating": rating,
        # Rated events by their rating (data.event_roles: <= 2 negative), the others views.
        "event_type": np.where(np.isnan(rating), "view", "rating"),
        "event_timestamp": start + pd.to_timedelta(hours * 3600, unit="s"),
    })


def make_items(n_items: int = 45) -> pd.DataFrame:
    ids = np.arange(1, n_items + 1)
    return pd.DataFrame({"item_id": ids, "title": [f"Movie {i}" for i in ids],
                         "genres": ["Drama|Comedy" if i % 2 else "Action" for i in ids],
                         "text": [f"Movie {i}" for i in ids]})


def fresh_settings(home: Path, **overrides: object):
    """Settings for a given home and unique project, blind to the developer's RECOPS_* env."""
    from recops.config import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("RECOPS_"):
                mp.delenv(key)
        base = {"home": str(home), "stores.feast_project": f"t{uuid.uuid4().hex[:12]}",
                "model.max_len": MAX_LEN}
        return load_settings(overrides={**base, **overrides})


def fill_lake(settings, events: pd.DataFrame):
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    lake.append("interactions", events, "test")
    lake.append("items", make_items(), "test")
    lake.append("users", pd.DataFrame({"user_id": np.arange(1, 13)}), "test")
    return lake


@dataclass
class Applied:
    settings: object
    events: pd.DataFrame
    end: datetime
    store: object


@pytest.fixture(scope="module", params=[("sqlite", "duckdb"), ("redis", "duckdb"),
                                        ("sqlite", "file")], ids="-".join)
def applied(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Sources built, `feast apply` run for real, materialised once: per (online, offline) store
    pair and module. Both online stores run with the default offline store, and the other
    offline store with the default online store."""
    from recops.features import feast_store
    from recops.features.featurize import build_sources

    online, offline = request.param
    if online == "redis":
        require_service("Redis", "127.0.0.1", 6379)
    settings = fresh_settings(tmp_path_factory.mktemp(f"feast_{online}_{offline}"),
                              **{"stores.online": online, "stores.offline": offline})
    events = make_events()
    build_sources(settings, fill_lake(settings, events), text_vectors=False)
    feast_store.apply(settings)
    end = datetime.now(UTC)
    feast_store.materialize(settings, end)
    yield Applied(settings, events, end, feast_store.get_store(settings))
    feast_store.teardown(settings)  # drop this project's keys from the shared Redis
