"""Event roles in training: sequences hold positives only, targets carry their weights, a
user's negatives (before their valid label) can join their softmax."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recops.config_events import EventSettings
from recops.core.roles import split_roles
from recops.training.models import create_model
from recops.training.models.base import sequence_ce
from recops.training.samples import make_train_loader
from recops.training.sequences import SequenceData
from tests.training.conftest import cyclic_interactions, tiny_settings


def typed(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cyclic walks with implicit types, and a dislike of an unrelated item per user."""
    inter, items = cyclic_interactions(n_users=40, n_items=30, seed=seed)
    kinds = np.array(["view", "click", "purchase"])[np.arange(len(inter)) % 3]
    inter = inter.assign(event_type=kinds, rating=np.nan)
    first = inter.groupby("user_id").event_timestamp.min()
    dis = pd.DataFrame({"user_id": first.index, "item_id": (first.index % 30) + 1,
                        "rating": np.nan, "event_type": "dislike",
                        "event_timestamp": first.to_numpy() + pd.Timedelta(seconds=1)})
    return pd.concat([inter, dis], ignore_index=True), items


def test_sequences_hold_positives_with_their_weights_and_negatives_come_apart(home) -> None:
    inter, items = typed()
    roles = split_roles(inter, EventSettings())
    data = SequenceData.from_interactions(roles.positives, items, 12, negatives=roles.negatives)
    assert data.history_weights is not None and data.negatives is not None
    ev = roles.positives.sort_values(["user_id", "event_timestamp", "item_id"])
    for row, user in enumerate(data.train_users[:10]):
        mine = ev[ev.user_id == user]
        n = len(data.histories[row])  # type: ignore[index]
        assert data.index.to_ids(data.histories[row]).tolist() == mine.item_id.tolist()[:n]  # type: ignore[index]
        assert data.history_weights[row].tolist() == mine.event_weight.tolist()[:n]
        neg = roles.negatives[roles.negatives.user_id == user].item_id.tolist()
        assert data.index.to_ids(data.negatives[row]).tolist() == neg  # before the valid label
    s = tiny_settings(home, **{"train.feedback_negatives": True, "train.event_weights": True})
    x, y, w, negs = make_train_loader(data, s, 0).dataset.tensors  # type: ignore[attr-defined]
    assert w.shape == y.shape and ((w > 0) == (y > 0)).all()
    assert set(w[y > 0].unique().tolist()) == {0.5, 1.0, 4.0}  # view, click, purchase
    assert negs.shape[0] == len(x) and (negs > 0).any()
    plain = make_train_loader(data, tiny_settings(home, **{"train.event_weights": False,
                                                           "train.feedback_negatives": False}), 0)
    assert len(plain.dataset.tensors) == 2  # type: ignore[attr-defined]
    dp = make_train_loader(data, tiny_settings(home, **{"privacy.enabled": True}), 0)
    assert len(dp.dataset.tensors) == 2  # type: ignore[attr-defined]  # DP: unweighted


def test_weights_make_a_samples_loss_the_weighted_mean_of_its_targets() -> None:
    torch.manual_seed(0)
    model = create_model("sasrec", 20, {"max_len": 6, "d_model": 8, "n_layers": 1,
                                        "n_heads": 1, "dropout": 0.0})
    model.eval()
    x = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 0, 7, 8, 9]])
    y = torch.tensor([[0, 2, 3, 4, 5, 6], [0, 0, 0, 8, 9, 10]])
    ones = (y > 0).float()
    assert torch.allclose(model.training_loss(x, y, weights=ones), model.training_loss(x, y))
    w = ones * torch.tensor([[1.0, 1, 1, 1, 1, 4]])
    tok = torch.nn.functional.cross_entropy(
        model(x).reshape(-1, 21), y.reshape(-1), ignore_index=0, reduction="none").view(2, 6)
    expect = (tok * w).sum(1) / w.sum(1)
    assert torch.allclose(model.training_loss(x, y, weights=w), expect, atol=1e-5)
    assert torch.allclose(sequence_ce(model(x), y, w), expect, atol=1e-5)


def test_user_negatives_join_the_sampled_softmax_and_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    model = create_model("sasrec", 50, {"max_len": 6, "d_model": 8, "n_layers": 1,
                                        "n_heads": 1, "dropout": 0.0})
    model.eval()
    x = torch.tensor([[0, 1, 2, 3, 4, 5]])
    y = torch.tensor([[0, 2, 3, 4, 5, 6]])

    def loss(negs: torch.Tensor | None) -> torch.Tensor:
        torch.manual_seed(1)  # the same uniform draw each time
        return model.training_loss(x, y, 8, user_negatives=negs)

    base = loss(None)
    assert torch.allclose(loss(torch.zeros(1, 3, dtype=torch.long)), base)
    assert (loss(torch.tensor([[0, 40, 41]])) > base).all()  # more terms in the denominator
    # A target is never its own negative: one position whose target is the user's negative.
    x1, y1 = torch.tensor([[0, 0, 0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0, 0, 2]])
    torch.manual_seed(1)
    alone = model.training_loss(x1, y1, 8)
    torch.manual_seed(1)
    assert torch.allclose(model.training_loss(x1, y1, 8, user_negatives=torch.tensor([[2]])),
                          alone)
