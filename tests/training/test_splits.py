"""Chronological leave-last-out: right labels, ties by item id, no future leakage."""

from __future__ import annotations

import pandas as pd
import pytest

from recops.errors import DataError
from recops.training.splits import history_before, labelled_frame, leave_last_out_labels


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "t"])
    df["event_timestamp"] = pd.to_datetime(df.pop("t"), unit="s", utc=True)
    return df


def test_last_is_test_second_last_is_valid_ties_by_item_id() -> None:
    # user 1: items 7 and 3 share the last second -> order (t, item): 3 then 7 -> test is 7.
    ev = _events([(1, 5, 10), (1, 9, 20), (1, 7, 30), (1, 3, 30), (2, 1, 5), (2, 2, 6)])
    labels = leave_last_out_labels(ev)
    u1 = labels[labels.user_id == 1].set_index("split")
    assert u1.loc["test", "item_id"] == 7 and u1.loc["valid", "item_id"] == 3
    # user 2 has < 3 events: kept for training only (its last event as a train label).
    u2 = labels[labels.user_id == 2]
    assert u2.split.tolist() == ["train"] and u2.item_id.tolist() == [2]
    assert set(leave_last_out_labels(ev, train_only_rows=False).user_id) == {1}


def test_history_is_strictly_before_the_label_time() -> None:
    ev = _events([(1, 5, 10), (1, 9, 20), (1, 3, 30), (1, 7, 30), (1, 8, 40)])
    labelled = labelled_frame(ev, n=10).set_index("split")
    # valid = item 7 at t=30: its same-second sibling 3 and everything later are excluded.
    assert labelled.loc["valid", "recent_items"] == [5, 9]
    assert labelled.loc["test", "recent_items"] == [5, 9, 3, 7]
    for _, row in labelled.iterrows():
        times = ev.set_index("item_id").loc[row.recent_items, "event_timestamp"]
        assert (times < row.event_timestamp).all()


def test_history_keeps_the_last_n_most_recent_last() -> None:
    ev = _events([(1, i, i) for i in range(1, 9)])
    out = history_before(ev, pd.DataFrame({"user_id": [1], "event_timestamp":
                                           pd.to_datetime([8], unit="s", utc=True)}), n=3)
    assert out.recent_items.iloc[0] == [5, 6, 7]


def test_matches_the_feature_area_definition() -> None:
    featurize = pytest.importorskip("recops.features.featurize")
    ev = _events([(u, (u * 7 + j) % 11 + 1, j // 2) for u in range(1, 6) for j in range(9)])
    labels = leave_last_out_labels(ev)
    ours = history_before(ev, labels, n=4)
    theirs = featurize.history_asof(ev, labels, 4)
    assert ours.recent_items.tolist() == theirs.recent_items.tolist()


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(DataError, match="missing column"):
        leave_last_out_labels(pd.DataFrame({"user_id": [1], "item_id": [2]}))
    with pytest.raises(DataError, match="empty"):
        leave_last_out_labels(_events([]))
