"""The same real-time loop with Feast's Redis online store (keys namespaced per test project)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import require_service
from tests.serving.conftest import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def redis_server(world, tmp_path_factory):
    """The session's world (lake, sources, models) served from its own Redis-backed project."""
    require_service("Redis", "127.0.0.1", 6379)
    from recops.config import load_settings
    from recops.features import feast_store

    settings = load_settings(overrides={
        "home": world.settings.home, "model.max_len": 20, "stores.online": "redis",
        "stores.redis_url": "127.0.0.1:6379",
        "stores.feast_project": "t" + uuid.uuid4().hex[:10]})
    feast_store.apply(settings)
    try:
        feast_store.materialize(settings)
        srv = start_server(settings, tmp_path_factory.mktemp("logs") / "bentoml.log")
        yield world, srv
        srv.stop()
    finally:
        feast_store.teardown(settings)  # drop this project's keys from the shared Redis


def test_feedback_then_recommend_reflects_it_with_redis(redis_server):
    world, srv = redis_server
    counts = world.positives.user_id.value_counts()
    user = int(counts.index[-1])  # the lightest user: history below max_len, so it grows by one
    assert counts.iloc[-1] < 20
    before = httpx.post(srv.url + "/recommend", json={"user_id": user, "k": 10}, timeout=30).json()
    assert before["fallback"] is None and before["history_size"] > 0
    item = before["items"][0]["item_id"]  # the top recommendation, not yet seen
    r = httpx.post(srv.url + "/feedback", json={"user_id": user, "item_id": item,
                                                "event_type": "purchase"}, timeout=30)
    assert r.status_code == 200 and r.json()["online"], r.text
    after = httpx.post(srv.url + "/recommend", json={"user_id": user, "k": 10}, timeout=30).json()
    assert item not in [it["item_id"] for it in after["items"]]
    assert after["history_size"] == before["history_size"] + 1
