"""SequenceData: inputs, targets and masks in index space; clear errors on malformed frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.errors import DataError
from recops.training.sequences import ItemIndex, SequenceData
from recops.training.splits import labelled_frame


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "t"])
    df["event_timestamp"] = pd.to_datetime(df.pop("t"), unit="s", utc=True)
    return df


ITEMS = pd.DataFrame({"item_id": [40, 10, 20, 30, 50], "title": list("edbca")})


def test_inputs_targets_and_seen_items() -> None:
    ev = _events([(1, 10, 1), (1, 20, 2), (1, 30, 3), (1, 40, 4), (2, 50, 1), (2, 10, 2)])
    data = SequenceData.from_interactions(ev, ITEMS, max_len=2)
    idx = data.index
    assert idx.item_ids.tolist() == [10, 20, 30, 40, 50]  # sorted: row i-1 is index i
    assert data.items.item_id.tolist() == [10, 20, 30, 40, 50]
    assert data.eval_users.tolist() == [1] and data.train_users.tolist() == [1, 2]
    # valid = 30, test = 40; inputs are the last max_len items before each label.
    assert idx.to_ids(data.valid_inputs[0]).tolist() == [10, 20]
    assert idx.to_ids([data.valid_targets[0]]).tolist() == [30]
    assert idx.to_ids(data.test_inputs[0]).tolist() == [20, 30]
    # with interactions the mask holds the whole train history, not only the last max_len.
    assert sorted(idx.to_ids(data.test_seen[0]).tolist()) == [10, 20, 30]
    # a train-only user trains on their whole history, label included.
    assert idx.to_ids(data.train_seqs[1]).tolist() == [50, 10]
    assert data.segments["activity"].tolist() == ["<20"]


def test_subset_and_reindex_keep_meaning() -> None:
    ev = _events([(u, (u + j) % 5 * 10 + 10, j) for u in range(1, 5) for j in range(5)])
    data = SequenceData.from_interactions(ev, ITEMS, max_len=5)
    part = data.subset([2, 3])
    assert part.eval_users.tolist() == [2, 3] and part.n_items == data.n_items
    new = data.index.extend([99, 10])
    assert new.n_items == 6 and new.to_index([99]).tolist() == [6]
    moved = data.reindexed(ItemIndex(np.array([50, 40, 30, 20, 10, 99])))
    for a, b in zip(data.test_inputs, moved.test_inputs, strict=True):
        assert data.index.to_ids(a).tolist() == moved.index.to_ids(b).tolist()
    assert moved.items.item_id.tolist() == [50, 40, 30, 20, 10, 99]


def test_malformed_labelled_frames_are_refused() -> None:
    ev = _events([(1, 10, 1), (1, 20, 2), (1, 30, 3)])
    good = labelled_frame(ev, 5)
    with pytest.raises(DataError, match="missing column"):
        SequenceData.from_labelled(good.drop(columns="recent_items"), ITEMS)
    with pytest.raises(DataError, match="empty"):
        SequenceData.from_labelled(good.iloc[:0], ITEMS)
    with pytest.raises(DataError, match="unknown split"):
        SequenceData.from_labelled(good.assign(split="holdout"), ITEMS)
    with pytest.raises(DataError, match="without a test row"):
        SequenceData.from_labelled(good[good.split == "valid"], ITEMS)
    with pytest.raises(DataError, match=r"item ids \[77\] are not in the items table"):
        SequenceData.from_labelled(good.assign(item_id=77), ITEMS)
    with pytest.raises(DataError, match="items table"):
        SequenceData.from_labelled(good, ITEMS.iloc[:0])
