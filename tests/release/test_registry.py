"""Registry round trips, champion history, the recorded gate, and the feedback log."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

from recops.core.audit import AuditLog, verify
from recops.core.feedback import FeedbackLog
from recops.errors import DataError, RegistryError
from recops.release import registry
from recops.release.gate import run_gate
from tests.serving.conftest import make_checkpoint, meta

ITEMS = pd.DataFrame({"item_id": [10, 20, 30, 40], "title": ["A", "B", "C", "D"]})
INTER = pd.DataFrame({"item_id": [30, 30, 30, 10, 10, 40]})


def _register(settings, seed=1, **m):
    ckpt = make_checkpoint([10, 20, 30, 40], seed)
    return registry.register(settings, ckpt, meta(f"run{seed}", **m), items=ITEMS,
                             interactions=INTER), ckpt


@pytest.mark.integration  # the real BentoML model store
def test_register_load_round_trip(settings):
    tag, ckpt = _register(settings)
    assert tag.startswith("recops-recommender:")
    got = registry.load(settings, tag)
    assert got.checkpoint["item_ids"] == ckpt["item_ids"]
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(got.checkpoint["state_dict"][k], v)
    assert got.metadata["metrics"]["ndcg@10"] == 0.2
    assert got.metadata["feature_service"] == "recommender_v1"
    assert got.metadata["code_version"] and got.metadata["config"]["home"]
    assert got.popular == [30, 10, 40, 20]  # by count, untouched items last
    assert list(got.items.title) == ["A", "B", "C", "D"]
    # The loaded checkpoint rebuilds a model that scores like the original.
    from recops.training.models import load_checkpoint

    seq = torch.tensor([[0, 1, 2]])
    assert torch.allclose(load_checkpoint(got.checkpoint).score(seq),
                          load_checkpoint(ckpt).score(seq))
    # The short version works too.
    assert registry.resolve(settings, tag.split(":")[1]) == tag


@pytest.mark.integration  # the real BentoML model store
def test_register_rejects_malformed_checkpoints(settings):
    with pytest.raises(RegistryError, match="missing key"):
        registry.register(settings, {"kind": "sasrec"}, meta("r"), items=ITEMS,
                          interactions=INTER)
    ckpt = make_checkpoint([10, 20, 30, 40], 1)
    ckpt["n_items"] = 9
    with pytest.raises(RegistryError, match="n_items"):
        registry.register(settings, ckpt, meta("r"), items=ITEMS, interactions=INTER)
    assert registry.list_models(settings) == []


@pytest.mark.integration  # the real BentoML model store
def test_unknown_tags_and_no_champion(settings):
    with pytest.raises(RegistryError, match="no champion"):
        registry.load(settings)
    with pytest.raises(RegistryError, match="not in the store"):
        registry.load(settings, "recops-recommender:doesnotexist")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(settings)


@pytest.mark.integration  # the real BentoML model store
def test_promote_and_rollback_history(settings):
    a, _ = _register(settings, 1)
    b, _ = _register(settings, 2)
    c, _ = _register(settings, 3)
    for tag in (a, b, c):
        registry.promote(settings, tag)
    assert registry.champion_tag(settings) == c
    listed = {m.tag: m.champion for m in registry.list_models(settings)}
    assert listed == {a: False, b: False, c: True}
    assert registry.rollback(settings) == b
    assert registry.rollback(settings) == a
    with pytest.raises(RegistryError):
        registry.rollback(settings)
    assert registry.load(settings).tag == a
    stages = [r["stage"] for r in AuditLog(settings.paths.audit_log).records()]
    assert stages.count("register") == 3 and stages.count("promote") == 3
    assert stages.count("rollback") == 2
    assert verify(AuditLog(settings.paths.audit_log)).ok


@pytest.mark.integration  # the real BentoML model store
def test_corrupt_champion_pointer_is_named(settings):
    a, _ = _register(settings)
    registry.promote(settings, a)
    pointer = settings.paths.bentoml_home / "champion.json"
    pointer.write_text("{half")
    with pytest.raises(RegistryError, match="champion.json"):
        registry.load(settings)


@pytest.mark.integration  # the real BentoML model store
def test_gate_promotes_or_keeps_the_champion_and_records_why(settings):
    good, _ = _register(settings, 1)
    assert run_gate(settings, good).promote
    assert registry.champion_tag(settings) == good
    worse, _ = _register(settings, 2, ndcg=0.1)
    decision = run_gate(settings, worse)
    assert not decision.promote and "below the champion" in decision.reasons[0]
    assert registry.champion_tag(settings) == good  # the champion keeps serving
    recorded = json.loads((settings.paths.runs / "run2" / "gate.json").read_text())
    assert recorded["promote"] is False and recorded["champion"] == good
    gates = [r for r in AuditLog(settings.paths.audit_log).records() if r["stage"] == "gate"]
    assert [g["result"] for g in gates] == ["ok", "rejected"]


def test_feedback_log_offsets_and_torn_tail(tmp_path):
    log = FeedbackLog(tmp_path / "fb")
    assert log.read()[0].empty
    first = log.append({"user_id": 1, "item_id": 2, "event_type": "click",
                        "event_timestamp": "2026-01-01T00:00:00+00:00"})
    second = log.append({"user_id": 1, "item_id": 3, "event_type": "rating", "rating": 4.0,
                         "event_timestamp": "2026-01-01T00:00:01+00:00"})
    assert first == 0 and second > first
    df, nxt = log.read()
    assert list(df.item_id) == [2, 3] and df.rating.isna().tolist() == [True, False]
    assert list(log.read(second)[0].item_id) == [3]
    assert log.read(nxt)[0].empty
    # A crash mid-write leaves a partial line: never read, and overwritten by the next append.
    with open(log.path, "ab") as f:
        f.write(b'{"user_id": 9, "item_')
    assert log.read(nxt)[0].empty and log.read(nxt)[1] == nxt
    log.append({"user_id": 4, "item_id": 5, "event_type": "view",
                "event_timestamp": "2026-01-01T00:00:02+00:00"})
    assert list(log.read()[0].user_id) == [1, 1, 4]
    with pytest.raises(DataError, match="lacks"):
        log.append({"user_id": 1})
    with pytest.raises(DataError, match="offset"):
        log.read(-1)
    with pytest.raises(DataError, match="not valid JSON"):
        log.read(3)  # mid-record: not an offset this log handed out
    assert oct(os.stat(log.path).st_mode)[-3:] == "640"
