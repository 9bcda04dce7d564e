"""The serving core, framework-free: one loaded model, scoring, masking, top-k, reasons.

The BentoML service and the benchmark's in-process floor both call this; an ``Engine`` is
immutable once built, so a promotion swaps one reference and in-flight requests finish on the
model they started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from recops import schema
from recops.release.registry import EXTERNAL_ID, RegisteredModel


def _client_id(internal: int, external: Any) -> str | int:
    """What a client sees for an item: its text id when it has one, else the integer."""
    return int(internal) if external is None or pd.isna(external) or external == str(internal) \
        else str(external)


@dataclass(frozen=True)
class Query:
    """One /recommend after the feature read: the user's history (item ids, most recent last),
    how many items, whether to drop what they have seen, and the request's context items."""

    history_ids: Sequence[int]
    k: int
    exclude_seen: bool = True
    context_ids: Sequence[int] | None = None
    # Items never to list (withdrawn from the catalogue), whatever exclude_seen says.
    banned_ids: Sequence[int] = ()


@dataclass(frozen=True)
class Ranked:
    """A recommendation list in index space, plus why it was chosen."""

    indices: list[int]
    scores: list[float]
    fallback: str | None


_M = TypeVar("_M", bound=nn.Module)


def quantize_dynamic(model: _M) -> _M:
    """int8 dynamic quantisation of the Linear layers (weights int8, activations quantised
    on the fly); embeddings stay float, so the item matrix keeps its precision."""
    from torch.ao.quantization import quantize_dynamic as _qd

    # Only the Linear layers inside a copy are swapped: the model keeps its class.
    # torch.ao.quantization declares no types; what it returns is the swapped copy.
    return cast(_M, _qd(model, {nn.Linear}, dtype=torch.qint8))  # type: ignore[no-untyped-call]


class Engine:
    """A registered model made ready to serve: index maps, titles, normalised item vectors,
    the popularity ranking, all computed once at load."""

    def __init__(self, registered: RegisteredModel, *, quantize: bool = False,
                 threads: int | None = None) -> None:
        from recops.training.models import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        ckpt = registered.checkpoint
        self.tag = registered.tag
        self.metadata = registered.metadata
        self.kind = str(ckpt["kind"])
        model = load_checkpoint(ckpt)
        model.eval()
        self.quantized = bool(quantize)
        self.model = quantize_dynamic(model) if quantize else model
        self.max_len = int(getattr(model, "max_len", 0) or
                           ckpt.get("model_settings", {}).get("max_len", 50))
        ids = [int(i) for i in ckpt["item_ids"]]
        self.n_items = len(ids)
        self.item_ids = np.asarray([0] + ids, dtype=np.int64)  # index -> id; 0 = padding
        self.index = {iid: i + 1 for i, iid in enumerate(ids)}
        titles = dict(zip(registered.items[schema.ITEM_ID].astype(int),
                          registered.items[schema.TITLE].astype(str), strict=False))
        self.titles = [""] + [titles.get(i, "") for i in ids]
        # index -> the id a client sees: the team's text id where it has one, else the integer.
        self.external: list[str | int] = [0, *ids]
        if EXTERNAL_ID in registered.items.columns:
            ext = dict(zip(registered.items[schema.ITEM_ID].astype(int),
                           registered.items[EXTERNAL_ID].astype("string"), strict=False))
            self.external = [0, *(_client_id(i, ext.get(i)) for i in ids)]
        self.catalogue = set(int(i) for i in registered.items[schema.ITEM_ID])
        with torch.inference_mode():
            emb = model.item_embeddings().detach().float()
            self.item_vectors = torch.nn.functional.normalize(emb, dim=1)  # [n+1, d]
        self.popular = torch.tensor([self.index[i] for i in registered.popular if i in self.index],
                                    dtype=torch.long)

    # --- index helpers ----------------------------------------------------------------------
    def to_indices(self, item_ids: list[int]) -> list[int]:
        """Known items only (new items the model has not seen carry no signal yet)."""
        return [self.index[i] for i in item_ids if i in self.index]

    def sequence(self, indices: list[int]) -> torch.Tensor:
        """[1, max_len] left-padded, most recent last."""
        return self.sequences([indices])

    def sequences(self, histories: Sequence[list[int]]) -> torch.Tensor:
        """[B, max_len]: each history's last max_len indices, left-padded, most recent last."""
        L = self.max_len
        seqs = np.zeros((len(histories), L), dtype=np.int64)
        for r, hist in enumerate(histories):
            tail = hist[-L:]
            if tail:
                seqs[r, L - len(tail):] = tail
        return torch.from_numpy(seqs)

    # --- ranking ------------------------------------------------------------------------------
    def rank_popular(self, k: int, *, exclude: list[int] | None = None) -> Ranked:
        banned = set(exclude or ())
        picked = [int(i) for i in self.popular.tolist() if int(i) not in banned][:k]
        # Popularity has no calibrated score: report a rank-based one in (0, 1].
        return Ranked(picked, [1.0 / (r + 1) for r in range(len(picked))], "popular")

    def similar(self, index: int, k: int, banned_ids: Sequence[int] = ()) -> Ranked:
        """The ``k`` items nearest to ``index``; ``banned_ids`` (withdrawn) never listed."""
        banned = self.to_indices(list(banned_ids))
        with torch.inference_mode():
            sims = self.item_vectors @ self.item_vectors[index]
            sims[0] = -torch.inf
            sims[index] = -torch.inf
            if banned:
                sims[torch.tensor(banned, dtype=torch.long)] = -torch.inf
            top = torch.topk(sims, min(k, self.n_items - 1 - len(set(banned) - {index})))
        return Ranked(top.indices.tolist(), top.values.tolist(), None)

    # --- response shaping ----------------------------------------------------------------------
    def describe(self, ranked: Ranked,
                 reasons: list[int | None] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        reasons = reasons or [None] * len(ranked.indices)
        for idx, score, why in zip(ranked.indices, ranked.scores, reasons, strict=True):
            item: dict[str, Any] = {"item_id": self.external[idx], "title": self.titles[idx],
                                    "score": round(float(score), 6)}
            if why is not None:
                item["reason"] = {"because_you_interacted_with": self.external[why],
                                  "title": self.titles[why]}
            elif ranked.fallback == "popular":
                item["reason"] = {"popular": True}
            out.append(item)
        return out

    def recommend(self, history_ids: list[int], k: int, *, exclude_seen: bool = True,
                  context_ids: list[int] | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """The whole /recommend after the feature read: returns (items, fallback).

        fallback: None (personal history), "context" (only the request's context items) or
        "popular" (nothing known about the user).
        """
        return self.recommend_many([Query(history_ids, k, exclude_seen, context_ids)])[0]

    def recommend_many(self, queries: Sequence[Query],
                       ) -> list[tuple[list[dict[str, Any]], str | None]]:
        """:meth:`recommend` for several requests with one forward pass over their sequences
        (a [B, max_len] batch costs far less than B forwards of [1, max_len])."""
        out: list[tuple[list[dict[str, Any]], str | None] | None] = [None] * len(queries)
        scored: list[tuple[int, list[int], list[int] | None, int, bool]] = []
        for n, q in enumerate(queries):
            own = self.to_indices(list(q.history_ids))
            hist = own + self.to_indices(list(q.context_ids or []))
            banned = self.to_indices(list(q.banned_ids))
            exclude = (hist + banned if q.exclude_seen else banned) or None
            if not hist:
                out[n] = (self.describe(self.rank_popular(q.k, exclude=exclude)), "popular")
            else:
                scored.append((n, hist, exclude, q.k, bool(own)))
        if scored:
            for (n, _, _, _, personal), ranked, why in zip(scored, *self._rank([
                    (hist, exclude, k) for _, hist, exclude, k, _ in scored]), strict=True):
                out[n] = (self.describe(ranked, why), None if personal else "context")
        return [o for o in out if o is not None]

    def _rank(self, rows: list[tuple[list[int], list[int] | None, int]]
              ) -> tuple[list[Ranked], list[list[int | None]]]:
        """Rank a batch of (history, exclude, k) in index space with one forward pass, one
        masking, one top-k and one reasons product for all rows: the lists, and for each listed
        item the history index whose item vector is most similar (its reason)."""
        seq_t = self.sequences([hist for hist, _, _ in rows])
        with torch.inference_mode():
            scores = self.model.score(seq_t).float()  # a fresh tensor, padding already masked
            ban_r = [r for r, (_, ex, _) in enumerate(rows) for _ in (ex or ())]
            if ban_r:
                ban_c = [i for _, ex, _ in rows for i in (ex or ())]
                scores[torch.tensor(ban_r), torch.tensor(ban_c)] = -torch.inf
            n_ok = torch.isfinite(scores).sum(1).tolist()
            ks = [min(k, self.n_items, ok) for (_, _, k), ok in zip(rows, n_ok, strict=True)]
            top = torch.topk(scores, max(ks))
            # Each listed item's reason: the most similar item of the sequence (padding masked;
            # the first of equals in history order).
            sims = self.item_vectors[top.indices] @ self.item_vectors[seq_t].transpose(1, 2)
            sims.masked_fill_((seq_t == 0).unsqueeze(1), -torch.inf)
            why = seq_t.gather(1, sims.argmax(2)).tolist()
        idx, val = top.indices.tolist(), top.values.tolist()
        return ([Ranked(idx[r][:k], val[r][:k], None) for r, k in enumerate(ks)],
                [list(why[r][:k]) for r, k in enumerate(ks)])
