"""The DAGs run for real: `airflow dags test` on SQLite and on PostgreSQL with the LocalExecutor,
a rejected batch stops the run at validate, bad Params are refused, and the REST API lists them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from recops.core.supervisor import free_port
from recops.orchestration import airflow_runner, pipeline
from tests.dags.tiny import beats_popularity, tiny_settings, write_bad_movielens

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAG_IDS = {"recops_pipeline", "recops_retrain", "recops_feedback_watch"}


@pytest.fixture(scope="module")
def clean_env():  # noqa: ANN201
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        yield


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory, clean_env: None) -> dict:
    """One real DAG run: Airflow (SQLite) runs every stage in its own task."""
    home = tmp_path_factory.mktemp("dagrun") / "home"
    settings = tiny_settings(home)
    result = airflow_runner.dags_test(settings, "recops_pipeline", {"epochs": 6}, timeout=3000)
    return {"settings": settings, "result": result}


def _assert_registered_with_audit(settings, result) -> dict:  # noqa: ANN001
    from recops.core.audit import AuditLog, verify
    from recops.release import registry

    assert result.ok, f"{result.failed_tasks}: {result.error} (log {result.log_path})"
    summary = pipeline.summary_of_run(settings, result.run_id)
    meta = registry.metadata(settings, summary["tag"])
    assert registry.champion_tag(settings) == summary["tag"]
    scored = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    metrics = scored["overall"]
    for k in pipeline.METRIC_KEYS:
        assert meta["metrics"][k] == pytest.approx(metrics[k])
    assert beats_popularity(scored, 1.2), scored["baseline"]
    assert meta["baseline_metrics"]["ndcg@10"] == pytest.approx(
        scored["baseline"]["overall"]["ndcg@10"])
    assert meta["run_id"] == result.run_id and meta["validation"]["passed"] is True
    log = AuditLog(settings.paths.audit_log)
    assert verify(log).ok
    stages = {r["stage"] for r in log.records() if r["run_id"] == result.run_id}
    assert {"ingest", "validate", "features.apply", "features.materialize", "train",
            "evaluate", "gate", "register", "promote", "report"} <= stages
    return summary


def test_pipeline_dag_runs_end_to_end_on_sqlite(sqlite_run: dict) -> None:
    settings, result = sqlite_run["settings"], sqlite_run["result"]
    _assert_registered_with_audit(settings, result)
    assert set(result.task_seconds) == set(pipeline.STAGES)
    assert (settings.paths.airflow_home / "airflow.db").is_file()
    # The Params reached the tasks: the run trained the epochs the conf asked for.
    train = json.loads((settings.paths.runs / result.run_id / "train.json").read_text())
    assert train["epochs_run"] <= 6


def test_unknown_param_value_is_refused_before_anything_runs(sqlite_run: dict) -> None:
    settings = sqlite_run["settings"]
    runs_before = sorted(p.name for p in settings.paths.runs.iterdir())
    result = airflow_runner.dags_test(settings, "recops_pipeline", {"mode": "sideways"})
    assert not result.ok
    assert "mode" in (result.error or "") and "sideways" in (result.error or "")
    assert sorted(p.name for p in settings.paths.runs.iterdir()) == runs_before


def test_api_server_lists_the_dags_and_the_run(sqlite_run: dict) -> None:
    settings, result = sqlite_run["settings"], sqlite_run["result"]
    airflow_runner.reserialize(settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with airflow_runner.start_api_server(settings, port, all_admins=True):
        token = httpx.get(f"{base}/auth/token", timeout=10).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        dags = httpx.get(f"{base}/api/v2/dags", headers=auth, timeout=30).json()
        listed = {d["dag_id"]: d for d in dags["dags"]}
        assert set(listed) >= DAG_IDS
        assert "recops" in {t["name"] for t in listed["recops_pipeline"]["tags"]}
        runs = httpx.get(f"{base}/api/v2/dags/recops_pipeline/dagRuns", headers=auth,
                         timeout=30).json()["dag_runs"]
        assert {r["dag_run_id"]: r["state"] for r in runs}[result.airflow_run_id] == "success"
        tis = httpx.get(f"{base}/api/v2/dags/recops_pipeline/dagRuns/{result.airflow_run_id}"
                        "/taskInstances", headers=auth, timeout=30).json()["task_instances"]
        assert {t["task_id"] for t in tis} == set(pipeline.STAGES)


def test_rejected_batch_fails_validate_and_training_never_runs(
        tmp_path: Path, clean_env: None) -> None:
    from recops.core.audit import AuditLog
    from recops.release import registry

    bad = write_bad_movielens(tmp_path / "data")
    settings = tiny_settings(tmp_path / "home", **{"data.dataset": "ml-latest-small",
                                                   "data.root": bad, "data.download": False})
    result = airflow_runner.dags_test(settings, "recops_pipeline")
    assert not result.ok
    assert result.failed_tasks == ["validate"]
    assert "ValidationFailed" in (result.error or "") and "quarantined" in (result.error or "")
    quarantined = [p for p in settings.paths.quarantine.iterdir() if not p.name.startswith(".")]
    assert len(quarantined) == 1  # the whole batch, with its report
    assert not list(settings.paths.runs.glob("*/checkpoint.pt"))
    assert registry.list_models(settings) == []
    stages = [r["stage"] for r in AuditLog(settings.paths.audit_log).records()]
    assert "quarantine" in stages or "validate" in stages
    assert "train" not in stages


@pytest.mark.timeout(3600)  # every task is a fresh worker process: slow on a busy machine
def test_pipeline_dag_on_postgres_with_the_local_executor(
        tmp_path: Path, fresh_database: str, clean_env: None) -> None:
    settings = tiny_settings(tmp_path / "home", **{"stores.airflow_db": "postgres",
                                                   "stores.postgres_dsn": fresh_database})
    assert airflow_runner.sql_alchemy_conn(settings).endswith(fresh_database.rsplit("/", 1)[1])
    # The train task runs Flower in deployment mode: a SuperLink and 2 SuperNodes over TLS.
    params = {"mode": "federated", "federated_engine": "deployment", "clients": 2, "rounds": 4}
    result = airflow_runner.dags_test(settings, "recops_pipeline", params, use_executor=True,
                                      timeout=3300)
    summary = _assert_registered_with_audit(settings, result)
    assert not (settings.paths.airflow_home / "airflow.db").exists()
    train = json.loads((Path(summary["run_dir"]) / "train.json").read_text())
    assert train["mode"] == "federated"
    assert (train["federated"]["engine"], train["federated"]["num_clients"]) == ("deployment", 2)
    rounds = json.loads((Path(summary["run_dir"]) / "federated_rounds.json").read_text())
    assert [r["participants"] for r in rounds if r["round"]] == [2] * 4  # row 0: the initial model
    assert len(list((Path(summary["run_dir"]) / "federated").glob("supernode-*.log"))) == 2
