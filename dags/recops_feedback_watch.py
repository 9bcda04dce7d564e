"""
### recops_feedback_watch: turn "enough new feedback" into an asset event

Every `platform.feedback_watch_minutes` (5 by default), counts the feedback events logged since
the last retraining cycle. When there are at least `min_events` (default
`platform.min_new_events`, 100), its task succeeds and updates the `recops_feedback` asset, which
starts `recops_retrain`; otherwise the task is skipped and no asset event is emitted. While a
`recops_retrain` run is queued or running it is skipped too: that run takes what is pending, and
another asset event would only queue a second run for the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task

from recops.orchestration.airflow_runner import dag_settings
from recops.orchestration.params import WATCH_PARAMS, dag_params

FEEDBACK = Asset(name="recops_feedback", uri="recops://feedback/events", group="recops")
CONFIGURED = dag_settings()  # the interval and threshold `recops up` was given
WATCH = CONFIGURED.platform


@dag(
    dag_id="recops_feedback_watch",
    schedule=timedelta(minutes=WATCH.feedback_watch_minutes),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recops", "feedback"],
    doc_md=__doc__,
    default_args={"owner": "recops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    # min_events: platform.min_new_events, its default the configured value.
    params=dag_params(WATCH_PARAMS, CONFIGURED),
)
def recops_feedback_watch() -> None:
    @task(outlets=[FEEDBACK])
    def check_feedback(ti=None) -> dict:  # noqa: ANN001 - Airflow's RuntimeTaskInstance
        from recops.orchestration import continual
        from recops.orchestration.airflow_runner import run_stage

        busy = ti.get_dr_count(dag_id="recops_retrain", states=["queued", "running"])
        return run_stage(continual.check_feedback, busy)

    check_feedback()


recops_feedback_watch()
