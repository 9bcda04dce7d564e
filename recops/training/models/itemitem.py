"""Item-item recommenders fitted in closed form (EASE, ItemKNN), scored from an item set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from recops.errors import TrainingError
from recops.training.models.base import Recommender

# EASE inverts a dense [n, n] Gram matrix (three n x n float32 arrays at the peak): 30k active
# items is ~11 GB. Beyond that, use ItemKNN or a learned model.
MAX_DENSE_ITEMS = 30_000


class ItemItem(Recommender):
    """A user's score for item j is the sum of W[i, j] over the distinct items i of their input.

    W (n_items+1 x n_items+1, zero diagonal) is fitted by the subclass in :meth:`item_weights`
    and kept sparse: each item's ``neighbours`` largest weights, as ``nbr_index``/``nbr_weight``
    [n_items+1, K] (row 0, padding, and items never seen in training point nowhere with weight
    0). A dense float32 W for ml-latest-small's 9,742 items is ~380 MB and about as big in every
    checkpoint and serving replica; its top 200 per row is ~16 MB and, measured on
    ml-latest-small's validation split, ranks as well (docs: benchmarks/bench_quality.py).
    ``vectors`` [n_items+1, d_model] are the items' truncated-SVD factors of the binary
    user-item matrix, the embedding /similar compares (W itself has no low-dimensional form).
    The user is the item *set* of the last ``max_len`` inputs, so a new user needs no refit.
    """

    closed_form = True
    item_rows = ("nbr_index", "nbr_weight", "vectors")
    nbr_index: torch.Tensor
    nbr_weight: torch.Tensor
    vectors: torch.Tensor

    def __init__(self, n_items: int, *, max_len: int = 50, d_model: int = 64,
                 neighbours: int = 200, **_: Any) -> None:
        super().__init__(n_items, max_len)
        self.d_model = int(d_model)
        self.neighbours = int(min(neighbours, n_items))
        V = n_items + 1
        self.register_buffer("nbr_index", torch.zeros(V, self.neighbours, dtype=torch.int32))
        self.register_buffer("nbr_weight", torch.zeros(V, self.neighbours))
        self.register_buffer("vectors", torch.zeros(V, self.d_model))

    def model_args(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "d_model": self.d_model, "neighbours": self.neighbours}

    def item_weights(self, gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """W over the active items from their co-occurrence counts X^T X ([n, n], float32;
        may be overwritten in place) and the sparse binary user x item matrix X [U, n]."""
        raise NotImplementedError

    def fit_sequences(self, seqs: Iterable[np.ndarray]) -> None:
        """Fit W and the item vectors on the binary user x item matrix of ``seqs``."""
        rows, cols = [], []
        for u, s in enumerate(seqs):
            items = np.unique(np.asarray(s, dtype=np.int64))
            items = items[items > 0]
            rows.append(np.full(len(items), u))
            cols.append(items)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        active = np.unique(col)  # items with no training event keep empty rows
        n = len(active)
        if n > MAX_DENSE_ITEMS:
            raise TrainingError(f"{self.kind}: {n} items occur in training, more than the "
                             f"{MAX_DENSE_ITEMS} a dense item-item fit handles in memory")
        self.nbr_index.zero_()
        self.nbr_weight.zero_()
        self.vectors.zero_()
        if n < 2:
            return
        users = torch.as_tensor(np.concatenate(rows))
        pos = torch.as_tensor(np.searchsorted(active, col))
        x = torch.sparse_coo_tensor(torch.stack([users, pos]), torch.ones(len(col)),
                                    (len(rows), n), check_invariants=True).coalesce()
        gram = torch.zeros(n, n)
        for lo in range(0, len(rows), 2048):  # dense blocks of users: X^T X without sparse mm
            sel = (users >= lo) & (users < lo + 2048)
            block = torch.zeros(min(2048, len(rows) - lo), n)
            block[users[sel] - lo, pos[sel]] = 1.0
            gram.addmm_(block.T, block)
        w = self.item_weights(gram, x)
        w.fill_diagonal_(float("-inf"))  # never one's own neighbour
        k = min(self.neighbours, n - 1)
        top = w.topk(k, dim=1)
        keep = torch.isfinite(top.values) & (top.values > 0)
        act = torch.as_tensor(active)
        self.nbr_index[act, :k] = torch.where(keep, act[top.indices], 0).to(torch.int32)
        self.nbr_weight[act, :k] = torch.where(keep, top.values, 0.0)
        del w, gram
        q = min(self.d_model, n, len(rows))
        _, sing, v = torch.svd_lowrank(x, q=q, niter=4)
        self.vectors[act, :q] = v * sing

    def score(self, seqs: torch.Tensor) -> torch.Tensor:
        x = self._clip_len(seqs)
        x, _ = x.sort(1)
        repeat = torch.zeros_like(x, dtype=torch.bool)
        repeat[:, 1:] = x[:, 1:] == x[:, :-1]
        x = x.masked_fill(repeat, 0)  # a binary row: each item counts once
        B = x.shape[0]
        idx = self.nbr_index[x].long().reshape(B, -1)
        w = self.nbr_weight[x].reshape(B, -1)
        scores = torch.zeros(B, self.n_items + 1, dtype=w.dtype).scatter_add_(1, idx, w)
        return self._mask_padding(scores)

    def item_embeddings(self) -> torch.Tensor:
        return self.vectors


class EASE(ItemItem):
    """EASE (Steck 2019): B = I - P / diag(P), P = (X^T X + lambda I)^-1, diagonal zeroed.

    The closed-form ridge regression of each item on all others; ``ease_lambda`` is the L2
    strength. Only positive weights are kept (the top ``neighbours`` per item).
    """

    kind = "ease"

    def __init__(self, n_items: int, *, max_len: int = 50, d_model: int = 64,
                 neighbours: int = 200, ease_lambda: float = 200.0, **_: Any) -> None:
        # Every argument spelled out: load_checkpoint passes those in this signature.
        super().__init__(n_items, max_len=max_len, d_model=d_model, neighbours=neighbours)
        if not ease_lambda > 0:
            raise ValueError(f"ease_lambda must be > 0, got {ease_lambda}")
        self.ease_lambda = float(ease_lambda)

    def model_args(self) -> dict[str, Any]:
        return {**super().model_args(), "ease_lambda": self.ease_lambda}

    def item_weights(self, gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n_users, n = x.shape
        if n_users < n:
            # Woodbury: lambda * P = I - X^T (lambda I + X X^T)^-1 X, a [U, U] solve. On
            # ml-latest-small (610 users, 9.7k items) 5 s where the [n, n] inverse took 160 s.
            xd = x.to_dense()
            inner = xd @ xd.T
            inner.diagonal().add_(self.ease_lambda)
            p = torch.eye(n).sub_(xd.T @ torch.linalg.solve(inner, xd))
        else:
            gram.diagonal().add_(self.ease_lambda)
            p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        return p.div_(-p.diagonal().clone().view(1, -1))  # B_ij = -P_ij / P_jj off the diagonal


class ItemKNN(ItemItem):
    """Cosine item-item similarity on the binary user x item matrix, top ``neighbours`` per item."""

    kind = "itemknn"

    def item_weights(self, gram: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        norm = gram.diagonal().clamp(min=1e-12).sqrt()
        return gram.div_(norm.view(-1, 1)).div_(norm.view(1, -1))
