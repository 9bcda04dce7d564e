"""
### recops_pipeline: the whole loop, once

ingest → validate (Great Expectations; a rejected batch is quarantined and the run stops) →
features (Feast apply + materialise) → train (centralised PyTorch or Flower federated, optional
Opacus DP) → evaluate (full ranking, per segment) → gate (challenger vs champion, privacy
budget) → register (BentoML model store; promoted when the gate passes) → report.

Each task imports the function of `recops.orchestration.pipeline` it runs (inside its body, so
parsing stays light) and calls it through `airflow_runner.run_stage`, passing ids and paths only.
Settings come from `RECOPS_CONFIG` / `RECOPS_HOME` in the worker's environment; the Params,
generated from the settings fields they set (`recops.orchestration.params`), override them for
one run (leave a Param empty for "as configured"). User mistakes (bad data, bad
settings) fail the task at once; other failures are retried.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from recops.orchestration.params import PIPELINE_PARAMS, dag_params


@dag(
    dag_id="recops_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "training"],
    doc_md=__doc__,
    default_args={"owner": "recops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    # Generated from the settings fields (type, choices, bounds, description); empty = as
    # configured.
    params=dag_params(PIPELINE_PARAMS),
)
def recops_pipeline() -> None:
    @task
    def ingest() -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.ingest)

    @task
    def validate(staged: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.validate, staged["staged_id"])

    @task
    def features(accepted: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.features, accepted["dataset_version"])

    @task(execution_timeout=timedelta(hours=6))
    def train(accepted: dict, _features: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.train, accepted["dataset_version"])

    @task
    def evaluate(trained: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.evaluate, trained["run_dir"])

    @task
    def gate(trained: dict, _evaluated: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.gate, trained["run_dir"])

    @task
    def register(trained: dict, _gated: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.register, trained["run_dir"])

    @task
    def report(trained: dict, _registered: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.report, trained["run_dir"])

    accepted = validate(ingest())
    trained = train(accepted, features(accepted))
    registered = register(trained, gate(trained, evaluate(trained)))
    report(trained, registered)


recops_pipeline()
