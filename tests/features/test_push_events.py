"""A batch of feedback events folded into the online store with one read and one push equals
the batch definition over the same events (what pushing them one by one gives)."""

from __future__ import annotations

import pandas as pd
import pytest

from recops.config_events import EventSettings
from recops.core.roles import with_roles
from recops.errors import FeatureError
from recops.features import feast_online
from recops.features import featurize as f
from tests.features.conftest import MAX_LEN, NEW_USER, PUSH_USERS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("applied", [("sqlite", "duckdb")], indirect=True, ids=["sqlite"])
def test_one_batch_for_several_users_equals_the_batch_definition(applied, monkeypatch):
    store = applied.store
    t = pd.Timestamp(applied.end) + pd.Timedelta(seconds=5)
    known = PUSH_USERS[1]
    events = [
        {"user_id": known, "item_id": 42, "event_timestamp": t, "rating": 4.5},
        {"user_id": NEW_USER + 7, "item_id": 7, "event_timestamp": t},
        {"user_id": known, "item_id": 43, "event_timestamp": t + pd.Timedelta(seconds=1)},
        # A negative (data.event_roles): blocked, never in the sequence; counted in the statistics.
        {"user_id": known, "item_id": 44, "event_timestamp": t + pd.Timedelta(seconds=2),
         "event_type": "dislike"},
        # Late (older than the one before it) for the new user: inserted in time order.
        {"user_id": NEW_USER + 7, "item_id": 9, "event_timestamp": t - pd.Timedelta(minutes=1)},
    ]
    # One read and one write per user view for the whole batch, whatever its users.
    online = store.provider.online_store
    reads, writes = [], []
    real_read, real_write = online.online_read, online.online_write_batch
    monkeypatch.setattr(online, "online_read",
                        lambda *a, **kw: (reads.append(a[1].name), real_read(*a, **kw))[1])
    monkeypatch.setattr(online, "online_write_batch",
                        lambda *a, **kw: (writes.append(a[1].name), real_write(*a, **kw))[1])
    rows = feast_online.push_events(store, events)
    views = sorted([f.USER_RECENT_VIEW, f.USER_STATS_VIEW])
    assert (sorted(reads), sorted(writes)) == (views, views) and len(rows) == 2
    monkeypatch.undo()
    got = feast_online.online_features(store, [known, NEW_USER + 7]).set_index("user_id")
    assert got.loc[NEW_USER + 7].recent_items == [9, 7]
    assert got.loc[NEW_USER + 7].interaction_count == 2
    ev = pd.concat([applied.events, pd.DataFrame(
        [{"event_type": "rating" if e.get("rating") else "view", **e} for e in events
         if e["user_id"] == known])])
    roles = with_roles(ev.astype(applied.events.dtypes), EventSettings(), drop_ignored=True)
    batch = f.user_events_table(roles, MAX_LEN).to_pandas()
    mine = batch[batch.user_id == known].iloc[-1]
    assert got.loc[known].recent_items == list(mine.recent_items)
    assert 44 not in got.loc[known].recent_items and 44 in got.loc[known].blocked_items
    assert got.loc[known].blocked_items == list(mine.blocked_items)
    assert got.loc[known].interaction_count == mine.interaction_count
    assert got.loc[known].mean_rating == pytest.approx(mine.mean_rating, rel=1e-5)


@pytest.mark.parametrize("applied", [("sqlite", "duckdb")], indirect=True, ids=["sqlite"])
def test_one_bad_event_refuses_the_whole_batch_before_anything_is_written(applied):
    good = {"user_id": NEW_USER + 8, "item_id": 1, "event_timestamp": applied.end}
    with pytest.raises(FeatureError, match="not a timestamp"):
        feast_online.push_events(applied.store, [good, {**good, "event_timestamp": "later"}])
    assert not feast_online.online_features(applied.store, [NEW_USER + 8]).found.iloc[0]
    assert feast_online.push_events(applied.store, []) == []
