"""The training recipe: windows of whole histories, loss weighting, the lr schedule and the
wall-time budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recops.errors import ConfigError
from recops.training.local import fit_epochs
from recops.training.models import create_model
from recops.training.samples import history_windows, make_train_loader
from recops.training.schedule import TrainingBudget
from recops.training.sequences import SequenceData
from recops.training.trainer import train_model
from tests.training.conftest import cyclic_interactions, tiny_settings


def test_windows_make_every_event_but_the_first_a_target_once() -> None:
    for n, length in ((1, 4), (2, 4), (5, 4), (9, 4), (13, 4), (40, 7)):
        h = np.arange(1, n + 1)
        windows = history_windows([h], length)
        assert all(2 <= len(w) <= length + 1 for w in windows)
        targets = np.concatenate([w[1:] for w in windows]) if windows else np.zeros(0)
        assert sorted(targets.tolist()) == list(range(2, n + 1))
        # Each window is a contiguous stretch of the history, the newest one ends it.
        assert all(np.array_equal(w, h[w[0] - 1:w[-1]]) for w in windows)
        if n >= 2:
            assert windows[0][-1] == n


def test_whole_histories_are_kept_in_time_order() -> None:
    inter, items = cyclic_interactions(n_users=20, min_len=30, max_len=40)
    data = SequenceData.from_interactions(inter, items, max_len=8)
    assert data.histories is not None
    by_user = {u: g.sort_values("event_timestamp")["item_id"].to_numpy()
               for u, g in inter.groupby("user_id")}
    for u, h, seq in zip(data.train_users, data.histories, data.train_seqs, strict=True):
        # Evaluated users: every event before the validation label, the last 8 in train_seqs.
        assert np.array_equal(data.index.to_ids(h), by_user[u][:-2])
        assert np.array_equal(h[-8:], seq)
    part = data.subset(data.train_users[:5])
    assert part.histories is not None and len(part.histories) == 5
    assert np.array_equal(part.histories[0], data.histories[0])


def test_windows_train_on_the_whole_history_but_dp_keeps_one_sample_per_user(home) -> None:
    inter, items = cyclic_interactions(n_users=20, min_len=30, max_len=40)
    data = SequenceData.from_interactions(inter, items, max_len=8)
    last = make_train_loader(data, tiny_settings(home, **{"train.samples": "last"}), 0)
    windows = make_train_loader(data, tiny_settings(home, **{"train.samples": "windows"}), 0)
    n_targets = sum(len(h) - 1 for h in data.train_histories)
    assert len(last.dataset) == data.n_users
    assert len(windows.dataset) > 3 * data.n_users
    assert int((windows.dataset.tensors[1] > 0).sum()) == n_targets
    dp = tiny_settings(home, **{"train.samples": "windows", "privacy.enabled": True})
    assert len(make_train_loader(data, dp, 0).dataset) == data.n_users


def test_position_weighting_weighs_long_samples_more(home) -> None:
    """fit_epochs steps on the gradient of the configured reduction of per-sample losses."""
    torch.manual_seed(0)
    model = create_model("sasrec", 10, {"max_len": 6, "d_model": 8, "n_layers": 1,
                                        "n_heads": 2, "dropout": 0.0}).eval()
    x = torch.tensor([[0, 0, 0, 0, 1, 2], [1, 2, 3, 4, 5, 6]])
    y = torch.tensor([[0, 0, 0, 0, 2, 3], [2, 3, 4, 5, 6, 7]])
    n = torch.tensor([2.0, 6.0])  # predicted positions per sample
    grads: list[torch.Tensor] = []

    class Capture(torch.optim.SGD):  # records the gradient it is asked to step on
        def step(self, closure=None):  # type: ignore[no-untyped-def]
            grads.append(model.out.weight.grad.detach().clone())

    expected = []
    for reduce in (lambda per: per.mean(), lambda per: (per * n).sum() / n.sum()):
        model.zero_grad()
        reduce(model.training_loss(x, y)).backward()
        expected.append(model.out.weight.grad.detach().clone())
    for weighting in ("sequence", "position"):
        fit_epochs(model, [(x, y)], epochs=1, lr=0.0,  # type: ignore[arg-type]
                   optimizer=Capture(model.parameters(), lr=0.0), loss_weighting=weighting)
        model.eval()
    assert torch.allclose(grads[0], expected[0], atol=1e-7)
    assert torch.allclose(grads[1], expected[1], atol=1e-7)
    assert not torch.allclose(grads[0], grads[1], atol=1e-5)


def test_budget_fraction_follows_steps_or_time_whichever_runs_out_first() -> None:
    now = [0.0]
    b = TrainingBudget(epochs=2, steps_per_epoch=5, max_minutes=1.0, lr=1.0,
                       schedule="cosine", clock=lambda: now[0])
    assert b.next_lr() == pytest.approx(1.0)  # nothing spent yet
    assert b.fraction() == pytest.approx(0.1)
    now[0] = 45.0  # three quarters of the minute: time binds
    assert b.fraction() == pytest.approx(0.75) and not b.out_of_time()
    assert b.next_lr() == pytest.approx(0.5 * (1 + np.cos(0.75 * np.pi)))
    now[0] = 60.0
    assert b.out_of_time() and b.fraction() == 1.0 and b.next_lr() == pytest.approx(0.0)
    flat = TrainingBudget(epochs=1, steps_per_epoch=3, lr=0.1, clock=lambda: 0.0)
    assert [flat.next_lr() for _ in range(3)] == [0.1, 0.1, 0.1] and not flat.out_of_time()
    resumed = TrainingBudget(epochs=1, steps_per_epoch=4, max_minutes=1.0, elapsed=30.0,
                             steps=1, clock=lambda: 0.0)
    assert resumed.fraction() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TrainingBudget(epochs=0, steps_per_epoch=1)


def test_time_budget_stops_after_the_epoch_it_runs_out_in(home) -> None:
    inter, items = cyclic_interactions()
    data = SequenceData.from_interactions(inter, items, max_len=12)
    s = tiny_settings(home, **{"train.epochs": 50, "train.eval_every": 10,
                               "train.max_minutes": 1e-6, "train.lr_schedule": "cosine"})
    res = train_model(s, data, progress=False)
    assert [r["epoch"] for r in res.history] == [1]
    # The last epoch is validated even off the eval_every cadence, and its time is kept.
    assert "ndcg@10" in res.history[0] and res.history[0]["seconds"] > 0
    full = train_model(tiny_settings(home, **{"train.epochs": 3}), data, progress=False)
    assert len(full.history) == 3


def test_bad_recipe_settings_are_refused(home) -> None:
    for key, value in (("train.max_minutes", 0), ("train.max_minutes", -1),
                       ("train.samples", "all"), ("train.lr_schedule", "linear"),
                       ("train.loss_weighting", "item"), ("train.negatives", -1)):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            tiny_settings(home, **{key: value})


def test_sampled_softmax_touches_only_targets_and_draws_and_still_learns(home) -> None:
    torch.manual_seed(0)
    model = create_model("sasrec", 500, {"max_len": 6, "d_model": 8, "n_layers": 1,
                                         "n_heads": 2, "dropout": 0.0})
    x = torch.tensor([[0, 0, 0, 1, 2, 3]])
    y = torch.tensor([[0, 0, 0, 2, 3, 4]])
    model.training_loss(x, y, negatives=16).sum().backward()
    touched = (model.out.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert {2, 3, 4} <= set(touched) and len(touched) <= 3 + 16
    model.zero_grad()
    model.training_loss(x, y).sum().backward()  # the full softmax reaches every row
    assert int((model.out.weight.grad.abs().sum(1) > 0).sum()) == 500

    inter, items = cyclic_interactions()
    data = SequenceData.from_interactions(inter, items, max_len=12)
    s = tiny_settings(home, **{"train.epochs": 8, "train.negatives": 5})
    ours = train_model(s, data, progress=False).valid_metrics["ndcg@10"]
    pop = train_model(tiny_settings(home, **{"model.kind": "pop"}), data, progress=False)
    assert ours > pop.valid_metrics["ndcg@10"] + 0.3, (ours, pop.valid_metrics)
