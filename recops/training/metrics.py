"""Full-ranking metrics as pure functions over ranks and top-k lists: HR, NDCG, MRR, coverage."""

from __future__ import annotations

import numpy as np
import torch


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target in its row of ``scores`` [B, V].

    Ties are broken by item index (lower index first), the same order ``topk_items`` uses, so a
    target's rank and the top-k list agree. Masked items must already be ``-inf``.
    """
    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores [B, V] and targets [B] expected, got {tuple(scores.shape)} "
                         f"and {tuple(targets.shape)}")
    t = scores.gather(1, targets.view(-1, 1))
    greater = (scores > t).sum(1)
    idx = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    tied_before = ((scores == t) & (idx < targets.view(-1, 1))).sum(1)
    return greater + tied_before + 1


def topk_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best items per row, ties broken by lower index (stable sort)."""
    k = min(k, scores.shape[1])
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target is in their top k."""
    ranks = np.asarray(ranks)
    return float((ranks <= k).mean()) if ranks.size else 0.0


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each user's NDCG@k with one relevant item: 1/log2(rank+1) when rank <= k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k over users (the mean of :func:`ndcg_gains`)."""
    gains = ndcg_gains(ranks, k)
    return float(gains.mean()) if gains.size else 0.0


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` over the same users or events, and the half-width of its 95% interval
    (1.96 standard errors): how far apart two models are, measured on the same targets."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"a paired difference needs at least 2 pairs, got {d.size}")
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(d.size))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking (no cut-off)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float((1.0 / ranks).mean()) if ranks.size else 0.0


def coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalogue (n_items, padding excluded) in at least one top-k list."""
    if n_items <= 0:
        return 0.0
    return float(len(np.unique(np.asarray(topk))) / n_items)


def summarize(ranks: np.ndarray, topk: np.ndarray, n_items: int, k: int = 10) -> dict[str, float]:
    """The metric dict every report uses: hr@k, ndcg@k, mrr, coverage@k, n_users."""
    return {
        f"hr@{k}": hit_rate(ranks, k),
        f"ndcg@{k}": ndcg(ranks, k),
        "mrr": mrr(ranks),
        f"coverage@{k}": coverage(topk, n_items),
        "n_users": float(len(ranks)),
    }
