"""Full-ranking evaluation: seen items masked, per-segment metrics, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recops.errors import DataError
from recops.training.evaluation import evaluate_model, rank_sequences, rank_targets
from recops.training.models import Pop
from recops.training.sequences import SequenceData


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "t"])
    df["event_timestamp"] = pd.to_datetime(df.pop("t"), unit="s", utc=True)
    return df


@pytest.fixture
def data() -> SequenceData:
    # user 1: history 1,2,3 then valid 4, test 5; user 2: history 2 then valid 1, test 3.
    ev = _events([(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 5, 5),
                  (2, 2, 1), (2, 1, 2), (2, 3, 3)])
    users = pd.DataFrame({"user_id": [1, 2], "gender": ["F", "M"]})
    items = pd.DataFrame({"item_id": np.arange(1, 9), "title": [f"t{i}" for i in range(1, 9)]})
    return SequenceData.from_interactions(ev, items, max_len=10, users=users)


def _pop(counts: list[float]) -> Pop:
    m = Pop(len(counts) - 1, max_len=10)
    m.counts.copy_(torch.tensor(counts))
    return m


def test_seen_items_are_masked_before_ranking(data: SequenceData) -> None:
    # popularity order: 1 > 2 > 3 > 4 > 5 > 6 > 7 > 8
    model = _pop([0, 80, 70, 60, 50, 40, 30, 20, 10])
    ranks, top = rank_targets(model, data, "test", k=3)
    # user 1, test item 5: items 1-3 (train) and 4 (valid) are masked -> rank 1.
    # user 2, test item 3: items 2 (train) and 1 (valid) masked -> rank 1.
    assert ranks.tolist() == [1, 1]
    assert top[0].tolist() == [5, 6, 7] and top[1].tolist() == [3, 4, 5]
    vranks, _ = rank_targets(model, data, "valid", k=3)
    # user 1, valid item 4: 1-3 masked -> rank 1; user 2, valid item 1: 2 masked -> rank 1.
    assert vranks.tolist() == [1, 1]


def test_any_sequence_can_be_ranked_with_its_own_seen_items() -> None:
    model = _pop([0, 80, 70, 60, 50, 40, 30, 20, 10])
    inputs = [np.array([1, 2]), np.array([], dtype=np.int64), np.array([3])]
    targets = np.array([3, 1, 3])
    seen = [np.array([1, 2]), np.array([], dtype=np.int64), np.array([3, 1])]
    ranks, top = rank_sequences(model, inputs, targets, seen, k=2)
    # row 0: 1, 2 masked -> 3 first; row 1: nothing seen -> 1 first; row 2: the target 3 was
    # seen but stays rankable (a re-consumed item), 1 is masked -> 2 ahead of it.
    assert ranks.tolist() == [1, 1, 2]
    assert top.tolist() == [[3, 4], [1, 2], [2, 3]]


def test_metrics_overall_and_per_segment(data: SequenceData) -> None:
    model = _pop([0, 10, 20, 30, 40, 50, 60, 70, 80])  # reversed: 8 first
    res = evaluate_model(model, data, "test", k=2)
    # user 1 (test 5): 8,7,6 unseen ahead -> rank 4; user 2 (test 3): 8..4 ahead -> rank 6.
    assert res.overall["hr@2"] == 0.0
    assert res.overall["mrr"] == pytest.approx((1 / 4 + 1 / 6) / 2)
    assert set(res.per_segment) == {"activity=<20", "gender=F", "gender=M"}
    assert res.per_segment["gender=F"]["mrr"] == pytest.approx(1 / 4)
    assert res.n_users == 2


def test_mismatched_model_and_bad_split_are_refused(data: SequenceData) -> None:
    with pytest.raises(DataError, match="model scores 3 items but the data has 8"):
        evaluate_model(_pop([0, 1, 2, 3]), data)
    with pytest.raises(DataError, match="split must be"):
        evaluate_model(_pop([0] * 9), data, split="train")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no users to evaluate"):
        evaluate_model(_pop([0] * 9), data.subset([]))
