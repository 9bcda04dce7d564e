"""EASE and ItemKNN: Steck's closed form, they learn, serve from a sequence, refuse bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recops.errors import ConfigError, TrainingError
from recops.training.evaluation import evaluate_model
from recops.training.local import fit_epochs
from recops.training.models import (
    EASE,
    ItemKNN,
    extend_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from recops.training.samples import make_train_loader
from recops.training.sequences import SequenceData
from recops.training.trainer import train_model
from tests.training.conftest import cyclic_interactions, tiny_settings


@pytest.fixture
def data(cyclic) -> SequenceData:
    inter, items = cyclic
    return SequenceData.from_interactions(inter, items, max_len=12)


def _random_histories(n_users: int, n_items: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(2, 8)), replace=False)
            for _ in range(n_users)]


def _dense(model: EASE | ItemKNN) -> np.ndarray:
    """The model's item-item matrix W [n+1, n+1] rebuilt from its sparse rows."""
    w = np.zeros((model.n_items + 1, model.n_items + 1))
    idx, val = model.nbr_index.long().numpy(), model.nbr_weight.numpy()
    for i in range(len(idx)):
        np.add.at(w[i], idx[i], val[i])
    w[:, 0] = 0
    return w


@pytest.mark.parametrize("n_users", [40, 5], ids=["more-users-than-items", "woodbury"])
def test_ease_weights_are_steck_closed_form(n_users) -> None:
    """B = I - P / diag(P), P = (X^T X + lambda I)^-1, diagonal 0; positive entries kept."""
    n, lam = 12, 3.0
    hist = _random_histories(n_users, n, seed=n_users)
    m = EASE(n, neighbours=n, ease_lambda=lam)
    m.fit_sequences(hist)
    x = np.zeros((n_users, n))
    for u, h in enumerate(hist):
        x[u, h - 1] = 1
    active = x.sum(0) > 0
    xa = x[:, active]
    p = np.linalg.inv(xa.T @ xa + lam * np.eye(active.sum()))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0)
    expected = np.zeros((n, n))
    expected[np.ix_(active, active)] = np.clip(b, 0, None)
    assert np.allclose(_dense(m)[1:, 1:], expected, atol=1e-5)


def test_itemknn_keeps_the_k_most_cosine_similar_items() -> None:
    hist = [np.array([1, 2, 3]), np.array([1, 2]), np.array([2, 4]), np.array([1, 2, 4])]
    m = ItemKNN(4, neighbours=1)
    m.fit_sequences(hist)
    # item 1 co-occurs with 2 three times (cosine 3 / sqrt(3 * 4)), more than with 3 or 4
    assert m.nbr_index[1, 0] == 2 and m.nbr_weight[1, 0] == pytest.approx(3 / 12 ** 0.5)
    assert m.nbr_index[3, 0] in (1, 2)  # an item seen once keeps one neighbour
    assert m.nbr_index[0].tolist() == [0] and m.nbr_weight[0].tolist() == [0.0]


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_learns_the_cyclic_pattern_far_above_pop(home, data, kind) -> None:
    res = train_model(tiny_settings(home, **{"model.kind": kind}), data, progress=False)
    pop = train_model(tiny_settings(home, **{"model.kind": "pop"}), data, progress=False)
    ours = evaluate_model(res.model, data, "test").overall["ndcg@10"]
    base = evaluate_model(pop.model, data, "test").overall["ndcg@10"]
    assert ours > 0.7 and ours > base + 0.4, (ours, base)
    assert [h["epoch"] for h in res.history] == [0]  # fitted in one step, like pop
    assert res.checkpoint["kind"] == kind and res.model.item_embeddings().shape[0] == 31


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_checkpoint_round_trip_and_new_users(home, data, kind, tmp_path) -> None:
    res = train_model(tiny_settings(home, **{"model.kind": kind, "model.neighbours": 8}), data,
                      progress=False)
    again = load_checkpoint(read_checkpoint(save_checkpoint(res.checkpoint, tmp_path / "c.pt")))
    assert again.nbr_weight.shape == (31, 8)
    # a user the model never saw, given as a sequence: the walk's neighbours rank first (an
    # item set has no order, so the item before it is as likely as the one after)
    new_user = torch.tensor([[0, 0, 7, 8, 9, 9]])
    scores = again.score(new_user)
    assert torch.equal(scores, res.model.score(new_user))
    assert torch.isneginf(scores[0, 0]) and torch.isfinite(scores[0, 1:]).all()
    scores[0, [7, 8, 9]] = float("-inf")  # seen items, masked as serving does
    assert set(scores[0].topk(4).indices.tolist()) == {5, 6, 10, 11}
    # an item repeated in the sequence counts once (the user is a binary row)
    assert torch.equal(again.score(torch.tensor([[0, 0, 0, 7, 8, 9]])), again.score(new_user))


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_warm_start_refits_on_the_grown_catalogue(home, kind) -> None:
    inter, items = cyclic_interactions(n_items=30)
    first = train_model(tiny_settings(home, **{"model.kind": kind}),
                        SequenceData.from_interactions(inter, items, 12), progress=False)
    grown = load_checkpoint(extend_checkpoint(first.checkpoint, [500, 501]))
    seqs = torch.tensor([[0, 3, 4, 5]])
    assert torch.equal(grown.score(seqs)[:, :31], first.model.score(seqs))
    assert (grown.score(seqs)[0, 31:] == 0).all()  # new items: unscored until the next fit
    inter2, items2 = cyclic_interactions(n_items=34, seed=1)
    data2 = SequenceData.from_interactions(inter2, items2, 12)
    warm = train_model(tiny_settings(home, **{"model.kind": kind}), data2,
                       init=first.checkpoint, progress=False)
    assert warm.checkpoint["item_ids"][:30] == first.checkpoint["item_ids"]
    assert warm.valid_metrics["ndcg@10"] > 0.6  # refitted: the new items are learned too


def test_bad_settings_and_modes_are_refused(home, data) -> None:
    for key, value in (("model.ease_lambda", 0), ("model.neighbours", 0),
                       ("model.mf_negatives", 0), ("model.mf_loss", "warp"),
                       ("model.kind", "slim")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            tiny_settings(home, **{key: value})
    for kind in ("ease", "itemknn"):
        s = tiny_settings(home, **{"model.kind": kind, "privacy.enabled": True})
        with pytest.raises(TrainingError, match=f"privacy.enabled with model.kind='{kind}'"):
            train_model(s, data, progress=False)
        model = EASE(data.n_items) if kind == "ease" else ItemKNN(data.n_items)
        loader = make_train_loader(data, s, 0)
        with pytest.raises(TrainingError, match="fitted in closed form"):
            fit_epochs(model, loader, epochs=1, lr=1e-3)
    with pytest.raises(ValueError, match="ease_lambda must be > 0"):
        EASE(5, ease_lambda=0.0)
