"""Event roles at serving, against a real `bentoml serve` (two workers) on the SQLite and the
Redis online store: a dislike keeps its item out of that user's lists from the next request on,
durably (a restarted service still keeps it out), and does not raise the ranks of the item's
nearest neighbours; a purchase does raise them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import require_service
from tests.serving.conftest import World, build_world, meta, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
K = 100  # serving.max_k: the whole list of a user's unseen items (the world has 120)


@dataclass
class Served:
    world: World
    server: Any
    log: Path

    def restart(self) -> None:
        self.server.stop()
        self.server = start_server(self.world.settings, self.log)


def itemknn_champion(world: World) -> str:
    """An item-item model fitted on the world's positives, promoted: a user's score for j is
    the sum of j's similarity to their items, so the effect of one more item is known."""
    from recops.core.roles import split_roles
    from recops.release import registry
    from recops.training.models import create_model, make_checkpoint
    from recops.training.sequences import ItemIndex

    ids = sorted(int(i) for i in world.items.item_id)
    index = ItemIndex(np.asarray(ids))
    pos = split_roles(world.interactions, world.settings.data.event_roles).positives
    seqs = [index.to_index(g.sort_values("event_timestamp").item_id.to_numpy())
            for _, g in pos.groupby("user_id")]
    args = {"max_len": 20, "d_model": 8, "neighbours": 50}
    model = create_model("itemknn", len(ids), args)
    model.fit_sequences(seqs)
    tag = registry.register(world.settings, make_checkpoint(
        model, ids, model_settings=args, train_settings={"seed": 0}), meta("knn"))
    registry.promote(world.settings, tag)
    return tag


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, tmp_path_factory):
    online = request.param
    redis_url = None
    if online == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        redis_url = "127.0.0.1:6379"
    home = tmp_path_factory.mktemp(f"roles-{online}") / "home"
    world = build_world(home, online=online, redis_url=redis_url, **{"serving.workers": 2})
    itemknn_champion(world)
    log = tmp_path_factory.mktemp("logs") / "bentoml.log"
    got = Served(world, start_server(world.settings, log), log)
    yield got
    got.server.stop()
    if online == "redis":
        from recops.features import feast_store

        feast_store.teardown(world.settings)  # drop this project's keys from the shared Redis


def ranking(served: Served, user: int, **body: Any) -> dict[int, float]:
    """The user's list as {item: score}, best first."""
    r = httpx.post(served.server.url + "/recommend", json={"user_id": user, "k": K, **body},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is None
    return {int(i["item_id"]): float(i["score"]) for i in r.json()["items"]}


def rank(scores: dict[int, float], item: int) -> int:
    """An item's rank by score (how many listed items score strictly higher; ties share it)."""
    if item not in scores:
        return len(scores)
    return sum(v > scores[item] for v in scores.values())


def neighbours(served: Served, item: int, n: int = 5) -> list[int]:
    r = httpx.post(served.server.url + "/similar", json={"item_id": item, "k": n}, timeout=30)
    assert r.status_code == 200, r.text
    return [int(i["item_id"]) for i in r.json()["items"]]


def feedback(served: Served, user: int, item: int, event_type: str) -> dict[str, Any]:
    r = httpx.post(served.server.url + "/feedback", json={
        "user_id": user, "item_id": item, "event_type": event_type,
        "event_id": uuid.uuid4().hex}, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["accepted"] and out["online"]
    return out


def target(before: dict[int, float], served: Served) -> tuple[int, list[int]]:
    """An item in the middle of the list, and those of its nearest neighbours listed below the
    top (room to rise)."""
    for item in list(before)[10:40]:
        near = [n for n in neighbours(served, item) if n in before and rank(before, n) > 0]
        if len(near) >= 3:
            return item, near
    raise AssertionError("no listed item has 3 listed neighbours")


def users(served: Served) -> list[int]:
    return sorted(int(u) for u in served.world.interactions.user_id.unique())


def test_a_dislike_keeps_the_item_out_and_does_not_raise_its_neighbours(served):
    user = users(served)[0]
    before = ranking(served, user)
    item, near = target(before, served)
    assert feedback(served, user, item, "dislike")["role"] == "negative"
    after = ranking(served, user)  # the next request, on whichever worker answers
    assert item not in after
    assert item not in ranking(served, user, exclude_seen=False)  # blocked, not only "seen"
    # The sequence did not take the disliked item: every other item keeps its score, so no
    # neighbour's rank rose (the disliked item above them left the list; nothing else moved).
    rest = {i: v for i, v in before.items() if i != item}
    assert {i: after[i] for i in rest if i in after} == {i: rest[i] for i in rest if i in after}
    assert all(rank(after, n) >= rank(rest, n) for n in near)
    served.restart()  # durable: the online store holds it, not a worker's memory
    assert item not in ranking(served, user)


def test_a_purchase_raises_the_ranks_of_its_neighbours(served):
    user = users(served)[2]
    before = ranking(served, user)
    item, near = target(before, served)
    assert feedback(served, user, item, "purchase")["role"] == "positive"
    after = ranking(served, user)
    assert item not in after  # seen now
    rest = {i: v for i, v in before.items() if i != item}
    old = [rank(rest, n) for n in near]
    new = [rank(after, n) for n in near]
    assert np.mean(new) < np.mean(old), (old, new)
    assert any(b < a for a, b in zip(old, new, strict=True))
