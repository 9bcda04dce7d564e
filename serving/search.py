"""Personalised search, framework-free: the query's sentence vector against the items' text
vectors picks candidates; the user's sequence model re-ranks them.

The rule (:func:`combine`): every item is scored by cosine similarity to the query (an exact
matrix product: at ~10k items it is faster than an ANN index and loses nothing, see
serving/README.md, "Search"); the top ``candidates`` by cosine are kept; with a history, each
candidate's cosine and model score are z-scored over the candidates and ranked by
``(1 - weight) * z(cosine) + weight * z(model)``. Without a history, or with ``weight`` 0, the
cosine order alone decides. ``weight`` (``serving.search_weight``) was chosen on the validation
split of ml-latest-small, never on its test split (benchmarks/bench_search.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recops import schema
from serving.engine import Engine, Ranked

if TYPE_CHECKING:
    from recops.config import Settings


class SearchUnavailable(Exception):
    """Search cannot answer: the text encoder or the items' text vectors are missing. The
    message says which and what to do; the service answers 503."""


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the vector; all zeros when it is constant (nothing to tell apart)."""
    x = x.double()
    sd = x.std(unbiased=False)
    if x.numel() < 2 or not torch.isfinite(sd) or float(sd) < 1e-12:
        return torch.zeros_like(x)
    return (x - x.mean()) / sd


def combine(cosine: torch.Tensor, model: torch.Tensor | None, k: int, *, weight: float,
            candidates: int) -> Ranked:
    """The search rule on one row of scores in index space (``-inf`` = not eligible).

    Top ``max(candidates, k)`` items by ``cosine``; then, when ``model`` is given and ``weight``
    is above 0, re-ranked by ``(1 - weight) * z(cosine) + weight * z(model)`` with both z-scored
    over the candidates. Returns the top ``k`` with their blended (or cosine) scores.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], not {weight}")
    eligible = int(torch.isfinite(cosine).sum())
    n = min(max(candidates, k), eligible)
    if n == 0:
        return Ranked([], [], None)
    top = torch.topk(cosine, n)
    if model is None or weight == 0.0:
        return Ranked(top.indices[:k].tolist(), top.values[:k].tolist(), None)
    blended = (1.0 - weight) * zscore(top.values) + weight * zscore(model[top.indices])
    # A stable sort: equal blends keep the cosine order.
    order = torch.sort(blended, descending=True, stable=True).indices[:k]
    return Ranked(top.indices[order].tolist(), blended[order].float().tolist(), None)


def item_text_matrix(engine: Engine, settings: Settings) -> tuple[torch.Tensor, str]:
    """[n_items + 1, 384] L2-normalised item text vectors in the engine's index order (row 0
    and items without a vector are zero), and where they came from.

    The model's own ``text`` buffer when it was trained with ``model.text_init`` (exactly the
    vectors it learned with); otherwise the Feast ``item_content`` view's source, the Parquet
    file ``recops features build`` writes (its ``text_embedding`` column).
    """
    from recops.features.text_encoder import DIM

    text = getattr(engine.model, "text", None)
    if isinstance(text, torch.Tensor) and tuple(text.shape) == (engine.n_items + 1, DIM):
        m = text.detach().float().clone()
        origin = "model"
    else:
        m, origin = _feature_vectors(engine, settings, DIM)
    m[0] = 0.0
    return torch.nn.functional.normalize(m, dim=1), origin


def _feature_vectors(engine: Engine, settings: Settings, dim: int) -> tuple[torch.Tensor, str]:
    import pyarrow.parquet as pq

    from recops.features.featurize import ITEM_CONTENT_FILE, TEXT_EMBEDDING, sources_dir

    path = sources_dir(settings) / ITEM_CONTENT_FILE
    hint = ("the served model has no text buffer, so /search reads the item_content feature "
            "source: run `recops features build` (with text, the default) and retry")
    if not path.is_file():
        raise SearchUnavailable(f"no item text vectors: {path} does not exist; {hint}")
    table = pq.read_table(path, columns=[schema.ITEM_ID, TEXT_EMBEDDING])
    ids = table.column(schema.ITEM_ID).to_numpy()
    vecs = table.column(TEXT_EMBEDDING).to_pylist()
    m = torch.zeros(engine.n_items + 1, dim)
    found = 0
    for iid, vec in zip(ids, vecs, strict=True):
        idx = engine.index.get(int(iid))
        if idx is not None and vec is not None and len(vec) == dim:
            m[idx] = torch.tensor(vec, dtype=torch.float32)
            found += 1
    if found == 0:
        raise SearchUnavailable(f"no item text vectors: {path} holds none for the served "
                                f"model's items (built with --no-text?); {hint}")
    return m, "features"


def query_encoder() -> Callable[[str], np.ndarray]:
    """The sentence encoder for queries, loaded now (weights verified, never downloaded);
    SearchUnavailable when it cannot be loaded."""
    from recops.errors import ConfigError
    from recops.features import text_encoder

    try:
        text_encoder.encode_texts(["warm up"])
    except (ConfigError, ImportError, OSError) as exc:
        raise SearchUnavailable(f"the text encoder ({text_encoder.MODEL_NAME}) is unavailable: "
                                f"{exc}") from exc

    def encode(query: str) -> np.ndarray:
        vector: np.ndarray = text_encoder.encode_texts([query])[0]
        return vector

    return encode


@dataclass(frozen=True)
class SearchAnswer:
    items: list[dict[str, Any]]
    personalised: bool
    history_size: int


class Searcher:
    """One engine's search: its item text matrix, built once, and the query encoder."""

    def __init__(self, engine: Engine, item_text: torch.Tensor, origin: str,
                 encode: Callable[[str], np.ndarray]) -> None:
        if tuple(item_text.shape[:1]) != (engine.n_items + 1,):
            raise ValueError(f"item_text has {item_text.shape[0]} rows for "
                             f"{engine.n_items + 1} indices")
        self.engine = engine
        self.item_text = item_text
        self.origin = origin
        self.has_text = item_text.abs().sum(dim=1) > 0
        self.encode = encode

    def cosine(self, query_vector: np.ndarray) -> torch.Tensor:
        """Cosine of every item to the query; ``-inf`` for padding and items without text."""
        q = torch.as_tensor(np.asarray(query_vector, dtype=np.float32))
        with torch.inference_mode():
            cos = self.item_text @ torch.nn.functional.normalize(q, dim=0)
            return cos.masked_fill(~self.has_text, -torch.inf)

    def model_scores(self, history: list[int]) -> torch.Tensor:
        """The sequence model's scores of every item after ``history`` (indices)."""
        with torch.inference_mode():
            return self.engine.model.score(self.engine.sequence(history))[0].float()

    def search(self, query: str | np.ndarray, history_ids: Sequence[int] | None, k: int, *,
               weight: float, candidates: int, exclude_seen: bool = False,
               banned_ids: Sequence[int] = ()) -> SearchAnswer:
        """Top-k items for a query (text or its vector), personalised when the user has a
        history the model knows; ``banned_ids`` (withdrawn items) are never listed."""
        engine = self.engine
        qv = self.encode(query) if isinstance(query, str) else query
        cos = self.cosine(qv).clone()
        hist = engine.to_indices(list(history_ids or []))
        drop = (hist if exclude_seen else []) + engine.to_indices(list(banned_ids))
        if drop:
            cos[torch.tensor(drop, dtype=torch.long)] = -torch.inf
        model = self.model_scores(hist) if hist and weight > 0 else None
        ranked = combine(cos, model, k, weight=weight, candidates=candidates)
        items = engine.describe(ranked)
        for item, idx in zip(items, ranked.indices, strict=True):
            item["similarity"] = round(float(cos[idx]), 6)
        return SearchAnswer(items, model is not None, len(hist))
