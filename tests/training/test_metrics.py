"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recops.training.metrics import (
    coverage,
    hit_rate,
    mrr,
    ndcg,
    ndcg_gains,
    paired_difference,
    ranks_from_scores,
    summarize,
    topk_items,
)


def test_ranks_count_better_items_and_break_ties_by_index() -> None:
    scores = torch.tensor([[-math.inf, 0.9, 0.5, 0.7, 0.1],
                           [-math.inf, 0.3, 0.3, 0.3, 0.3]])
    ranks = ranks_from_scores(scores, torch.tensor([3, 3]))
    # row 0: only item 1 scores higher -> rank 2; row 1: all tied, items 1 and 2 come first.
    assert ranks.tolist() == [2, 3]
    assert topk_items(scores, 2).tolist() == [[1, 3], [1, 2]]


def test_metric_values_by_hand() -> None:
    ranks = np.array([1, 3, 11, 2])
    assert hit_rate(ranks, 10) == pytest.approx(0.75)
    assert ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(4) + 0 + 1 / math.log2(3)) / 4)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2) / 4)
    assert hit_rate(ranks, 1) == pytest.approx(0.25)


def test_coverage_counts_distinct_recommended_items() -> None:
    assert coverage(np.array([[1, 2], [2, 3]]), n_items=10) == pytest.approx(0.3)
    s = summarize(np.array([1]), np.array([[4, 5]]), n_items=4, k=2)
    assert s["coverage@2"] == pytest.approx(0.5) and s["hr@2"] == 1.0 and s["n_users"] == 1


def test_bad_shapes_and_empty_inputs() -> None:
    with pytest.raises(ValueError, match="targets"):
        ranks_from_scores(torch.zeros(2, 5), torch.tensor([1]))
    assert hit_rate(np.array([]), 10) == 0.0 and ndcg(np.array([]), 10) == 0.0


def test_per_user_gains_and_their_paired_difference() -> None:
    ranks = np.array([1, 3, 11, 2])
    gains = ndcg_gains(ranks, 10)
    assert gains.tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / math.log2(3)])
    assert gains.mean() == pytest.approx(ndcg(ranks, 10))
    mean, half = paired_difference(np.array([1.0, 0.5, 0.0, 0.2]), np.array([0.0, 0.5, 0.0, 0.2]))
    assert mean == pytest.approx(0.25)
    assert half == pytest.approx(1.96 * np.std([1.0, 0, 0, 0], ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_difference(np.array([1.0]), np.array([0.0]))
