"""The service over HTTP, against a real `bentoml serve` and Feast's SQLite online store."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from recops.core.feedback import FeedbackLog
from recops.release import registry
from tests.serving.conftest import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NEW_USER = 987_654_321  # not in the data; distinctive enough to grep the logs for


def post(server, path, body=None, **kw):
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


def test_recommend_known_user(server, world):
    user = int(world.interactions.user_id.iloc[0])
    r = post(server, "/recommend", {"user_id": user, "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is None and body["model"] == world.tags[0]
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 7 == len(set(ids))
    history = set(world.interactions.query("user_id == @user").item_id)
    recent = set(world.interactions.query("user_id == @user")
                 .sort_values(["event_timestamp", "item_id"]).item_id.tail(20))
    assert not set(ids) & recent, "seen items must be masked"
    assert body["history_size"] == min(20, len(world.interactions.query("user_id == @user")))
    titles = dict(zip(world.items.item_id, world.items.title, strict=True))
    for it in body["items"]:
        assert it["title"] == titles[it["item_id"]]
        assert it["reason"]["because_you_interacted_with"] in history
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_popular_fallback(server, world):
    r = post(server, "/recommend", {"user_id": NEW_USER - 1, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] == "popular"
    counts = world.interactions.item_id.value_counts()
    got = [int(counts[it["item_id"]]) for it in body["items"]]
    assert got == sorted(counts.to_numpy(), reverse=True)[:5]  # the 5 most interacted with


def test_context_items_personalise_a_new_user(server, world):
    ctx = [int(i) for i in world.items.item_id[:3]]
    body = post(server, "/recommend", {"user_id": NEW_USER - 2, "k": 10,
                                       "context_items": ctx}).json()
    assert body["fallback"] == "context"
    assert not {it["item_id"] for it in body["items"]} & set(ctx)
    assert all(it["reason"]["because_you_interacted_with"] in ctx for it in body["items"])


def test_feedback_then_recommend_reflects_it(server, world):
    before = post(server, "/recommend", {"user_id": NEW_USER, "k": 5}).json()
    assert before["fallback"] == "popular" and before["history_size"] == 0
    item = before["items"][0]["item_id"]  # the most popular item
    r = post(server, "/feedback", {"user_id": NEW_USER, "item_id": item, "event_type": "click"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] and r.json()["online"]
    after = post(server, "/recommend", {"user_id": NEW_USER, "k": 5}).json()
    assert after["fallback"] is None and after["history_size"] == 1
    assert item not in [it["item_id"] for it in after["items"]]
    assert {it["reason"]["because_you_interacted_with"] for it in after["items"]} == {item}


def test_feedback_on_known_user_becomes_latest_history(server, world):
    user = int(world.interactions.user_id.iloc[1])
    item = int(world.items.item_id.iloc[-1])
    assert post(server, "/feedback", {"user_id": user, "item_id": item, "event_type": "rating",
                                      "rating": 4.5}).status_code == 200
    body = post(server, "/recommend", {"user_id": user, "k": 10}).json()
    assert item not in [it["item_id"] for it in body["items"]]
    rows, _ = FeedbackLog(world.settings.paths.feedback).read()
    last = rows.iloc[-1]
    assert (last.user_id, last.item_id, last.event_type, last.rating) == (user, item, "rating", 4.5)


def test_feedback_is_durable_under_concurrency(server, world):
    log = FeedbackLog(world.settings.paths.feedback)
    _, start = log.read()
    items = [int(i) for i in world.items.item_id[:20]]
    events = [{"user_id": 500 + n % 7, "item_id": items[n % 20], "event_type": "view"}
              for n in range(60)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda e: post(server, "/feedback", e).status_code, events))
    acked = sum(c == 200 for c in codes)
    rows, _ = log.read(start)
    assert acked == len(events) == len(rows)
    assert sorted(zip(rows.user_id, rows.item_id, strict=True)) == sorted(
        (e["user_id"], e["item_id"]) for e in events)


def test_similar(server, world):
    item = int(world.items.item_id.iloc[5])
    body = post(server, "/similar", {"item_id": item, "k": 4}).json()
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 4 and item not in ids
    assert [it["score"] for it in body["items"]] == sorted(
        (it["score"] for it in body["items"]), reverse=True)


BAD = [
    ("/recommend", {"user_id": 1, "k": 5, "mood": "happy"}, 400, "extra"),
    ("/recommend", {"user_id": 1, "k": 0}, 400, "greater than or equal to 1"),
    ("/recommend", {"user_id": 1, "k": 101}, 400, "serving.max_k"),
    # Ids are the team's: an integer or a string, but not an empty or padded one.
    ("/recommend", {"user_id": "", "k": 5}, 400, "at least 1 character"),
    ("/recommend", {"user_id": " one", "k": 5}, 400, "should match pattern"),
    ("/recommend", {"user_id": True}, 400, "valid integer"),
    ("/recommend", {"user_id": 1.5}, 400, "valid integer"),
    ("/recommend", {"user_id": -3}, 400, "greater than or equal to 0"),
    ("/recommend", {"user_id": 1, "exclude_seen": "yes"}, 400, "valid boolean"),
    ("/recommend", {"k": 5}, 400, "missing"),
    ("/recommend", {"user_id": 1, "context_items": list(range(201))}, 400, "at most 200"),
    ("/feedback", {"user_id": 1, "item_id": 10, "event_type": "stare"}, 400, "event_type"),
    ("/feedback", {"user_id": 1, "item_id": 7, "event_type": "click"}, 404, "catalogue"),
    ("/feedback", {"user_id": 1, "item_id": 10, "event_type": "rating"}, 400, "needs a rating"),
    ("/feedback", {"user_id": 1, "item_id": 10, "event_type": "rating", "rating": 9}, 400,
     "out of range"),
    ("/feedback", {"user_id": 1, "item_id": 10, "event_type": "view",
                   "timestamp": "2999-01-01T00:00:00Z"}, 400, "outside"),
    ("/feedback", {"user_id": 1, "item_id": 10, "event_type": "view", "timestamp": "soon"}, 400,
     "datetime"),
    ("/feedback", {"user_id": "c-1", "item_id": "SKU-404", "event_type": "view"}, 404,
     "'SKU-404' is not in the catalogue"),
    ("/similar", {"item_id": 7}, 404, "unknown"),
    ("/similar", {"item_id": "SKU-404"}, 404, "'SKU-404' is unknown"),
    ("/similar", {"item_id": 10, "k": 1000}, 400, "serving.max_k"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD,
                         ids=[f"{p}-{m}" for p, _, _, m in BAD])
def test_bad_input_is_a_clear_4xx_and_logs_nothing(server, world, path, body, status, message):
    log = FeedbackLog(world.settings.paths.feedback)
    n = log.count()
    r = post(server, path, body)
    assert r.status_code == status, r.text
    assert message in r.text
    assert log.count() == n


def test_malformed_json_and_oversized_body(server):
    r = httpx.post(server.url + "/recommend", content=b'{"user_id": 1,', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Invalid JSON" in r.text
    big = json.dumps({"user_id": 1, "context_items": [1] * 40_000}).encode()
    r = httpx.post(server.url + "/recommend", content=big, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.text

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(100):
            yield b" " * 1024

    r = httpx.post(server.url + "/recommend", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_metrics_count_fallbacks_and_feedback(server):
    post(server, "/recommend", {"user_id": NEW_USER - 3, "k": 2})
    text = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'recops_fallback_total{kind="popular"}' in text
    assert "recops_feedback_total" in text


def test_no_auth_when_no_token(server):
    assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
    assert post(server, "/recommend", {"user_id": 1}).status_code == 200


def test_user_ids_stay_out_of_info_logs(server):
    post(server, "/recommend", {"user_id": NEW_USER, "k": 3})
    assert str(NEW_USER) not in server.logs()


def test_promotion_is_picked_up_without_dropping_requests(server, world):
    codes: list[int] = []
    models: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(server.url + "/recommend", json={"user_id": 3, "k": 5})
                codes.append(r.status_code)
                if r.status_code == 200:
                    models.append(r.json()["model"])

    t = threading.Thread(target=hammer)
    t.start()
    try:
        time.sleep(1)
        registry.promote(world.settings, world.tags[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not models or models[-1] != world.tags[1]):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
        registry.rollback(world.settings)
    assert codes and set(codes) == {200}
    assert models[0] == world.tags[0] and models[-1] == world.tags[1]
    # Once swapped it stays swapped (no request went back to the old model).
    first_new = models.index(world.tags[1])
    assert set(models[first_new:]) == {world.tags[1]}


@pytest.fixture(scope="module")
def auth_server(world, tmp_path_factory):
    from recops.config import load_settings

    s = load_settings(world.settings.paths.resolved_config,
                      {"serving.auth_token": "s3cret-token"})
    srv = start_server(s, tmp_path_factory.mktemp("auth") / "bentoml.log")
    yield srv
    srv.stop()


def test_auth_token(auth_server):
    url = auth_server.url
    assert httpx.get(url + "/healthz", timeout=30).status_code == 200
    body = {"user_id": 1, "k": 3}
    r = httpx.post(url + "/recommend", json=body, timeout=30)
    assert r.status_code == 401 and "bearer" in r.text.lower()
    r = httpx.post(url + "/recommend", json=body, timeout=30,
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = httpx.post(url + "/feedback", json={"user_id": 1, "item_id": 10, "event_type": "view"},
                   timeout=30)
    assert r.status_code == 401
    r = httpx.post(url + "/recommend", json=body, timeout=30,
                   headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200, r.text
