"""
### recops_retrain: fold accumulated feedback into the champion

Runs daily at 03:00 UTC **or** as soon as the `recops_feedback` asset is updated (the
`recops_feedback_watch` DAG updates it when enough new feedback events have landed).

collect (feedback since the last cycle's watermark) → validate (Great Expectations; a rejected
batch is quarantined whole and the cycle stops) → features (Feast) → train (warm start from the
champion on the new window plus a replay sample of older users) → evaluate (challenger and
champion on the newest period) → gate → register (promoted only when it beats the champion) →
report. The privacy ledger carries over: DP spends add up across cycles and the gate refuses a
model past the budget. With no new feedback the run is skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from recops.orchestration.params import RETRAIN_PARAMS, dag_params

FEEDBACK = Asset(name="recops_feedback", uri="recops://feedback/events", group="recops")


@dag(
    dag_id="recops_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=FEEDBACK),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "retraining", "feedback"],
    doc_md=__doc__,
    default_args={"owner": "recops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    # Generated from the settings fields (retrain.replay_fraction, ...); empty = as configured.
    params=dag_params(RETRAIN_PARAMS),
)
def recops_retrain() -> None:
    @task
    def collect() -> dict:
        from recops.orchestration import continual
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(continual.collect)

    @task
    def validate(col: dict) -> dict:
        from recops.orchestration import continual
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(continual.validate, col["batch"])

    @task
    def features(accepted: dict) -> dict:
        from recops.orchestration import pipeline
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(pipeline.features, accepted["dataset_version"])

    @task(execution_timeout=timedelta(hours=6))
    def train(accepted: dict, _features: dict) -> dict:
        from recops.orchestration import continual
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(continual.train, accepted["dataset_version"])

    @task
    def evaluate(trained: dict) -> dict:
        from recops.orchestration import continual
        from recops.orchestration.airflow_runner import run_stage

        return run_stage(continual.evaluate, trained["run_dir"])

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

    accepted = validate(collect())
    trained = train(accepted, features(accepted))
    registered = register(trained, gate(trained, evaluate(trained)))
    report(trained, registered)


recops_retrain()
