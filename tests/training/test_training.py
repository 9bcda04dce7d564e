"""Training: it learns, it is deterministic, it resumes, it warm-starts, it refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recops.core.runs import RunDir
from recops.errors import PrivacyBudgetExceeded, TrainingError
from recops.training.evaluation import evaluate_model
from recops.training.models import read_checkpoint
from recops.training.samples import make_train_loader
from recops.training.sequences import SequenceData
from recops.training.trainer import build_model, seed_everything, train_model
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
    steps = {"train.epochs": 2, "train.max_minutes": 1e6}  # the clock never steers the lr
    a = train_model(tiny_settings(home, **steps), data, progress=False)
    b = train_model(tiny_settings(home, **steps), data, progress=False)
    c = train_model(tiny_settings(home, **steps, seed=7), data, progress=False)
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
    # No time budget: on a starved machine the clock would steer the lr schedule (by design)
    # and the runs would differ; resume must reproduce the steps' schedule exactly.
    steps_only = {"train.epochs": 4, "train.patience": 10, "train.max_minutes": 1e6}
    full = train_model(tiny_settings(home, **steps_only), data, progress=False)
    rd = RunDir(tmp_path / "resumed")

    class Killed(Exception):
        pass

    def save_then_die_after_two(state: dict) -> None:
        rd.save_resume(state)
        if state["epoch"] == 2:
            raise Killed

    # The same run killed after its second epoch (the lr schedule spans all 4), then resumed.
    with pytest.raises(Killed):
        train_model(tiny_settings(home, **steps_only), data, progress=False,
                    on_epoch=save_then_die_after_two)
    assert not rd.has(RunDir.CHECKPOINT)  # the trainer itself writes nothing
    assert rd.load_resume()["epoch"] == 2
    resumed = train_model(tiny_settings(home, **steps_only), data, progress=False,
                          resume_from=rd.load_resume(), on_epoch=rd.save_resume)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    sf, sr = full.checkpoint["state_dict"], resumed.checkpoint["state_dict"]
    assert all(torch.allclose(sf[k], sr[k]) for k in sf)
    resumed.save(rd)
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
    short.histories = [seq[:1] for seq in short.train_seqs]
    for samples in ("last", "windows"):
        with pytest.raises(TrainingError, match="no user has 2 or more training events"):
            make_train_loader(short, tiny_settings(home, **{"train.samples": samples}), 0)


@pytest.mark.integration
@pytest.mark.slow
def test_dp_training_records_its_spend_and_respects_the_budget(home, data) -> None:
    from recops.training.privacy import PrivacyLedger

    s = tiny_settings(home, **{"privacy.enabled": True, "privacy.clipping": "flat",
                               "privacy.target_epsilon": 4.0, "privacy.budget_epsilon": 6.0,
                               "privacy.dp_epochs": 2, "train.patience": 5})
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



def test_dp_trains_its_fixed_epochs_and_keeps_the_last_model(home, data) -> None:
    """Under DP nothing is chosen on private validation data: exactly privacy.dp_epochs epochs,
    validation scored once at the end, the last model kept, with the recipe's batch."""
    from recops.training.privacy import PrivacyLedger

    s = tiny_settings(home, **{"privacy.enabled": True, "privacy.clipping": "flat",
                               "privacy.dp_epochs": 3, "privacy.batch_fraction": 0.25,
                               "privacy.dp_lr": 3e-3, "train.epochs": 9, "train.patience": 1,
                               "privacy.budget_epsilon": 1e3})
    seen: list[dict] = []
    res = train_model(s, data, progress=False, ledger=PrivacyLedger(s.paths.privacy_ledger),
                      on_epoch=lambda st: seen.append(copy_state(st["model_state"])))
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert ["ndcg@10" in r for r in res.history] == [False, False, True]
    last = seen[-1]
    assert all(torch.equal(v, last[k]) for k, v in res.model.state_dict().items())
    n_train = len(make_train_loader(data, s, 0).dataset)
    assert res.privacy is not None and res.privacy["epochs"] == 3
    assert res.privacy["sample_rate"] == pytest.approx(round(0.25 * n_train) / n_train, rel=0.05)


def copy_state(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def test_dp_batch_size_rule(home) -> None:
    from recops.training.dp import dp_batch_size

    s = tiny_settings(home, **{"privacy.batch_fraction": 0.1, "train.batch_size": 32})
    assert dp_batch_size(s, 20_000) == 2_000
    assert dp_batch_size(s, 100) == 32  # never below the plain batch
    assert dp_batch_size(s, 10) == 10  # nor above the users there are
    assert dp_batch_size(tiny_settings(home, **{"privacy.batch_size": 500}), 20_000) == 500


def test_text_item_side_trains_no_per_item_weights(home, data) -> None:
    """privacy.item_side "text": the items' own embeddings and output weights keep their
    text-derived start (public data); the shared maps and attention learn."""
    from recops.training.privacy import PrivacyLedger

    n = data.n_items
    vec = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    s = tiny_settings(home, **{"privacy.enabled": True, "privacy.clipping": "flat",
                               "privacy.dp_epochs": 2, "privacy.item_side": "text",
                               "model.text_init": True, "privacy.budget_epsilon": 1e3})
    seed_everything(s.seed)  # what train_model does before it builds the model
    start = build_model(s, n, vec).state_dict()
    res = train_model(s, data, text_vectors=vec, progress=False,
                      ledger=PrivacyLedger(s.paths.privacy_ledger))
    after = res.model.state_dict()
    for name in ("item_emb.weight", "out.weight"):
        assert torch.equal(after[name], start[name]), name
    for name in ("text_in.weight", "text_out.weight", "blocks.0.attn.qkv.weight", "out.bias"):
        assert not torch.equal(after[name], start[name]), name
    assert res.checkpoint["train_settings"]["privacy"]["item_side"] == "text"


def test_bad_dp_recipe_and_device_are_refused(home, data) -> None:
    from recops.errors import ConfigError

    with pytest.raises(ConfigError, match="item_side 'text'.*text_init"):
        tiny_settings(home, **{"privacy.enabled": True, "privacy.item_side": "text"})
    for key, value in (("privacy.batch_fraction", 0), ("privacy.batch_fraction", 1.5),
                       ("privacy.dp_epochs", 0), ("privacy.dp_lr", -1), ("train.device", "gpu"),
                       ("privacy.batch_size", 0),
                       ("privacy.item_side", "frozen")):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            tiny_settings(home, **{key: value})
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="train.device is 'cuda'.*train.device: cpu"):
            train_model(tiny_settings(home, **{"train.device": "cuda"}), data, progress=False)
