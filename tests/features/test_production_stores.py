"""The production variant for real: Redis online store + PostgreSQL (SQL) registry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from recops.features import feast_online, feast_store
from recops.features import featurize as f
from tests.features.conftest import MAX_LEN, fill_lake, fresh_settings, make_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def scratch_db(postgres_dsn: str):
    """A database of its own: nothing this test registers can touch anyone else's."""
    import psycopg

    name = f"recops_feat_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_redis_online_and_postgres_registry(tmp_path, redis_url, scratch_db):
    settings = fresh_settings(tmp_path / "home", **{
        "stores.online": "redis", "stores.redis_url": redis_url,
        "stores.registry": "postgres", "stores.postgres_dsn": scratch_db})
    assert feast_store.yaml_file(settings).name == "feature_store.production.yaml"
    events = make_events()
    f.build_sources(settings, fill_lake(settings, events), text_vectors=False)
    feast_store.apply(settings)
    try:
        end = datetime.now(UTC)
        feast_store.materialize(settings, end)
        store = feast_store.get_store(settings)
        assert type(store.registry).__name__ == "SqlRegistry"
        # The watermark is in PostgreSQL: a fresh store (another process, say) sees it.
        again = feast_store.materialize(settings, end)
        assert {v["action"] for v in again["views"].values()} == {"up to date"}

        users = sorted(events.user_id.unique())[:4]
        online = feast_online.online_features(store, users)
        last = events.groupby("user_id").event_timestamp.max().loc[users]
        batch = f.history_asof(events, pd.DataFrame({"user_id": users,
                               "event_timestamp": last.to_numpy()}), MAX_LEN, strict=False)
        assert online.recent_items.tolist() == batch.recent_items.tolist()

        ts = pd.Timestamp(end) + pd.Timedelta(seconds=1)
        feast_online.push_event(store, {"user_id": users[0], "item_id": 44, "event_timestamp": ts})
        assert feast_online.online_sequences(store, [users[0]])[0][-1] == 44
    finally:
        feast_store.teardown(settings)
    assert feast_store.get_store(settings).list_feature_views() == []
