"""/feedback over HTTP against a real `bentoml serve`: group commit, read-your-writes, retries."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from recops.core.feedback import FeedbackLog

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE_USER = 880_000_000  # not in the data


def post(server, path, body):
    return httpx.post(server.url + path, json=body, timeout=30)


async def post_all(url: str, bodies: list[dict], concurrency: int) -> list[httpx.Response]:
    """Send every body, ``concurrency`` requests in flight at a time."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(b: dict) -> httpx.Response:
            async with sem:
                return await c.post("/feedback", json=b)
        return list(await asyncio.gather(*(one(b) for b in bodies)))


def commits(server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(float(v) for v in re.findall(r"^recops_feedback_commits_total(?:\{[^}]*\})? (\S+)",
                                            text, re.M))


def test_concurrent_events_share_commits_and_the_next_recommend_sees_them(server, world):
    log = FeedbackLog(world.settings.paths.feedback)
    _, start = log.read()
    commits_before = commits(server)
    items = [int(i) for i in world.items.item_id[:24]]
    users = [BASE_USER + u for u in range(8)]
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    bodies = [{"user_id": users[n % 8], "item_id": items[n % 24], "event_type": "view",
               "timestamp": (t0 + timedelta(seconds=n)).isoformat()} for n in range(96)]
    concurrency = 32
    got = asyncio.run(post_all(server.url, bodies, concurrency))
    assert [r.status_code for r in got] == [200] * 96, [r.text for r in got if r.is_error][:3]
    assert all(r.json()["accepted"] and r.json()["online"] for r in got)
    assert not any(r.json()["duplicate"] for r in got)
    rows, _ = log.read(start)
    assert len(rows) == 96  # every acknowledged event is in the log, once
    assert sorted({r.json()["offset"] for r in got}) == sorted(
        start + o for o in _offsets(log, start))
    # Group commit: a write takes only events waiting at once (at most the requests in flight,
    # at most feedback.max_batch), so no fewer writes than that allows; and concurrent events
    # shared writes: fewer writes than events.
    used = commits(server) - commits_before
    per_write = min(concurrency, world.settings.feedback.max_batch)
    assert math.ceil(len(bodies) / per_write) <= used < len(bodies), used
    # Read-your-writes: each user's next /recommend sees all 12 of their events.
    for u in users:
        body = post(server, "/recommend", {"user_id": u, "k": 5}).json()
        assert body["fallback"] is None and body["history_size"] == 12
        mine = {b["item_id"] for b in bodies if b["user_id"] == u}
        assert {it["reason"]["because_you_interacted_with"] for it in body["items"]} <= mine


def _offsets(log: FeedbackLog, start: int) -> list[int]:
    """Byte offsets (relative to ``start``) where each record after ``start`` begins."""
    data = log.path.read_bytes()[start:]
    out, pos = [], 0
    for line in data.splitlines(keepends=True):
        out.append(pos)
        pos += len(line)
    return out


def test_a_retried_event_is_stored_once_and_acknowledged_twice(server, world):
    log = FeedbackLog(world.settings.paths.feedback)
    user, item = BASE_USER + 100, int(world.items.item_id.iloc[3])
    ts = "2026-06-02T10:00:00+00:00"
    n = log.count()
    body = {"user_id": user, "item_id": item, "event_type": "click", "timestamp": ts}
    first, again = post(server, "/feedback", body), post(server, "/feedback", body)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert again.json()["offset"] == first.json()["offset"]
    assert log.count() == n + 1
    # The online store counted it once too.
    assert post(server, "/recommend", {"user_id": user}).json()["history_size"] == 1
    # With an idempotency key the key decides, whatever the timestamp (the server's clock).
    keyed = {"user_id": user, "item_id": item, "event_type": "view", "event_id": "req-42.a"}
    a, b = post(server, "/feedback", keyed), post(server, "/feedback", keyed)
    assert (a.json()["duplicate"], b.json()["duplicate"]) == (False, True)
    assert a.json()["offset"] == b.json()["offset"] and log.count() == n + 2
    # Same content under two keys is two events (the client said so).
    other = post(server, "/feedback", {**keyed, "event_id": "req-43"})
    assert other.json()["duplicate"] is False and log.count() == n + 3


def test_concurrent_retries_of_one_event_store_it_once(server, world):
    log = FeedbackLog(world.settings.paths.feedback)
    n = log.count()
    body = {"user_id": BASE_USER + 200, "item_id": int(world.items.item_id.iloc[4]),
            "event_type": "view", "event_id": "burst-1"}
    got = asyncio.run(post_all(server.url, [body] * 20, 20))
    assert [r.status_code for r in got] == [200] * 20
    assert sum(not r.json()["duplicate"] for r in got) == 1
    assert len({r.json()["offset"] for r in got}) == 1
    assert log.count() == n + 1


BAD_EVENT_IDS = [
    ("", "at least 1 character"),
    ("x" * 129, "at most 128 characters"),
    (12345, "valid string"),
    ("has space", "pattern"),
    ("naïve", "pattern"),
    (None, None),  # null is the same as leaving it out: accepted
]


@pytest.mark.parametrize(("event_id", "message"), BAD_EVENT_IDS,
                         ids=[repr(e)[:12] for e, _ in BAD_EVENT_IDS])
def test_bad_event_ids_are_a_clear_400_and_store_nothing(server, world, event_id, message):
    log = FeedbackLog(world.settings.paths.feedback)
    n = log.count()
    r = post(server, "/feedback", {"user_id": BASE_USER + 300, "item_id": 10,
                                   "event_type": "view", "event_id": event_id})
    if message is None:
        assert r.status_code == 200 and log.count() == n + 1
        return
    assert r.status_code == 400, r.text
    assert "event_id" in r.text and message in r.text
    assert log.count() == n
