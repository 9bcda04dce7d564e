"""
### recops_pipeline: the whole loop, once

ingest → validate (Great Expectations; a rejected batch is quarantined and the run stops) →
features (Feast apply + materialise) → train (centralised PyTorch or Flower federated, optional
Opacus DP) → evaluate (full ranking, per segment) → gate (challenger vs champion, privacy
budget) → register (BentoML model store; promoted when the gate passes) → report.

Each task calls one function of `recops.orchestration.pipeline` and passes ids and paths only.
Settings come from `RECOPS_CONFIG` / `RECOPS_HOME` in the worker's environment; the Params below
override them for one run (leave a Param empty for "as configured"). User mistakes (bad data, bad
settings) fail the task at once; other failures are retried.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

DATASETS = ["ml-latest-small", "ml-100k", "ml-1m", "ml-25m", "synthetic"]


@dag(
    dag_id="recops_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "training"],
    doc_md=__doc__,
    default_args={"owner": "recops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "dataset": Param(None, type=["null", "string"], enum=[None, *DATASETS],
                         description="Dataset to ingest (empty: as configured)."),
        "mode": Param(None, type=["null", "string"], enum=[None, "centralised", "federated"],
                      description="Training mode (empty: as configured)."),
        "dp": Param(None, type=["null", "boolean"],
                    description="Train with differential privacy (Opacus / Flower DP)."),
        "target_epsilon": Param(None, type=["null", "number"], exclusiveMinimum=0,
                                description="Target epsilon of this run when DP is on."),
        "budget_epsilon": Param(None, type=["null", "number"], exclusiveMinimum=0,
                                description="Total epsilon budget over all runs (the gate "
                                            "refuses a model that passes it)."),
        "epochs": Param(None, type=["null", "integer"], minimum=1,
                        description="Training epochs (empty: as configured)."),
        "federated_engine": Param(None, type=["null", "string"],
                                  enum=[None, "simulation", "deployment"],
                                  description="Federated mode only: a Flower simulation, or a "
                                              "SuperLink + one SuperNode process per client "
                                              "over TLS (empty: as configured)."),
        "clients": Param(None, type=["null", "integer"], minimum=2,
                         description="Federated mode only: number of clients."),
        "rounds": Param(None, type=["null", "integer"], minimum=1,
                        description="Federated mode only: number of rounds."),
    },
)
def recops_pipeline() -> None:
    @task
    def ingest() -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("ingest")

    @task
    def validate(staged: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("validate", staged["staged_id"])

    @task
    def features(accepted: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("features", accepted["dataset_version"])

    @task(execution_timeout=timedelta(hours=6))
    def train(accepted: dict, _features: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("train", accepted["dataset_version"])

    @task
    def evaluate(trained: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("evaluate", trained["run_dir"])

    @task
    def gate(trained: dict, _evaluated: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("gate", trained["run_dir"])

    @task
    def register(trained: dict, _gated: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("register", trained["run_dir"])

    @task
    def report(trained: dict, _registered: dict) -> dict:
        from recops.orchestration.airflow_runner import run_stage

        return run_stage("report", trained["run_dir"])

    accepted = validate(ingest())
    trained = train(accepted, features(accepted))
    registered = register(trained, gate(trained, evaluate(trained)))
    report(trained, registered)


recops_pipeline()
