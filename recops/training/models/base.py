"""The interface every recommender implements, and the padding helpers they share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = float("-inf")
# Logit given to a column no target may take (padding); finite so cross-entropy never sees NaN.
MASKED_LOGIT = -1e9


def right_align(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [B, L] -> right-padded (real items first) [B, L] and each row's length.

    With real items first, a causal mask alone keeps every real position from attending to
    padding, so attention can use ``is_causal=True`` and no extra mask.
    """
    length = (x > 0).sum(1)
    L = x.shape[1]
    idx = (torch.arange(L, device=x.device).view(1, -1) + (L - length).view(-1, 1)) % L
    return x.gather(1, idx).contiguous(), length


def sequence_ce(logits: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sequence mean cross-entropy over positions whose target is not 0: shape [B].

    The same reduction Opacus' ghost-clipping criterion applies (``ignore_index=0``), so a
    sequence (one user) is one sample whatever its length. ``weights`` [B, T]: the weighted
    mean instead (:func:`weighted_mean`).
    """
    B, T, V = logits.shape
    tok = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0,
                          reduction="none").view(B, T)
    return weighted_mean(tok, targets > 0, weights)


def weighted_mean(tok: torch.Tensor, valid: torch.Tensor,
                  weights: torch.Tensor | None) -> torch.Tensor:
    """Per row of [B, T] token losses: the mean over ``valid`` positions, or with ``weights``
    the weighted mean over them (a sample keeps weight one; its targets share it by weight)."""
    if weights is None:
        return (tok * valid).sum(1) / valid.sum(1).clamp(min=1)
    w = weights[:, -tok.shape[1]:].to(tok.dtype) * valid
    return (tok * w).sum(1) / w.sum(1).clamp(min=1e-12)


class Recommender(nn.Module):
    """Scores every item for a batch of left-padded sequences (most recent last).

    ``score(seqs) -> [B, n_items + 1]`` with column 0 (padding) at -inf;
    ``item_embeddings() -> [n_items + 1, d]``; ``forward(x) -> logits [B, T, V]`` is the dense
    training view aligned with ``x`` (position t predicts ``y[:, t]``; what Opacus wraps, target
    0 = ignore); ``training_loss(x, y) -> [B]`` the per-sequence loss, possibly cheaper or with
    the model's own objective (BPR for MF).
    """

    kind: ClassVar[str] = ""
    # State-dict entries with one row per item index (row 0 = padding): extended on warm start.
    item_rows: ClassVar[tuple[str, ...]] = ()
    # Fitted in one step from the training histories (``fit_sequences``), not by gradient epochs.
    closed_form: ClassVar[bool] = False

    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.max_len = int(max_len)

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments besides n_items, saved in the checkpoint's model_settings."""
        raise NotImplementedError

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, negatives: int = 0, *,
                      weights: torch.Tensor | None = None,
                      user_negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sequence loss [B]; ``negatives`` > 0 asks for a sampled softmax where the model
        has one (SASRec), the full one otherwise. ``weights`` [B, L] weigh the targets;
        ``user_negatives`` [B, D] (each sample's user's negative items) join a sampled softmax
        (the full one holds them already)."""
        return sequence_ce(self(x), self._clip_len(y), weights)

    def fit_sequences(self, seqs: Iterable[np.ndarray]) -> None:
        """Closed-form kinds: fit from every user's whole training history (index space)."""
        raise NotImplementedError(f"model kind '{self.kind}' is trained by epochs, not fitted")

    def _clip_len(self, seqs: torch.Tensor) -> torch.Tensor:
        if seqs.ndim != 2:
            raise ValueError(f"seqs must be [batch, length], got shape {tuple(seqs.shape)}")
        return seqs[:, -self.max_len:].long()

    @staticmethod
    def _mask_padding(scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, 0] = NEG_INF
        return scores
