"""Full-ranking evaluation: every item scored, the user's seen items masked, metrics per segment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from recops.errors import DataError
from recops.training.metrics import ranks_from_scores, summarize, topk_items
from recops.training.models.base import NEG_INF, Recommender
from recops.training.sequences import SequenceData, left_pad


@dataclass
class EvalResult:
    overall: dict[str, float]
    per_segment: dict[str, dict[str, float]] = field(default_factory=dict)
    n_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mask(scores: torch.Tensor, seen: list[np.ndarray], targets: torch.Tensor) -> None:
    """Seen items to -inf in place, except the target itself (a re-consumed item stays rankable)."""
    rows = np.concatenate([np.full(len(s), i) for i, s in enumerate(seen)]) if seen else np.zeros(0)
    cols = np.concatenate(seen) if seen else np.zeros(0)
    if len(cols):
        r = torch.as_tensor(rows, dtype=torch.long)
        c = torch.as_tensor(cols, dtype=torch.long)
        keep = c != targets[r]
        scores[r[keep], c[keep]] = NEG_INF
    scores[:, 0] = NEG_INF


def rank_targets(model: Recommender, data: SequenceData, split: Literal["valid", "test"] = "valid",
                 k: int = 10, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Each evaluated user's target rank (1-based) and top-k item indices, seen items masked."""
    if split not in ("valid", "test"):
        raise DataError(f"split must be 'valid' or 'test', got {split!r}")
    inputs, targets, seen = ((data.valid_inputs, data.valid_targets, data.valid_seen)
                             if split == "valid" else
                             (data.test_inputs, data.test_targets, data.test_seen))
    if not len(targets):
        raise DataError(f"no users to evaluate on the {split} split (every user has fewer than "
                        "3 events, or the data is empty)")
    if model.n_items != data.n_items:
        raise DataError(f"model scores {model.n_items} items but the data has {data.n_items}; "
                        "evaluate a model on data with the same item index")
    return rank_sequences(model, inputs, targets, seen, k, batch_size)


@torch.no_grad()
def rank_sequences(model: Recommender, inputs: list[np.ndarray], targets: np.ndarray,
                   seen: list[np.ndarray], k: int = 10, batch_size: int = 256
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each target (1-based) after its input sequence, and the top-k item indices.

    Inputs, targets and seen items are in the model's item index; the seen items of a row are
    masked (its own target excepted), and so is the padding index 0.
    """
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(0)).device
    ranks, tops = [], []
    try:
        for s in range(0, len(targets), batch_size):
            x = left_pad(inputs[s:s + batch_size], model.max_len)
            t = torch.as_tensor(targets[s:s + batch_size], dtype=torch.long)
            scores = model.score(x.to(device)).float().cpu()
            _mask(scores, seen[s:s + batch_size], t)
            ranks.append(ranks_from_scores(scores, t).numpy())
            tops.append(topk_items(scores, k).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(ranks), np.concatenate(tops)


def evaluate_model(model: Recommender, data: SequenceData,
                   split: Literal["valid", "test"] = "valid", k: int = 10,
                   segments: bool = True, batch_size: int = 256) -> EvalResult:
    """HR@k, NDCG@k, MRR and coverage@k over all evaluated users, and per segment."""
    ranks, tops = rank_targets(model, data, split, k, batch_size)
    result = EvalResult(summarize(ranks, tops, data.n_items, k), {}, len(ranks))
    if segments:
        for name, labels in data.segments.items():
            for value in sorted(set(labels.tolist()), key=str):
                sel = labels == value
                result.per_segment[f"{name}={value}"] = summarize(ranks[sel], tops[sel],
                                                                  data.n_items, k)
    return result


def model_for_data(ckpt: dict[str, Any], data: SequenceData) -> tuple[Recommender, SequenceData]:
    """The checkpoint's model and ``data`` in the model's item index (grown to new items first).

    Items the model never saw get rows as on a warm start (text rows only when the model has
    text; otherwise unrankable in practice), so champion and challenger rank the same catalogue.
    """
    from recops.training.models import extend_checkpoint, load_checkpoint
    from recops.training.sequences import ItemIndex

    ids = np.asarray(ckpt["item_ids"], dtype=np.int64)
    if len(ids) == data.n_items and np.array_equal(ids, data.index.item_ids):
        return load_checkpoint(ckpt), data
    merged = ItemIndex(ids).extend(data.index.item_ids)
    new_ids = merged.item_ids[len(ids):].tolist()
    if new_ids:
        ckpt = extend_checkpoint(ckpt, new_ids, None, seed=0)
    return load_checkpoint(ckpt), data.reindexed(merged)
