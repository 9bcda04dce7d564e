"""Continual retraining on synthetic feedback: a better challenger is promoted (through the
recops_retrain DAG), a worse one leaves the champion serving, bad feedback is quarantined."""

from __future__ import annotations

import os
from datetime import timedelta

import pandas as pd
import pytest

from recops import schema
from recops.core import watermark
from recops.core.runs import RunDir
from recops.errors import ValidationFailed
from recops.orchestration import continual, pipeline
from tests.dags.tiny import beats_popularity, tiny_settings

# Three trainings and three feature refreshes: minutes on an idle machine, far more on a busy one.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]


def _log_feedback(settings, events: pd.DataFrame) -> None:  # noqa: ANN001
    """What serving does for each feedback request: a durable append to the feedback log."""
    from recops.core.feedback import FeedbackLog

    log = FeedbackLog(settings.paths.feedback)
    for row in events.itertuples(index=False):
        log.append({schema.USER_ID: int(row.user_id), schema.ITEM_ID: int(row.item_id),
                    schema.RATING: float(row.rating), schema.EVENT_TYPE: str(row.event_type),
                    schema.EVENT_TIMESTAMP: row.event_timestamp.isoformat()})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A weak champion trained on the first 20 days; days 20-25 and 25-30 arrive as feedback."""
    from recops.data.synthetic import generate
    from recops.data.tables import Tables, stage

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        home = tmp_path_factory.mktemp("retrain") / "home"
        full = generate(n_users=60, n_items=80, n_interactions=4500, days=30, seed=7)
        ev = full.interactions
        t0 = ev[schema.EVENT_TIMESTAMP].min().normalize()
        cut1, cut2 = t0 + timedelta(days=20), t0 + timedelta(days=25)
        ts = ev[schema.EVENT_TIMESTAMP]
        initial = Tables(ev[ts < cut1], full.items, full.users, source="test:first-20-days")
        # A barely trained champion: one epoch at a tiny learning rate.
        # Not better than popularity either: promoted only because the baseline rule is off.
        weak = tiny_settings(home, **{"train.epochs": 1, "train.lr": 1e-4,
                                      "gate.baseline": "none"})
        run_id = "champion"
        staged = stage(weak.paths.staging, initial)
        version = pipeline.validate(weak, run_id, staged)["dataset_version"]
        pipeline.features(weak, run_id, version)
        rdir = pipeline.train(weak, run_id, version)["run_dir"]
        pipeline.evaluate(weak, run_id, rdir)
        pipeline.gate(weak, run_id, rdir)
        first = pipeline.register(weak, run_id, rdir)
        assert first["promoted"]
        return {"home": home, "champion": first["tag"],
                "batch1": ev[(ts >= cut1) & (ts < cut2)], "batch2": ev[ts >= cut2]}


def test_no_feedback_means_no_cycle(world: dict) -> None:
    settings = tiny_settings(world["home"])
    out = continual.run_cycle(settings)
    assert "skipped" in out
    assert watermark.read_state(settings)["offset"] == 0


def test_retrain_dag_promotes_a_better_challenger(world: dict) -> None:
    from recops.core.audit import AuditLog
    from recops.core.feedback import FeedbackLog
    from recops.core.lake import Lake
    from recops.orchestration import airflow_runner
    from recops.release import registry

    settings = tiny_settings(world["home"], **{"train.lr": 5e-3})
    _log_feedback(settings, world["batch1"])
    rows_before = len(Lake(settings.paths.lake).read(schema.INTERACTIONS))
    result = airflow_runner.dags_test(settings, "recops_retrain",
                                      {"finetune_epochs": 6, "replay_fraction": 0.5},
                                      timeout=3000)
    assert result.ok, f"{result.failed_tasks}: {result.error} (log {result.log_path})"
    run = RunDir.of(settings, result.run_id)
    scored = run.read_json(RunDir.METRICS)
    assert beats_popularity(scored, 1.1), scored["baseline"]
    ours = scored["overall"]
    theirs = run.read_json(RunDir.CHAMPION_METRICS)["overall"]
    assert ours["ndcg@10"] > theirs["ndcg@10"]  # same newest-period users, same items
    reg = run.read_json(RunDir.REGISTER)
    assert reg["promoted"] and registry.champion_tag(settings) == reg["tag"] != world["champion"]
    meta = registry.metadata(settings, reg["tag"])
    assert meta["warm_start_from"] == world["champion"]
    # The feedback is in the lake, the watermark moved past it, the cycle is audited.
    lake_rows = len(Lake(settings.paths.lake).read(schema.INTERACTIONS))
    assert lake_rows == rows_before + len(world["batch1"])
    assert watermark.read_state(settings)["offset"] == FeedbackLog(settings.paths.feedback)\
        .read(0)[1]
    stages = {r["stage"] for r in AuditLog(settings.paths.audit_log).records()
              if r["run_id"] == result.run_id}
    assert {"feedback", "validate", "train", "evaluate", "gate", "register", "promote"} <= stages
    world["champion2"] = reg["tag"]


def test_a_worse_challenger_leaves_the_champion_serving(world: dict) -> None:
    from recops.release import registry

    if "champion2" not in world:
        pytest.skip("needs the promoted champion of the previous test")
    # A misconfigured retrain: a learning rate that wrecks the weights.
    settings = tiny_settings(world["home"], **{"train.lr": 3.0})
    _log_feedback(settings, world["batch2"])
    out = continual.run_cycle(settings, finetune_epochs=2)
    assert out["promoted"] is False and out["gate_passed"] is False
    assert out["metrics"]["ndcg@10"] < out["champion_metrics"]["ndcg@10"]
    assert any("ndcg@10" in r for r in out["reasons"])
    assert registry.champion_tag(settings) == world["champion2"]
    # Registered for the record, not served.
    assert out["tag"] in {m.tag for m in registry.list_models(settings)}


def test_bad_feedback_is_quarantined_and_never_reaches_the_lake(world: dict) -> None:
    from recops.core.lake import Lake

    settings = tiny_settings(world["home"])
    lake_version = Lake(settings.paths.lake).dataset_version()
    bad = world["batch2"].head(5).assign(**{schema.ITEM_ID: 999_999})  # items nobody knows
    _log_feedback(settings, bad)
    offset_before = watermark.read_state(settings)["offset"]
    with pytest.raises(ValidationFailed) as info:
        continual.run_cycle(settings)
    assert info.value.quarantine_path and os.path.isdir(info.value.quarantine_path)
    assert Lake(settings.paths.lake).dataset_version() == lake_version
    # Quarantined whole, so the next cycle does not trip over the same events again.
    assert watermark.read_state(settings)["offset"] > offset_before
    assert "skipped" in continual.run_cycle(settings)
