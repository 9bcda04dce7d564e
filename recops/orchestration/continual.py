"""Continual retraining: fold the feedback gathered since the last cycle into the champion.

One cycle (the ``recops_retrain`` DAG, or :func:`run_cycle` without Airflow)::

    collect   feedback events since the watermark -> <run>/feedback.parquet
    validate  Great Expectations on the batch; good rows land in the lake, rows that fail a
              row-wise check are quarantined as rows with their reason (a batch with no good
              row, or failing as a whole, is quarantined whole and the cycle stops); the
              watermark moves on
    features  the pipeline's stage: sources rebuilt from the lake, Feast apply + materialise
    train     warm start from the champion on the new window (users active in the batch)
              plus a replay sample of the other users, so older users are not forgotten
    evaluate  challenger and champion on the same newest-period test set
    gate / register / report   the pipeline's stages (champion kept when the gate refuses)

The privacy ledger is shared by every run and cycle, so DP spends add up across cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recops import schema
from recops.config import Settings
from recops.core.runs import RunDir
from recops.core.watermark import advance, read_state, watermark
from recops.errors import TrainingError, ValidationFailed
from recops.orchestration import pipeline

# Fine-tuning from a good champion needs fewer epochs than training from scratch: the epochs
# when retrain.finetune_epochs is unset (or train.epochs, when fewer).
FINETUNE_EPOCHS = 5

STAGES = ("collect", "validate", "features", "train", "evaluate", "gate", "register", "report")


def pending(settings: Settings) -> int:
    """How many feedback events wait for the next cycle."""
    from recops.core.feedback import open_log

    log = open_log(settings)
    df, _ = log.read(watermark(read_state(settings), log.name))
    return len(df)


# ---------------------------------------------------------------------------------------------
# Stages


def check_feedback(settings: Settings, run_id: str, retrains_active: int = 0,
                   min_events: int | None = None) -> dict[str, Any]:
    """For the watcher DAG: the pending count, and ``skip`` when below ``min_events``
    (unset: ``platform.min_new_events``, the count that fires the retraining asset), or while
    ``retrains_active`` retraining runs are queued or running (they take what is pending: the
    count falls only once a cycle lands its batch, so firing then would queue a second run)."""
    min_events = min_events or settings.platform.min_new_events
    n = pending(settings)
    out: dict[str, Any] = {"pending": n, "min_events": min_events}
    if n < min_events:
        out["skip"] = f"{n} new feedback event(s) < {min_events}: no retrain yet"
    elif retrains_active:
        out["skip"] = (f"{n} new feedback event(s), but {retrains_active} retraining run(s) "
                       "queued or running will take them: no second asset event")
    return out


def collect(settings: Settings, run_id: str, min_events: int = 1) -> dict[str, Any]:
    """Snapshot the feedback since the watermark into the run directory as interactions."""
    from recops.core.feedback import open_log
    from recops.core.tombstones import drop_erased

    run = RunDir.of(settings, run_id)
    if run.has(RunDir.COLLECT):  # a retry: the same batch, whatever arrived since
        collected: dict[str, Any] = run.read_json(RunDir.COLLECT)
        return collected
    log = open_log(settings)
    since = watermark(read_state(settings), log.name)
    df, until = log.read(since)
    cols = [c for c in schema.PANDAS_DTYPES[schema.INTERACTIONS] if c in df.columns]
    # Events of an erased subject (logged while the erasure ran) never reach the run's files.
    batch, erased_dropped = drop_erased(df[cols], settings.paths.lake)
    if len(batch) < min_events:
        return {"skip": f"{len(batch)} new feedback event(s) since offset {since} < {min_events}"
                + (f" ({erased_dropped} of an erased subject dropped)" if erased_dropped else ""),
                "n_events": len(batch)}
    path = run.write_frame(RunDir.FEEDBACK, batch)
    ts = batch[schema.EVENT_TIMESTAMP]
    out = {"batch": str(path), "n_events": len(batch), "from_offset": since, "to_offset": until,
           "log": log.name, "erased_dropped": erased_dropped,
           "users": int(batch[schema.USER_ID].nunique()),
           "start": ts.min().isoformat(), "end": ts.max().isoformat()}
    run.write_json(RunDir.COLLECT, out)
    run.audit("feedback", inputs={"from_offset": since, "to_offset": until},
              outputs={"batch_sha256": run.sha256(RunDir.FEEDBACK)},
              details={"events": len(batch)})
    return out


def validate(settings: Settings, run_id: str, batch: str) -> dict[str, Any]:
    """Validate the feedback batch; land its good rows in the lake and quarantine the bad ones.

    Rows that fail a row-wise check (a repeat, an unknown item, a rating out of range, ...) are
    quarantined as rows, each with its reason, and the rest of the period goes on. The batch is
    quarantined whole, and the cycle stops, only when no row is good or a failure concerns the
    batch itself (its columns).
    """
    import pandas as pd

    from recops.core.lake import Lake
    from validation.gate import quarantine_feedback, validate_feedback
    from validation.rows import row_reasons

    run = RunDir.of(settings, run_id)
    col = run.read_json(RunDir.COLLECT)
    df = pd.read_parquet(batch)
    checked = validate_feedback(settings, df, run_id=run_id, quarantine_failed=False,
                                row_index=True)
    rows_out: dict[str, Any] = {"quarantined_rows": 0, "rows_quarantine": None}
    if not checked.passed:
        reasons = row_reasons(checked.result, df)
        bad = reasons != "" if reasons is not None else None
        if reasons is not None and bad is not None and not bad.all():
            qpath = quarantine_feedback(
                settings, df[bad].assign(quarantine_reason=reasons[bad]), failed=checked.failed,
                reason=f"{int(bad.sum())} of {len(df)} feedback events failed row-wise checks "
                       f"(see the quarantine_reason column); the other {int((~bad).sum())} "
                       "went on to training.", result=None, run_id=run_id)
            rows_out = {"quarantined_rows": int(bad.sum()), "rows_quarantine": str(qpath)}
            df = df[~bad].reset_index(drop=True)
            # The rows that go on must pass the suite on their own.
            checked = validate_feedback(settings, df, run_id=run_id, quarantine_failed=False)
    if not checked.passed:
        # The batch is quarantined whole (nothing lost): the next cycle starts after it.
        qpath = quarantine_feedback(settings, df, failed=checked.failed,
                                    reason="Blocking expectations failed.",
                                    result={"feedback": checked.result.gx_result}, run_id=run_id)
        advance(settings, run_id, col["from_offset"], col["to_offset"], col.get("log", "file"))
        raise ValidationFailed(
            f"feedback batch (offsets {col['from_offset']}-{col['to_offset']}, "
            f"{len(df)} events) failed validation: {'; '.join(checked.failed[:5])}; "
            f"quarantined at {qpath}", quarantine_path=str(qpath), failed=checked.failed)
    lake = Lake(settings.paths.lake)
    manifest = lake.append(schema.INTERACTIONS, df,
                           source=f"feedback:{col['from_offset']}-{col['to_offset']}")
    version = lake.dataset_version()
    advance(settings, run_id, col["from_offset"], col["to_offset"], col.get("log", "file"))
    users = sorted(int(u) for u in df[schema.USER_ID].unique())
    run.write_json(RunDir.WINDOW, {"users": users, "start": col["start"], "end": col["end"],
                                   "batch_id": manifest.batch_id})
    report = str(checked.data_docs) if checked.data_docs else None
    run.write_json(RunDir.VALIDATION, {"dataset_version": version, "passed": True,
                                       "report": report, "batch_id": manifest.batch_id,
                                       **rows_out})
    return {"dataset_version": version, "rows": len(df), "passed": True, "report": report,
            **rows_out}


def train(settings: Settings, run_id: str, dataset_version: str, *,
          replay_fraction: float | None = None, finetune_epochs: int | None = None,
          progress: bool = False) -> dict[str, Any]:
    """Warm-start the champion on the new window's users plus a replay sample of the others.

    ``replay_fraction`` and ``finetune_epochs`` unset: ``retrain.replay_fraction`` and
    ``retrain.finetune_epochs`` (itself unset: min(train.epochs, 5)).
    """
    import numpy as np

    from recops.orchestration.fit import fit, lake_tables, training_data
    from recops.release import registry
    from recops.training.splits import SPLIT, leave_last_out_labels

    if replay_fraction is None:
        replay_fraction = settings.retrain.replay_fraction
    if not 0 <= replay_fraction <= 1:
        raise TrainingError(f"replay_fraction must lie in [0, 1], got {replay_fraction}")
    run = RunDir.of(settings, run_id)
    champion = registry.load(settings, registry.CHAMPION)
    # Fine-tune the champion as it is: its kind (model selection may have chosen it), fewer
    # epochs, no new selection.
    epochs = (finetune_epochs or settings.retrain.finetune_epochs
              or min(settings.train.epochs, FINETUNE_EPOCHS))
    settings = settings.model_copy(update={
        "train": settings.train.model_copy(update={"epochs": epochs, "candidates": []}),
        "privacy": settings.privacy.model_copy(update={"dp_epochs": epochs}),
        "model": settings.model.model_copy(update={"kind": champion.checkpoint["kind"]})})
    key = {"dataset_version": dataset_version, "config_hash": pipeline.config_hash(settings),
           "replay_fraction": replay_fraction}
    if run.done(RunDir.TRAIN, key) and run.has(RunDir.CHECKPOINT):
        return {"run_dir": str(run.path), "reused": True}
    tables = lake_tables(settings, dataset_version)
    window = run.read_json(RunDir.WINDOW)
    labels = leave_last_out_labels(tables.interactions)
    active = labels[schema.USER_ID].isin(window["users"])
    others = np.unique(labels.loc[~active, schema.USER_ID].to_numpy())
    rng = np.random.default_rng(settings.seed + len(window["users"]))
    replay = rng.choice(others, size=int(round(replay_fraction * len(others))), replace=False) \
        if len(others) else others
    picked = labels[active | labels[schema.USER_ID].isin(replay)]
    eval_users = sorted(int(u) for u in picked.loc[
        picked[schema.USER_ID].isin(window["users"]) & (picked[SPLIT] == "test"),
        schema.USER_ID].unique())
    if not eval_users:
        raise TrainingError("no user of the new window has the 3+ events leave-last-out needs: "
                            "nothing to evaluate the newest period on; wait for more feedback")
    labelled = training_data(settings, tables, labels=picked)
    run.write_json(RunDir.EVAL_USERS, eval_users)
    fit(settings, run, tables, labelled, key=key, init=champion.checkpoint, progress=progress,
        details={"warm_start_from": champion.tag, "replay_users": len(replay),
                 "window_users": len(window["users"]), "eval_users": len(eval_users)})
    return {"run_dir": str(run.path), "reused": False}


def evaluate(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Challenger and champion on the newest period's test labels (same users, same items)."""
    from recops.release import registry

    run = RunDir.of(settings, Path(run_dir).name)
    champion = registry.load(settings, run.read_json(RunDir.TRAIN)["warm_start_from"])
    return pipeline.evaluate_run(settings, run, users=run.read_json(RunDir.EVAL_USERS),
                                 champion=champion)


# ---------------------------------------------------------------------------------------------
# Without Airflow


def run_cycle(settings: Settings, run_id: str | None = None, *, min_events: int = 1,
              replay_fraction: float | None = None, finetune_epochs: int | None = None,
              progress: bool = False,
              on_stage: Callable[[str, dict[str, Any], float], None] | None = None
              ) -> dict[str, Any]:
    """One retraining cycle in this process; ``{"skipped": reason}`` when there is no feedback."""
    run_id = run_id or "retrain-" + pipeline.new_run_id()
    step = pipeline.StageTimer(settings, run_id, on_stage)
    timings = step.timings

    col = step("collect", collect, min_events=min_events)
    if "skip" in col:
        return {"run_id": run_id, "skipped": col["skip"], "timings": timings}
    accepted = step("validate", validate, col["batch"])
    step("features", pipeline.features, accepted["dataset_version"])
    trained = step("train", train, accepted["dataset_version"], replay_fraction=replay_fraction,
                   finetune_epochs=finetune_epochs, progress=progress)
    done = pipeline.release_stages(step, trained["run_dir"], evaluate)
    return {"run_id": run_id, "n_events": col["n_events"],
            "quarantined_rows": accepted.get("quarantined_rows", 0),
            "dataset_version": accepted["dataset_version"], **done, "timings": timings}
