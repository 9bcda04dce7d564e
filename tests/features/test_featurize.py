"""The feature definitions in features.featurize, checked against brute force (no Feast here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.config_events import EventSettings
from recops.core.roles import NEGATIVE, POSITIVE, resolve_one, with_roles
from recops.errors import FeatureError
from recops.features import featurize as f
from recops.features.feast_online import updated_user_row
from tests.features.conftest import MAX_LEN, fill_lake, fresh_settings, make_events


def brute_history(events: pd.DataFrame, user: int, t: pd.Timestamp, n: int, strict: bool,
                  role: int = POSITIVE):
    """The spec read literally: the user's events of ``role`` (data.event_roles' default table)
    before (or at) t, by (time, item), last n."""
    ev = with_roles(events, EventSettings())
    ev = ev[(ev.user_id == user) & (ev.event_role == role)]
    ev = ev[ev.event_timestamp < t] if strict else ev[ev.event_timestamp <= t]
    ev = ev.sort_values(["event_timestamp", "item_id"], kind="stable").tail(n)
    return ev.item_id.tolist(), (ev.event_timestamp.astype("int64") // 10**9).tolist()


def test_user_events_rows_hold_the_history_after_each_event_time():
    events = make_events()
    table = f.user_events_table(events, MAX_LEN).to_pandas()
    distinct = events[["user_id", "event_timestamp"]].drop_duplicates()
    assert len(table) == len(distinct)
    for row in table.itertuples():
        items, secs = brute_history(events, row.user_id, row.event_timestamp, MAX_LEN, False)
        assert list(row.recent_items) == items
        assert list(row.recent_timestamps) == secs
        blocked, _ = brute_history(events, row.user_id, row.event_timestamp, 200, False, NEGATIVE)
        assert list(row.blocked_items) == blocked
        upto = events[(events.user_id == row.user_id)
                      & (events.event_timestamp <= row.event_timestamp)]
        assert row.interaction_count == len(upto)
        assert row.rating_count == upto.rating.notna().sum()
        if row.rating_count:
            assert row.mean_rating == pytest.approx(upto.rating.mean(), rel=1e-6)
        else:
            assert pd.isna(row.mean_rating)
        assert row.days_active == upto.event_timestamp.dt.floor("D").nunique()
        assert row.last_event_ts == row.event_timestamp.timestamp()


def test_same_second_ties_are_ordered_by_item_id():
    t = pd.Timestamp("2012-01-01 10:00", tz="UTC")
    events = pd.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [9, 2, 5, 7],
                           "rating": np.float32([1, 2, 3, 4]), "event_type": "view",
                           "event_timestamp": [t, t, t, t - pd.Timedelta(hours=1)]})
    table = f.user_events_table(events, 3).to_pandas()
    assert len(table) == 2  # one row per distinct event time
    assert list(table.iloc[-1].recent_items) == [2, 5, 9]
    assert list(table.iloc[0].recent_items) == [7]


@pytest.mark.parametrize("strict", [True, False])
def test_history_asof_matches_brute_force(strict: bool):
    events = make_events(seed=3)
    rng = np.random.default_rng(0)
    labels = (events.sample(60, random_state=1)[["user_id", "event_timestamp"]]
              .reset_index(drop=True))
    # Shift some label times off the event grid and add a user with no events at all.
    labels.loc[::3, "event_timestamp"] += pd.to_timedelta(rng.integers(1, 5000, 20), unit="s")
    labels.loc[len(labels)] = [999, pd.Timestamp("2012-03-05", tz="UTC")]
    got = f.history_asof(events, labels, MAX_LEN, strict=strict)
    for row in got.itertuples():
        items, secs = brute_history(events, row.user_id, row.event_timestamp, MAX_LEN, strict)
        assert row.recent_items == items and row.recent_timestamps == secs


def test_item_popularity_windows_match_brute_force():
    events = make_events(seed=5)
    stats = f.item_stats_table(events).to_pandas()
    assert len(stats) == len(events[["item_id", "event_timestamp"]].drop_duplicates())
    for row in stats.sample(40, random_state=0).itertuples():
        ev = events[(events.item_id == row.item_id)
                    & (events.event_timestamp <= row.event_timestamp)]
        for col, days in f.POPULARITY_WINDOWS_DAYS.items():
            lo = row.event_timestamp - pd.Timedelta(days=days)
            assert getattr(row, col) == (ev.event_timestamp > lo).sum(), col
        assert row.pop_all == len(ev)
        assert row.item_rating_count == ev.rating.notna().sum()
        if row.item_rating_count:
            assert row.item_mean_rating == pytest.approx(ev.rating.mean(), rel=1e-6)


def test_pushing_events_in_order_reproduces_the_batch_rows():
    """The real-time update (push path) is the batch definition applied one event at a time."""
    events = make_events(seed=11)
    batch = f.user_events_table(events, MAX_LEN).to_pandas()
    for user in (1, 2, 5):
        ev = events[events.user_id == user].sort_values(["event_timestamp", "item_id"])
        state: dict = {}
        for e in ev.itertuples():
            r = None if pd.isna(e.rating) else float(e.rating)
            role, _ = resolve_one(e.event_type, r, EventSettings())
            state = updated_user_row(state, e.item_id, e.event_timestamp, r, MAX_LEN, role)
        last = batch[batch.user_id == user].iloc[-1]
        for col in (*f.USER_SEQUENCE_FEATURES, f.INTERACTION_COUNT, f.RATING_COUNT,
                    f.DAYS_ACTIVE, f.LAST_EVENT_TS):
            assert list(np.atleast_1d(state[col])) == list(np.atleast_1d(last[col])), col
        assert state[f.MEAN_RATING] == pytest.approx(float(last[f.MEAN_RATING]), rel=1e-5)


def test_build_sources_writes_manifest_and_files(tmp_path):
    settings = fresh_settings(tmp_path / "home")
    events = make_events()
    manifest = f.build_sources(settings, fill_lake(settings, events), text_vectors=False)
    assert f.read_manifest(settings) == manifest
    assert manifest["interactions"] == len(events)
    assert manifest["text_embedding"] == "disabled"
    content = pd.read_parquet(manifest["sources"][f.ITEM_CONTENT_FILE]["path"])
    # Items never interacted with are stamped at build time, the others at first sight.
    first = events.groupby("item_id").event_timestamp.min()
    seen = content[content.item_id.isin(first.index)]
    assert (seen.event_timestamp.to_numpy() == first.loc[seen.item_id].to_numpy()).all()
    assert content[f.TEXT_EMBEDDING].isna().all()


def test_build_sources_on_an_empty_lake_says_to_ingest(tmp_path):
    from recops.core.lake import Lake

    settings = fresh_settings(tmp_path / "home")
    with pytest.raises(FeatureError, match="recops ingest"):
        f.build_sources(settings, Lake(settings.paths.lake), text_vectors=False)


def test_missing_sources_are_a_feature_error(tmp_path):
    settings = fresh_settings(tmp_path / "home")
    with pytest.raises(FeatureError, match="recops features build"):
        f.read_manifest(settings)
    manifest = f.build_sources(settings, fill_lake(settings, make_events()), text_vectors=False)
    (f.sources_dir(settings) / f.USER_EVENTS_FILE).unlink()
    with pytest.raises(FeatureError, match=f.USER_EVENTS_FILE):
        f.read_manifest(settings)
    assert manifest["sources"][f.USER_EVENTS_FILE]["rows"] > 0


def test_text_vectors_must_align_with_items():
    items = pd.DataFrame({"item_id": [1, 2], "genres": ["a", "b"]})
    with pytest.raises(FeatureError, match="3 rows for 2 items"):
        f.item_content_table(items, make_events().iloc[:0], np.zeros((3, 4), np.float32),
                             pd.Timestamp("2020-01-01", tz="UTC").to_pydatetime())


@pytest.mark.integration
def test_item_content_carries_the_text_embedding(tmp_path):
    """The real sentence encoder: one unit-length 384-float vector per item, in item order."""
    settings = fresh_settings(tmp_path / "home")
    manifest = f.build_sources(settings, fill_lake(settings, make_events()))
    assert manifest["text_embedding"] == "all-MiniLM-L6-v2"
    content = pd.read_parquet(manifest["sources"][f.ITEM_CONTENT_FILE]["path"])
    vectors = np.stack(content[f.TEXT_EMBEDDING].to_numpy())
    assert vectors.shape == (len(content), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    # Items 1 and 3 share their genres but not their titles: different vectors.
    assert not np.allclose(vectors[0], vectors[2])
