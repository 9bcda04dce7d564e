"""Training: it learns, it is deterministic, it resumes, it warm-starts, it refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recops.errors import PrivacyBudgetExceeded, TrainingError
from recops.runs import RunDir
from recops.training.evaluation import evaluate_model
from recops.training.models import read_checkpoint
from recops.training.sequences import SequenceData
from recops.training.trainer import build_model, make_train_loader, train_model
from tests.training.conftest import cyclic_interactions, tiny_settings


@pytest.fixture
def data(cyclic) -> SequenceData:
    inter, items = cyclic
    return SequenceData.from_interactions(inter, items, max_len=12)


def test_sasrec_learns_a_sequential_pattern_far_above_pop(home, data) -> None:
    s = tiny_settings(home, **{"train.epochs": 8})
    sasrec = train_model(s, data, progress=False)
    pop = train_model(tiny_settings(home, **{"model.kind": "pop"}), data, progress=False)
    ours = evaluate_model(sasrec.model, data, "test").overall["ndcg@10"]
    base = evaluate_model(pop.model, data, "test").overall["ndcg@10"]
    assert ours > 0.8 and ours > base + 0.5, (ours, base)
    assert len(sasrec.history) >= 1 and "ndcg@10" in sasrec.history[0]


def test_mf_learns_above_pop(home, data) -> None:
    mf = train_model(tiny_settings(home, **{"model.kind": "mf", "train.epochs": 8}), data,
                     progress=False)
    pop = train_model(tiny_settings(home, **{"model.kind": "pop"}), data, progress=False)
    assert mf.valid_metrics["ndcg@10"] > pop.valid_metrics["ndcg@10"] + 0.1


def test_same_seed_same_model_other_seed_other_model(home, data) -> None:
    a = train_model(tiny_settings(home, **{"train.epochs": 2}), data, progress=False)
    b = train_model(tiny_settings(home, **{"train.epochs": 2}), data, progress=False)
    c = train_model(tiny_settings(home, **{"train.epochs": 2, "seed": 7}), data, progress=False)
    sa, sb, sc = (r.checkpoint["state_dict"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_early_stopping_keeps_the_best_epoch_of_gate_metric(home, data) -> None:
    """The checkpoint is the epoch best on validation ``gate.metric``, whichever metric it is."""
    for metric in ("ndcg@10", "coverage@10"):
        s = tiny_settings(home, **{"train.epochs": 6, "train.patience": 2, "gate.metric": metric})
        res = train_model(s, data, progress=False)
        scores = [row[metric] for row in res.history]
        best = int(np.argmax(scores))
        assert res.valid_metrics[metric] == pytest.approx(scores[best])
        # It stops once `patience` evaluations in a row fail to beat the best.
        assert len(res.history) == 6 or len(res.history) - 1 - best == 2


def test_resume_continues_where_it_stopped(home, data, tmp_path) -> None:
    full = train_model(tiny_settings(home, **{"train.epochs": 4, "train.patience": 10}), data,
                       progress=False)
    rd = RunDir(tmp_path / "resumed")
    first = train_model(tiny_settings(home, **{"train.epochs": 2, "train.patience": 10}), data,
                        progress=False, on_epoch=rd.save_resume)
    assert not rd.has(RunDir.CHECKPOINT)  # the trainer itself writes nothing
    resumed = train_model(tiny_settings(home, **{"train.epochs": 4, "train.patience": 10}), data,
                          progress=False, resume_from=rd.load_resume(), on_epoch=rd.save_resume)
    assert [h["epoch"] for h in first.history] == [1, 2]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    sf, sr = full.checkpoint["state_dict"], resumed.checkpoint["state_dict"]
    assert all(torch.allclose(sf[k], sr[k]) for k in sf)
    rd.save_training(resumed)
    for name in (RunDir.CHECKPOINT, RunDir.HISTORY, RunDir.PRIVACY, RunDir.RESUME):
        assert rd.has(name), name
    assert rd.read_json(RunDir.HISTORY) == resumed.history
    again = read_checkpoint(rd.file(RunDir.CHECKPOINT))
    assert again["item_ids"] == data.index.item_ids.tolist()
    assert again["model_settings"]["d_model"] == 16 and again["train_settings"]["epochs"] == 4


def test_warm_start_grows_the_catalogue(home) -> None:
    inter, items = cyclic_interactions(n_items=30)
    first = train_model(tiny_settings(home, **{"train.epochs": 2}),
                        SequenceData.from_interactions(inter, items, 12), progress=False)
    inter2, items2 = cyclic_interactions(n_items=34, seed=1)
    data2 = SequenceData.from_interactions(inter2, items2, 12)
    warm = train_model(tiny_settings(home, **{"train.epochs": 1}), data2,
                       init=first.checkpoint, progress=False)
    assert warm.checkpoint["n_items"] == 34
    assert warm.checkpoint["item_ids"][:30] == first.checkpoint["item_ids"]
    with pytest.raises(TrainingError, match="is a 'sasrec' model but model.kind is 'mf'"):
        train_model(tiny_settings(home, **{"model.kind": "mf"}), data2, init=first.checkpoint,
                    progress=False)


def test_bad_training_inputs_are_refused(home, data, tmp_path) -> None:
    s = tiny_settings(home)
    with pytest.raises(TrainingError, match="text vectors"):
        build_model(tiny_settings(home, **{"model.text_init": True}), data.n_items,
                    np.zeros((3, 8)))
    with pytest.raises(TrainingError, match="no users to train on"):
        train_model(s, data.subset([]), progress=False)
    inter, items = cyclic_interactions(n_users=5, min_len=2, max_len=2)
    with pytest.raises(TrainingError, match="no user has 3 or more events"):
        train_model(s, SequenceData.from_interactions(inter, items, 12), progress=False)
    with pytest.raises(TrainingError, match="cannot resume"):
        RunDir(tmp_path / "none").load_resume()
    short = data.subset(data.train_users)
    short.train_seqs = [seq[:1] for seq in short.train_seqs]
    with pytest.raises(TrainingError, match="no user has 2 or more training events"):
        make_train_loader(short, s, 0)


@pytest.mark.integration
@pytest.mark.slow
def test_dp_training_records_its_spend_and_respects_the_budget(home, data) -> None:
    from recops.training.privacy import PrivacyLedger

    s = tiny_settings(home, **{"privacy.enabled": True, "privacy.clipping": "flat",
                               "privacy.target_epsilon": 4.0, "privacy.budget_epsilon": 6.0,
                               "train.epochs": 2, "train.patience": 5})
    ledger = PrivacyLedger(s.paths.privacy_ledger)
    res = train_model(s, data, progress=False, ledger=ledger)
    p = res.privacy
    assert p is not None and 0 < p["epsilon"] <= 4.0 + 1e-6 and p["unit"] == "user"
    assert res.checkpoint["privacy"] == p
    assert ledger.total(p["population"])[0] == pytest.approx(p["epsilon"])
    # a second run would spend ~4 more on the same people: over the budget of 6, refused
    with pytest.raises(PrivacyBudgetExceeded):
        train_model(s, data, progress=False, ledger=ledger)
    assert len(ledger.entries()) == 1


def test_warm_start_gives_new_items_their_text_rows(home) -> None:
    rng = np.random.default_rng(0)
    inter, items = cyclic_interactions(n_items=30)
    s = tiny_settings(home, **{"train.epochs": 1, "model.text_init": True})
    first = train_model(s, SequenceData.from_interactions(inter, items, 12),
                        text_vectors=rng.standard_normal((30, 6)).astype(np.float32),
                        progress=False)
    inter2, items2 = cyclic_interactions(n_items=34, seed=1)
    data2 = SequenceData.from_interactions(inter2, items2.iloc[::-1], 12)
    vec2 = rng.standard_normal((34, 6)).astype(np.float32)  # aligned to data2.items (by id)
    warm = train_model(s, data2, init=first.checkpoint, text_vectors=vec2, progress=False)
    text = warm.checkpoint["state_dict"]["text"]
    new_rows = data2.index.to_index([31, 32, 33, 34]) - 1
    assert torch.allclose(text[31:35], torch.from_numpy(vec2[new_rows]))
    assert torch.equal(text[1:31], first.checkpoint["state_dict"]["text"][1:31])


def test_pop_counts_every_training_event_not_only_the_window(home) -> None:
    inter, items = cyclic_interactions(n_users=20, n_items=30, min_len=8, max_len=8)
    data = SequenceData.from_interactions(inter, items, max_len=3)
    pop = train_model(tiny_settings(home, **{"model.kind": "pop", "model.max_len": 3}), data,
                      progress=False)
    # 20 users x (8 events - valid - test) = 120 training events, though inputs hold 3 each
    assert float(pop.model.counts.sum()) == 120.0


def test_model_selection_keeps_the_best_candidate_on_validation(home, data) -> None:
    from recops.errors import ConfigError
    from recops.orchestration.fit import select_model

    s = tiny_settings(home, **{"train.epochs": 8, "train.candidates": ["pop", "sasrec", "pop"]})
    result, rows = select_model(s, data)
    assert [r["kind"] for r in rows] == ["pop", "sasrec"]  # each kind once, in order
    assert [r["chosen"] for r in rows] == [False, True]
    assert result.checkpoint["kind"] == "sasrec"
    assert rows[1]["valid"]["ndcg@10"] > rows[0]["valid"]["ndcg@10"]
    dp = tiny_settings(home, **{"train.candidates": ["pop", "sasrec"], "privacy.enabled": True})
    with pytest.raises(ConfigError, match="privacy"):
        select_model(dp, data)

