"""Baselines behind the recommender interface: popularity and sequence-represented BPR-MF."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from recops.training.models.base import MASKED_LOGIT, Recommender, weighted_mean


class Pop(Recommender):
    """Scores an item by how often it appears in the training sequences; ignores the user."""

    kind = "pop"
    item_rows = ("counts",)
    closed_form = True
    counts: torch.Tensor  # buffer [n_items + 1]: how often each item index was seen

    def __init__(self, n_items: int, *, max_len: int = 50, **_: Any) -> None:
        super().__init__(n_items, max_len)
        self.register_buffer("counts", torch.zeros(n_items + 1))
        # A parameter so optimizers and DP wrappers treat Pop like any model; it is never trained.
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)

    def model_args(self) -> dict[str, Any]:
        return {"max_len": self.max_len}

    def fit_sequences(self, seqs: Iterable[np.ndarray]) -> None:
        counts = torch.zeros(self.n_items + 1)
        for s in seqs:
            if len(s):
                counts += torch.bincount(torch.as_tensor(s, dtype=torch.long),
                                         minlength=self.n_items + 1).float()
        counts[0] = 0
        self.counts.copy_(counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape
        return torch.log1p(self.counts).view(1, 1, -1).expand(B, T, -1) * self.scale

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        return self._mask_padding(torch.log1p(self.counts).unsqueeze(0).expand(seqs.shape[0], -1))

    def item_embeddings(self) -> torch.Tensor:
        return torch.log1p(self.counts).unsqueeze(1)


class MF(Recommender):
    """Matrix factorisation trained with BPR, the user being the mean of their items' factors.

    Representing a user from their sequence (as in FISM / asymmetric SVD) means a new user is
    scored without retraining, and the model fits the same sequence interface as SASRec. At
    each position the user is the mean of the items so far; the positive is the next item and
    the negative a uniform random item. BPR's ``-log sigmoid(s+ - s-)`` is written as a 2-way
    cross-entropy so the dense training view matches SASRec's (and Opacus' per-sample losses).
    """

    kind = "mf"
    item_rows = ("user_factors.weight", "item_factors.weight", "item_bias.weight")

    def __init__(self, n_items: int, *, max_len: int = 50, d_model: int = 64,
                 mf_loss: str = "bpr", mf_negatives: int = 1, **_: Any) -> None:
        super().__init__(n_items, max_len)
        if mf_loss not in ("bpr", "softmax"):
            raise ValueError(f"mf_loss must be 'bpr' or 'softmax', got {mf_loss!r}")
        self.d_model, self.mf_loss, self.mf_negatives = d_model, mf_loss, int(mf_negatives)
        V = n_items + 1
        self.user_factors = nn.Embedding(V, d_model, padding_idx=0)  # items as seen in a history
        self.item_factors = nn.Embedding(V, d_model)                  # items as candidates
        self.item_bias = nn.Embedding(V, 1)
        for emb in (self.user_factors, self.item_factors):
            nn.init.normal_(emb.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.user_factors.weight[0].zero_()

    def model_args(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "d_model": self.d_model, "mf_loss": self.mf_loss,
                "mf_negatives": self.mf_negatives}

    def _prefix_users(self, x: torch.Tensor) -> torch.Tensor:
        """Mean factor of the items up to each position: [B, T, d]."""
        e: torch.Tensor = self.user_factors(x)
        n = (x > 0).cumsum(1).clamp(min=1).unsqueeze(-1)
        return e.cumsum(1) / n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-softmax logits at every position (the dense view; BPR is ``training_loss``)."""
        u = self._prefix_users(self._clip_len(x))
        logits = u @ self.item_factors.weight.T + self.item_bias.weight.T
        pad_col = torch.zeros_like(logits[..., :1]) + MASKED_LOGIT
        return torch.cat([pad_col, logits[..., 1:]], dim=-1)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, negatives: int = 0, *,
                      weights: torch.Tensor | None = None,
                      user_negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Per sequence (``negatives`` and ``user_negatives`` unused: MF samples its own
        ``mf_negatives``): BPR, the (``weights``-weighted) mean over positions and
        ``mf_negatives`` uniform random items of -log sigmoid(s(next) - s(negative)); or, with
        ``mf_loss='softmax'``, the dense full-softmax cross-entropy."""
        if self.mf_loss == "softmax":
            return super().training_loss(x, y, weights=weights)
        x, y = self._clip_len(x), self._clip_len(y)
        u = self._prefix_users(x)
        neg = torch.randint(1, self.n_items + 1, (*y.shape, self.mf_negatives), device=y.device)
        pos_s = (u * self.item_factors(y)).sum(-1) + self.item_bias(y).squeeze(-1)
        neg_s = ((u.unsqueeze(2) * self.item_factors(neg)).sum(-1)
                 + self.item_bias(neg).squeeze(-1))
        valid = (y > 0) & (x > 0)
        tok = torch.nn.functional.softplus(neg_s - pos_s.unsqueeze(-1)).mean(-1)
        return weighted_mean(tok, valid, weights)

    def user_vectors(self, seqs: torch.Tensor) -> torch.Tensor:
        x = self._clip_len(seqs)
        n = (x > 0).sum(1, keepdim=True).clamp(min=1)
        e: torch.Tensor = self.user_factors(x)
        return e.sum(1) / n

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        s = self.user_vectors(seqs) @ self.item_factors.weight.T + self.item_bias.weight.T
        return self._mask_padding(s)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_factors.weight.detach()
