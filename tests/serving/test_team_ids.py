"""The team's ids at the API, and withdrawn items never listed (engine and catalogue watch)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from pydantic import ValidationError

from recops import schema
from recops.core.idmap import IdMap, internal_id
from recops.core.lake import Lake
from recops.release import registry
from serving.availability import Availability
from serving.engine import Engine, Query
from tests.serving.conftest import make_checkpoint, meta

SKUS = [f"SKU-{i}" for i in range(40)] + ["17"]  # one integer-looking id among the text ones
IDS = sorted(internal_id(s) for s in SKUS)


def _items(**extra: list) -> pd.DataFrame:
    df = pd.DataFrame({schema.ITEM_ID: [internal_id(s) for s in SKUS],
                       schema.TITLE: [f"T {s}" for s in SKUS], schema.GENRES: "x",
                       schema.TEXT: [f"T {s}" for s in SKUS]})
    return df.assign(**extra)


@pytest.fixture
def engine(settings) -> Engine:
    items = _items()
    IdMap(settings.paths.lake, "items").add(pd.DataFrame(
        {"external_id": SKUS[:-1], "internal_id": [internal_id(s) for s in SKUS[:-1]]}))
    tag = registry.register(settings, make_checkpoint(IDS, 3), meta("r"), items=items,
                            interactions=pd.DataFrame({schema.ITEM_ID: items[schema.ITEM_ID]}))
    return Engine(registry.load(settings, tag))


@pytest.mark.integration  # the real BentoML model store
def test_answers_carry_the_team_ids_and_skip_banned_items(engine: Engine) -> None:
    history = [internal_id("SKU-1"), internal_id("SKU-2")]
    items, _ = engine.recommend(history, 45)
    ids = [it["item_id"] for it in items]
    assert set(ids) == set(SKUS[:-1]) - {"SKU-1", "SKU-2"} | {17}  # 17 stays an integer
    assert {it["reason"]["because_you_interacted_with"] for it in items} <= {"SKU-1", "SKU-2"}
    banned = [internal_id("SKU-5"), internal_id("SKU-6")]
    for exclude_seen in (True, False):  # withdrawn items go whatever exclude_seen says
        got, _ = engine.recommend_many([Query(history, 45, exclude_seen, None, banned)])[0]
        assert not {"SKU-5", "SKU-6"} & {it["item_id"] for it in got}
    popular, fallback = engine.recommend_many([Query([], 45, True, None, banned)])[0]
    assert fallback == "popular" and "SKU-5" not in {it["item_id"] for it in popular}
    near = engine.describe(engine.similar(engine.index[internal_id("SKU-1")], 45, banned))
    assert len(near) == 38 and not {"SKU-1", "SKU-5", "SKU-6"} & {i["item_id"] for i in near}


def test_availability_follows_the_lake_from_the_next_call(tmp_path) -> None:
    lake = Lake(tmp_path / "lake")
    watch = Availability(lake.root)
    assert watch.withdrawn() == []  # no catalogue yet
    now = datetime(2026, 11, 1, tzinfo=UTC)
    t = pd.Timestamp
    lake.append(schema.ITEMS, _items(
        available_until=[t("2026-10-01", tz="UTC"), t("2027-01-01", tz="UTC")] + [pd.NaT] * 39,
        available_from=[pd.NaT] * 40 + [t("2026-12-01", tz="UTC")]), "t")
    # SKU-0's window ended; "17" is not available yet; SKU-1's window is still open.
    assert watch.withdrawn(now) == sorted([internal_id("SKU-0"), 17])
    assert watch.withdrawn(datetime(2027, 2, 1, tzinfo=UTC)) == sorted(
        [internal_id("SKU-0"), internal_id("SKU-1")])
    lake.append(schema.ITEMS, _items(available=[False] * 3 + [True] * 38), "t")
    assert watch.withdrawn(now) == sorted(internal_id(s) for s in SKUS[:3])


def test_requests_take_string_or_integer_ids_and_refuse_the_rest() -> None:
    from serving.service import FeedbackRequest, RecommendRequest, SimilarRequest

    assert RecommendRequest(user_id="c-1f3a", context_items=["SKU-1", 5]).user_id == "c-1f3a"
    assert RecommendRequest(user_id=12).user_id == 12
    assert FeedbackRequest(user_id="c-1", item_id="SKU-1", event_type="view").item_id == "SKU-1"
    for bad in ("", " x", "x ", "a" * 257, 1.5, True, -1, None, ["x"]):
        with pytest.raises(ValidationError):
            SimilarRequest(item_id=bad)
