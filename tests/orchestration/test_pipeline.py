"""The pipeline's stage functions without Airflow: one real run end to end, reruns, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from recops.errors import ConfigError, DataError
from recops.orchestration import params, pipeline
from tests.dags.tiny import beats_popularity, tiny_settings

# ------------------------------------------------------------------------------ unit (fast)


def test_airflow_run_ids_become_path_safe_and_stable() -> None:
    raw = "manual__2026-11-26T10:59:41.983081+00:00"
    rid = pipeline.safe_run_id(raw)
    assert rid == pipeline.safe_run_id(raw)  # a retried task lands in the same run dir
    assert "/" not in rid and ":" not in rid and "+" not in rid
    with pytest.raises(ConfigError, match="run id"):
        pipeline.safe_run_id("::://")


def test_new_run_ids_are_unique_and_sort_by_time() -> None:
    ids = [pipeline.new_run_id() for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(len(i.split("-")[0]) == len("20260101T000000Z") for i in ids)


def test_params_override_settings_and_bad_params_name_themselves(home: Path) -> None:
    s = params.settings_from_params({"mode": "federated", "dp": True, "epochs": 3,
                                     "dataset": None, "federated_engine": "deployment",
                                     "clients": 3, "rounds": 2})
    assert (s.train.mode, s.privacy.enabled, s.train.epochs) == ("federated", True, 3)
    assert s.privacy.dp_epochs == 3  # the epochs asked for, with DP too
    assert (s.federated.engine, s.federated.num_clients, s.federated.rounds) == (
        "deployment", 3, 2)
    assert s.data.dataset == "ml-latest-small"  # None = as configured
    with pytest.raises(ConfigError, match="unknown pipeline param.*'colour'"):
        params.settings_from_params({"colour": "red"})
    with pytest.raises(ConfigError, match="train.mode"):
        params.settings_from_params({"mode": "sideways"})
    with pytest.raises(ConfigError, match="train.epochs"):
        params.settings_from_params({"epochs": 0})
    with pytest.raises(ConfigError, match="federated.engine"):
        params.settings_from_params({"federated_engine": "cloud"})


def test_stages_refuse_a_missing_run_directory(settings, tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "nope"
    with pytest.raises((DataError, FileNotFoundError)):
        pipeline.evaluate(settings, "nope", str(missing))
    with pytest.raises(DataError, match="gate.json"):
        pipeline.register(settings, "nope", str(missing))
    with pytest.raises(DataError, match="no run directory"):
        pipeline.summary_of_run(settings, "nope")


def test_features_refuse_an_empty_lake(settings) -> None:
    with pytest.raises(DataError, match="no interactions"):
        pipeline.features(settings, "r1", "0123456789abcdef")


# ------------------------------------------------------------------- one real run (slow)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """run_pipeline once on tiny synthetic data with real GX, Feast, PyTorch and BentoML."""
    home = tmp_path_factory.mktemp("pipeline") / "home"
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        # Model selection: popularity and SASRec trained on the same data, the better one kept.
        settings = tiny_settings(home, **{"train.candidates": ["pop", "sasrec"]})
        seen: list[str] = []
        summary = pipeline.run_pipeline(settings, progress=False,
                                        on_stage=lambda name, out, secs: seen.append(name))
    return {"settings": settings, "summary": summary, "seen": seen}


@pytest.mark.integration
@pytest.mark.slow
def test_run_pipeline_registers_a_model_with_its_metrics(done: dict) -> None:
    from recops.release import registry

    s, summary = done["settings"], done["summary"]
    assert done["seen"] == list(pipeline.STAGES)
    rdir = Path(summary["run_dir"])
    for name in ("checkpoint.pt", "labels.parquet", "history.json", "privacy.json",
                 "metrics.json", "gate.json", "register.json", "validation.json", "train.json"):
        assert (rdir / name).is_file(), name
    assert summary["report"] and Path(summary["report"]).is_file()
    metrics = json.loads((rdir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_users"] > 0
    assert 0.0 <= metrics["overall"]["ndcg@10"] <= metrics["overall"]["hr@10"] <= 1.0
    # Better than popularity scored on the same test users (the gate's baseline rule).
    assert beats_popularity(metrics, 1.3), metrics["baseline"]
    assert any(k.startswith("activity=") for k in metrics["per_segment"])
    # First model: no champion to beat, so (beating popularity) it is promoted and serves.
    assert summary["promoted"] and registry.champion_tag(s) == summary["tag"]
    meta = registry.metadata(s, summary["tag"])
    assert meta["run_id"] == summary["run_id"]
    assert meta["metrics"]["ndcg@10"] == pytest.approx(metrics["overall"]["ndcg@10"])
    assert meta["data_version"] == summary["dataset_version"]
    assert meta["training_mode"] == "centralised" and meta["validation"]["passed"] is True
    assert meta["feature_service"] == "recommender_v1"
    assert meta["config"]["model"]["d_model"] == 16
    # Both candidates are on record, SASRec (better on validation) is the one registered, and
    # the report shows the selection.
    train = json.loads((rdir / "train.json").read_text())
    chosen = [c["kind"] for c in train["candidates"] if c["chosen"]]
    assert [c["kind"] for c in train["candidates"]] == ["pop", "sasrec"] and chosen == ["sasrec"]
    assert train["kind"] == "sasrec" and registry.load(s, summary["tag"]).checkpoint["kind"] == \
        "sasrec"
    assert train["candidates"][1]["valid"]["ndcg@10"] > train["candidates"][0]["valid"]["ndcg@10"]
    html = Path(summary["report"]).read_text()
    assert 'id="candidates"' in html and "Model selection" in html


@pytest.mark.integration
@pytest.mark.slow
def test_labels_come_from_feast_point_in_time(done: dict) -> None:
    """The training histories are exactly the positive events (data.event_roles) strictly
    before each label."""
    from recops import schema
    from recops.core.lake import Lake
    from recops.core.roles import split_roles
    from recops.training.splits import history_before

    s = done["settings"]
    labelled = pd.read_parquet(Path(done["summary"]["run_dir"]) / "labels.parquet")
    interactions = split_roles(Lake(s.paths.lake).read(schema.INTERACTIONS),
                               s.data.event_roles).positives
    expected = history_before(interactions, labelled[[schema.USER_ID, schema.ITEM_ID,
                                                      schema.EVENT_TIMESTAMP, "split"]],
                              s.model.max_len)
    got = [list(x) for x in labelled["recent_items"]]
    assert got == [list(x) for x in expected["recent_items"]]


@pytest.mark.integration
@pytest.mark.slow
def test_every_stage_left_an_audit_record_and_the_chain_holds(done: dict) -> None:
    from recops.core.audit import AuditLog, verify

    s, rid = done["settings"], done["summary"]["run_id"]
    log = AuditLog(s.paths.audit_log)
    assert verify(log).ok
    stages = {r["stage"] for r in log.records() if r["run_id"] == rid}
    assert {"ingest", "validate", "features.apply", "features.materialize", "train", "evaluate",
            "gate", "register", "promote", "report"} <= stages


@pytest.mark.integration
@pytest.mark.slow
def test_rerunning_stages_with_the_same_inputs_changes_nothing(done: dict) -> None:
    from recops.core.audit import AuditLog
    from recops.release import registry

    s, summary = done["settings"], done["summary"]
    rid, rdir = summary["run_id"], summary["run_dir"]
    n_models, n_audit = len(registry.list_models(s)), len(AuditLog(s.paths.audit_log).records())
    ckpt = (Path(rdir) / "checkpoint.pt").read_bytes()
    assert pipeline.train(s, rid, summary["dataset_version"])["reused"] is True
    assert pipeline.evaluate(s, rid, rdir)["metrics"] == summary["metrics"]
    assert pipeline.gate(s, rid, rdir)["passed"] is summary["gate_passed"]
    assert pipeline.register(s, rid, rdir) == {"tag": summary["tag"],
                                               "promoted": summary["promoted"]}
    assert (Path(rdir) / "checkpoint.pt").read_bytes() == ckpt
    assert len(registry.list_models(s)) == n_models
    assert len(AuditLog(s.paths.audit_log).records()) == n_audit
    assert pipeline.summary_of_run(s, rid)["tag"] == summary["tag"]


@pytest.mark.integration
@pytest.mark.slow
def test_training_refuses_a_lake_that_moved_on(done: dict) -> None:
    """A retried train task must not silently train on data its run never validated."""
    from recops import schema
    from recops.core.lake import Lake

    s, summary = done["settings"], done["summary"]
    lake = Lake(s.paths.lake)
    newest = lake.read(schema.INTERACTIONS).tail(1).copy()
    newest[schema.EVENT_TIMESTAMP] = newest[schema.EVENT_TIMESTAMP] + pd.Timedelta(days=1)
    lake.append(schema.INTERACTIONS, newest, source="test:late-event")
    with pytest.raises(DataError, match="new data landed"):
        pipeline.train(s, "another-run", summary["dataset_version"])
    with pytest.raises(DataError, match="new data landed"):
        pipeline.features(s, "another-run", summary["dataset_version"])
