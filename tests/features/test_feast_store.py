"""Feast for real, the same tests over the SQLite and the Redis online store, and over the
DuckDB and the file offline store."""

from __future__ import annotations

import pandas as pd
import pytest

from recops.errors import FeatureError
from recops.features import feast_online, feast_store
from recops.features import featurize as f
from tests.features.conftest import MAX_LEN, NEW_USER, PUSH_USERS

pytestmark = pytest.mark.integration

ONE_US = pd.Timedelta(microseconds=1)


def _labels(events: pd.DataFrame) -> pd.DataFrame:
    """Labels at event times (so same-second siblings and later rows exist), some off-grid."""
    labels = (events[~events.user_id.isin(PUSH_USERS)]
              .sample(50, random_state=2)[["user_id", "item_id", "event_timestamp"]]
              .reset_index(drop=True))
    labels.loc[::4, "event_timestamp"] += pd.Timedelta(minutes=30)
    labels["split"] = "test"
    return labels


def test_feast_runs_the_stores_the_settings_name(applied):
    config = applied.store.config
    stores = applied.settings.stores
    assert (config.online_store.type, config.offline_store.type) == (stores.online, stores.offline)


def test_historical_rows_are_point_in_time_correct(applied):
    labels = _labels(applied.events)
    got = feast_store.historical_sequences(applied.settings, labels)
    # The labels come back whole and in order, with the features added.
    pd.testing.assert_frame_equal(got[labels.columns], labels)
    ev = applied.events
    for row in got.itertuples():
        # Nothing at or after the label's time reaches its row (same-second siblings included).
        assert all(t < row.event_timestamp.timestamp() for t in row.recent_timestamps)
        before = ev[(ev.user_id == row.user_id) & (ev.event_timestamp < row.event_timestamp)]
        assert (0 if pd.isna(row.interaction_count) else row.interaction_count) == len(before)
    expected = f.history_asof(ev, labels, MAX_LEN)
    assert got.recent_items.tolist() == expected.recent_items.tolist()
    assert got.recent_timestamps.tolist() == expected.recent_timestamps.tolist()


def test_retrieval_in_small_chunks_gives_the_same_rows(applied):
    """Chunks cut at user boundaries: a user's labels never straddle two Feast calls."""
    labels = _labels(applied.events)
    whole = feast_store.historical_sequences(applied.settings, labels)
    chunked = feast_store.historical_sequences(applied.settings, labels, chunk_rows=7)
    pd.testing.assert_frame_equal(whole, chunked)


def test_a_label_before_any_history_gets_an_empty_sequence(applied):
    ev = applied.events
    user = int(ev.user_id.iloc[0])
    first = ev[ev.user_id == user].event_timestamp.min()
    labels = pd.DataFrame({"user_id": [user, 77_777], "event_timestamp": [first, first]})
    got = feast_store.historical_sequences(applied.settings, labels)
    assert got.recent_items.tolist() == [[], []]
    assert got.interaction_count.isna().all()


def test_online_equals_historical_for_the_same_user_and_time(applied):
    """Train/serve consistency: both paths give the same values, and the batch definition's."""
    users = [u for u in sorted(applied.events.user_id.unique()) if u not in PUSH_USERS]
    online = feast_online.online_features(applied.store, users)
    assert online.found.all()
    last = applied.events.groupby("user_id").event_timestamp.max().loc[users]
    at = pd.DataFrame({"user_id": users, "event_timestamp": last.to_numpy() + ONE_US})
    hist = feast_store.historical_sequences(applied.settings, at)
    for col in (*f.USER_SEQUENCE_FEATURES, *f.USER_STAT_FEATURES):
        assert online[col].tolist() == hist[col].tolist(), col
    batch = f.history_asof(applied.events, at.assign(event_timestamp=last.to_numpy()), MAX_LEN,
                           strict=False)
    assert online.recent_items.tolist() == batch.recent_items.tolist()


def test_unknown_user_reads_as_not_found(applied):
    got = feast_online.online_features(applied.settings, [NEW_USER + 1])
    assert not got.found.iloc[0]
    assert got.recent_items.iloc[0] == []
    assert feast_online.online_sequences(applied.store, [NEW_USER + 1]) == [[]]


def test_materialising_twice_changes_nothing(applied):
    users = sorted(applied.events.user_id.unique())
    before = feast_online.online_features(applied.store, users)
    marks = feast_store.watermarks(applied.store)
    again = feast_store.materialize(applied.settings, applied.end)
    assert {v["action"] for v in again["views"].values()} == {"up to date"}
    later = feast_store.materialize(applied.settings)  # a later end: incremental, no new rows
    assert {v["action"] for v in later["views"].values()} == {"incremental"}
    after = feast_online.online_features(feast_store.get_store(applied.settings), users)
    pd.testing.assert_frame_equal(before, after)
    new_marks = feast_store.watermarks(feast_store.get_store(applied.settings))
    assert all(new_marks[v] > marks[v] for v in marks)


def test_a_pushed_event_is_visible_to_the_next_online_read(applied):
    user = PUSH_USERS[0]
    held = feast_online.online_features(applied.store, [user]).iloc[0]
    ts = pd.Timestamp(applied.end) + pd.Timedelta(seconds=5)
    event = {"user_id": user, "item_id": 42, "event_timestamp": ts, "rating": 4.5}
    feast_online.push_event(applied.store, event)
    now = feast_online.online_features(applied.store, [user]).iloc[0]
    assert now.recent_items == (held.recent_items + [42])[-MAX_LEN:]
    assert now.interaction_count == held.interaction_count + 1
    # The same as the batch definition over the events plus this one.
    ev = pd.concat([applied.events, pd.DataFrame([{**event, "event_type": "rating"}])])
    batch = f.user_events_table(ev.astype(applied.events.dtypes), MAX_LEN).to_pandas()
    mine = batch[batch.user_id == user].iloc[-1]
    assert now.recent_items == list(mine.recent_items)
    assert now.days_active == mine.days_active
    assert now.mean_rating == pytest.approx(mine.mean_rating, rel=1e-5)


def test_push_for_a_new_user_and_a_late_event(applied):
    """A first event creates the user; an older event that arrives late is not dropped."""
    t = pd.Timestamp(applied.end) + pd.Timedelta(minutes=10)
    feast_online.push_event(applied.settings, {"user_id": NEW_USER, "item_id": 7,
                                              "event_timestamp": t.isoformat()})
    feast_online.push_event(applied.store, {"user_id": NEW_USER, "item_id": 9,
                                           "event_timestamp": t - pd.Timedelta(minutes=1)})
    row = feast_online.online_features(applied.store, [NEW_USER]).iloc[0]
    assert row.found and row.recent_items == [9, 7] and row.interaction_count == 2
    assert pd.isna(row.mean_rating) and row.days_active == 1


@pytest.mark.parametrize("event, match", [
    ({"user_id": 1, "item_id": 2}, "lacks"),
    ({"user_id": "abc", "item_id": 2, "event_timestamp": "2020-01-01"}, "integers"),
    ({"user_id": 1, "item_id": 2, "event_timestamp": "not a time"}, "not a timestamp"),
    ({"user_id": 1, "item_id": 2, "event_timestamp": "2020-01-01", "rating": "x"}, "rating"),
])
def test_bad_events_are_refused_before_anything_is_written(applied, event, match):
    with pytest.raises(FeatureError, match=match):
        feast_online.push_event(applied.store, event)


@pytest.mark.parametrize("labels, match", [
    (pd.DataFrame({"user_id": [1]}), "lack"),
    (pd.DataFrame({"user_id": [1, None], "event_timestamp": ["2012-03-02", "2012-03-02"]}), "null"),
    (pd.DataFrame({"user_id": ["u1"], "event_timestamp": ["2012-03-02"]}), "integer"),
    (pd.DataFrame({"user_id": [1], "event_timestamp": ["yesterday-ish"]}), "timestamps"),
])
def test_bad_labels_are_a_feature_error(applied, labels, match):
    with pytest.raises(FeatureError, match=match):
        feast_store.historical_sequences(applied.settings, labels)


def test_online_read_refuses_non_integer_ids(applied):
    with pytest.raises(FeatureError, match="integers"):
        feast_online.online_features(applied.store, ["7"])
