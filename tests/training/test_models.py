"""The recommender interface: scores, causality, padding, checkpoints and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recops.errors import DataError
from recops.training.models import (
    EASE,
    MF,
    ItemKNN,
    Pop,
    SASRec,
    create_model,
    extend_checkpoint,
    load_checkpoint,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from recops.training.models.base import right_align


def _models() -> list:
    torch.manual_seed(0)
    pop = Pop(9, max_len=6)
    pop.fit_sequences([torch.tensor([1, 2, 2, 3]).numpy()])
    item_item = [EASE(9, max_len=6, d_model=4, neighbours=3, ease_lambda=2.0),
                 ItemKNN(9, max_len=6, d_model=4, neighbours=3)]
    for m in item_item:
        m.fit_sequences([np.array(s) for s in ([1, 2, 3], [2, 3, 4, 6], [3, 4, 5], [5, 6, 2])])
    return [SASRec(9, max_len=6, d_model=8, n_layers=2, n_heads=2, dropout=0.0),
            SASRec(9, max_len=6, d_model=8, n_heads=2, text_dim=5, text_vectors=torch.randn(9, 5)),
            MF(9, max_len=6, d_model=8), pop, *item_item]


SEQS = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 2]])


@pytest.mark.parametrize("model", _models(),
                         ids=["sasrec", "sasrec-text", "mf", "pop", "ease", "itemknn"])
def test_checkpoint_round_trip_gives_identical_scores(model, tmp_path) -> None:
    model.eval()
    ckpt = make_checkpoint(model, list(range(101, 110)), model_settings={}, train_settings={})
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    again = load_checkpoint(read_checkpoint(path))
    scores = model.score(SEQS)
    assert scores.shape == (2, 10) and torch.isneginf(scores[:, 0]).all()
    assert torch.equal(scores, again.score(SEQS))
    assert again.item_embeddings().shape[0] == 10


def test_sasrec_is_causal_and_padding_invariant() -> None:
    torch.manual_seed(0)
    m = SASRec(20, max_len=8, d_model=16, n_heads=2, dropout=0.0).eval()
    x = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8]])
    changed = x.clone()
    changed[0, -1] = 9
    with torch.no_grad():
        a, b = m(x), m(changed)
    # logits at positions before the change are unaffected (no peeking at later items)
    assert torch.allclose(a[0, 3:7], b[0, 3:7], atol=1e-6)
    assert not torch.allclose(a[0, 7], b[0, 7])
    # the same history with more left padding scores the same
    short = torch.tensor([[0, 4, 5, 6, 7, 8]])
    assert torch.allclose(m.score(x), m.score(short), atol=1e-5)


@pytest.mark.parametrize("text_dim", [0, 4])
def test_serving_scores_equal_the_last_position_of_the_whole_forward(text_dim) -> None:
    # score() runs the last block at each row's last position only; it must give what the
    # whole forward gives there, for full and short histories (an empty one stays finite)
    torch.manual_seed(0)
    m = SASRec(30, max_len=8, d_model=16, n_layers=3, n_heads=4, dropout=0.3, text_dim=text_dim,
               text_vectors=torch.randn(30, text_dim) if text_dim else None)
    x = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 9, 10, 11],
                      [0, 0, 0, 0, 0, 0, 0, 12], [0] * 8])
    m.eval()
    with torch.no_grad():
        whole = m(x)[:, -1]  # forward(): every position, aligned with the input
        fast = m.score(x)
    assert torch.isneginf(fast[:, 0]).all() and torch.isfinite(fast[:, 1:]).all()
    assert torch.allclose(fast[:3, 1:], whole[:3, 1:], atol=1e-5)  # the empty row has no last
    m.train()  # training keeps the whole forward (dropout everywhere, per-sample hooks)
    torch.manual_seed(1)
    a = m.last_hidden(x)
    torch.manual_seed(1)
    xr, length = right_align(x)
    b = m._hidden(xr)[torch.arange(4), (length - 1).clamp(min=0)]
    assert torch.equal(a, b)


def test_cheap_training_loss_equals_dense_loss() -> None:
    torch.manual_seed(0)
    m = SASRec(15, max_len=6, d_model=8, n_heads=2, dropout=0.0, text_dim=4,
               text_vectors=torch.randn(15, 4)).eval()
    x = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 0, 7]])
    y = torch.tensor([[0, 0, 2, 3, 4, 5], [0, 0, 0, 0, 0, 8]])
    from recops.training.models.base import sequence_ce

    assert torch.allclose(m.training_loss(x, y), sequence_ce(m(x), y), atol=1e-5)


def test_mf_losses_bpr_with_negatives_and_full_softmax() -> None:
    from recops.training.models.base import sequence_ce

    torch.manual_seed(0)
    x = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5]])
    y = torch.tensor([[0, 2, 3, 4], [0, 0, 5, 6]])
    soft = MF(9, max_len=4, d_model=8, mf_loss="softmax")
    assert torch.allclose(soft.training_loss(x, y), sequence_ce(soft(x), y))
    bpr = MF(9, max_len=4, d_model=8, mf_negatives=16)
    loss = bpr.training_loss(x, y)
    assert loss.shape == (2,) and (loss > 0).all()
    # with the factors at 0, every pair scores the same: BPR is log 2 whatever the negatives
    with torch.no_grad():
        bpr.user_factors.weight.zero_()
    assert torch.allclose(bpr.training_loss(x, y), torch.full((2,), math.log(2.0)))
    ckpt = make_checkpoint(bpr, list(range(9)), model_settings={}, train_settings={})
    assert load_checkpoint(ckpt).mf_negatives == 16
    with pytest.raises(ValueError, match="mf_loss"):
        MF(9, mf_loss="warp")


def test_extend_checkpoint_keeps_old_scores_and_adds_rows() -> None:
    m = _models()[0].eval()
    ckpt = make_checkpoint(m, list(range(101, 110)), model_settings={}, train_settings={})
    grown = load_checkpoint(extend_checkpoint(ckpt, [200, 201]))
    assert grown.n_items == 11
    # the known items keep their scores exactly; the new ones get finite scores
    assert torch.allclose(grown.score(SEQS)[:, :10], m.score(SEQS), atol=1e-6)
    assert torch.isfinite(grown.score(SEQS)[:, 10:]).all()
    assert grown.score(SEQS).shape == (2, 12)


def test_bad_checkpoints_and_kinds_are_refused(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown model kind 'gru'"):
        create_model("gru", 5, {})
    m = MF(4, max_len=3, d_model=2)
    ckpt = make_checkpoint(m, [1, 2, 3, 4], model_settings={}, train_settings={})
    with pytest.raises(DataError, match=r"missing key\(s\) \['state_dict'\]"):
        load_checkpoint({k: v for k, v in ckpt.items() if k != "state_dict"})
    with pytest.raises(DataError, match="unknown model kind"):
        load_checkpoint({**ckpt, "kind": "gru"})
    with pytest.raises(DataError, match="weights do not fit"):
        load_checkpoint({**ckpt, "model_settings": {**ckpt["model_settings"], "d_model": 7}})
    with pytest.raises(DataError, match="item ids"):
        make_checkpoint(m, [1, 2], model_settings={}, train_settings={})
    with pytest.raises(DataError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        m.score(torch.tensor([1, 2]))
    with torch.no_grad():
        assert math.isinf(float(m.score(torch.tensor([[1, 2]]))[0, 0]))
