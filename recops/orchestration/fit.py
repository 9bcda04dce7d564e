"""The one fit: every entry point (CLI, pipeline, retraining, federated) trains through here.

Data is built one way: leave-last-out labels from the lake's interactions, each with the
user's point-in-time history from Feast's offline store (``historical_sequences``), plus user
attributes. The trainer (centralised PyTorch or Flower, by ``train.mode``) returns a result and
this module hands it to the run directory, which writes the run's files and audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recops import schema
from recops.core.runs import RunDir
from recops.errors import DataError, TrainingError

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Settings
    from recops.core.lake import Lake


@dataclass
class LakeTables:
    """The lake's tables a model trains on, at one dataset version: ``interactions`` are the
    positive events (with their ``event_weight``) and ``negatives`` the negative ones, by
    ``data.event_roles`` (ignored events dropped)."""

    dataset_version: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    negatives: pd.DataFrame


def check_version(lake: Lake, dataset_version: str) -> str:
    """The lake's version, refused unless it is still the one this run validated."""
    current = lake.dataset_version()
    if current != dataset_version:
        raise DataError(f"the lake is at dataset version {current}, not {dataset_version} that "
                        "this run validated: new data landed since; start a new run")
    return current


def lake_tables(settings: Settings, dataset_version: str | None = None) -> LakeTables:
    """The lake's interactions split by role (``data.event_roles``), items and users;
    ``dataset_version`` must be the current one."""
    from recops.core.lake import Lake
    from recops.core.roles import split_roles

    lake = Lake(settings.paths.lake)
    current = (lake.dataset_version() if dataset_version is None
               else check_version(lake, dataset_version))
    interactions = lake.read(schema.INTERACTIONS)
    if interactions.empty:
        raise DataError(f"the lake at {settings.paths.lake} holds no interactions: run "
                        "`recops ingest` and `recops validate` first")
    roles = split_roles(interactions, settings.data.event_roles, where="the lake's interactions")
    if roles.positives.empty:
        raise DataError(f"none of the lake's {len(interactions)} interactions is a positive "
                        "by data.event_roles (roles and rating thresholds): nothing to train on")
    return LakeTables(current, roles.positives, lake.read_latest(schema.ITEMS),
                      lake.read_latest(schema.USERS), roles.negatives)


def ensure_features(settings: Settings, lake: Lake, *, run_id: str | None = None) -> bool:
    """Build the Feast sources and apply the repo when they do not match the lake; True if built.

    Training reads histories from Feast's offline store, so the sources must hold the lake's
    current data at ``model.max_len`` (the pipeline's features stage builds them; a bare
    ``recops train`` after ``recops validate`` gets them here).
    """
    from recops.errors import FeatureError
    from recops.features import feast_store
    from recops.features.featurize import build_sources, read_manifest

    try:
        manifest = read_manifest(settings)
        fresh = (manifest["dataset_version"] == lake.dataset_version()
                 and manifest["max_len"] == settings.model.max_len
                 and manifest.get("events") == settings.data.event_roles.model_dump(mode="json"))
    except FeatureError:
        fresh = False
    if fresh:
        return False
    build_sources(settings, lake)
    feast_store.apply(settings, run_id=run_id)
    return True


def training_data(settings: Settings, tables: LakeTables,
                  labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The labelled frame: leave-last-out labels (or ``labels``) with Feast's point-in-time
    ``recent_items`` before each label, plus user attributes."""
    from recops.features.feast_store import historical_sequences
    from recops.training.splits import leave_last_out_labels

    if labels is None:
        labels = leave_last_out_labels(tables.interactions)
    if labels.empty:
        raise TrainingError("no labels to train on: the lake holds no usable user history")
    labelled = historical_sequences(settings, labels)
    users = tables.users
    extra = [c for c in users.columns if c in schema.USER_OPTIONAL_COLUMNS
             and c not in labelled.columns]
    if extra:
        labelled = labelled.merge(users[[schema.USER_ID, *extra]], on=schema.USER_ID, how="left")
    return labelled


def run_data(settings: Settings, run: RunDir) -> Any:
    """The SequenceData a run trained on, rebuilt from its labelled frame and the lake."""
    from recops.training.sequences import SequenceData

    info = run.read_json(RunDir.TRAIN)
    tables = lake_tables(settings, info["dataset_version"])
    return SequenceData.from_labelled(run.read_frame(RunDir.LABELS), tables.items,
                                      interactions=tables.interactions,
                                      negatives=tables.negatives)


def fit(settings: Settings, run: RunDir, tables: LakeTables, labelled: pd.DataFrame, *,
        key: dict[str, Any], init: dict[str, Any] | None = None, progress: bool = False,
        resume: bool = False, on_round: Callable[[dict[str, Any]], None] | None = None,
        details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one model (centralised or federated by ``train.mode``) and keep it in ``run``.

    With ``train.distributed`` above one process (centralised), torchrun trains it
    (:func:`recops.training.launch.train_distributed`; its log under ``<run>/ddp``).
    Writes the labelled frame, the trainer's result (checkpoint, history, privacy), the
    training record ``train.json`` (``key`` — the inputs that make this training reusable —
    plus what happened, plus ``details``) and the ``train`` audit record. Returns the record.
    """
    from recops.training.distributed import world_size
    from recops.training.privacy import PrivacyLedger
    from recops.training.sequences import SequenceData

    data = SequenceData.from_labelled(labelled, tables.items, interactions=tables.interactions,
                                      negatives=tables.negatives)
    run.write_frame(RunDir.LABELS, labelled)
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    distributed = world_size(settings) > 1
    if distributed and settings.train.mode == "federated":
        raise TrainingError("train.distributed is for centralised training; federated "
                            "training spreads over Flower clients (federated.*): set "
                            "train.distributed.nproc_per_node 1 and nnodes 1")
    if distributed and settings.train.candidates:
        raise TrainingError("train.candidates (model selection) trains in one process: clear "
                            "the candidates or set train.distributed.nproc_per_node 1")
    started = time.perf_counter()
    federated: dict[str, Any] | None = None
    if settings.train.mode == "federated":
        if resume:
            raise TrainingError("resume is for centralised training; a federated run starts over")
        from federated.runner import train_federated

        result = train_federated(settings, data, init=init, ledger=ledger, run_dir=run.path,
                                 run_id=run.run_id, on_round=on_round)
        fed = settings.federated
        federated = {"rounds": fed.rounds, "strategy": fed.strategy, "partition": fed.partition,
                     **(result.checkpoint.get("federated") or {}),
                     "num_clients": fed.num_clients, "engine": fed.engine,
                     "client_dp": fed.client_dp}
    elif settings.train.candidates:
        if resume or init is not None:
            raise TrainingError("train.candidates (model selection) trains each kind from "
                                "scratch: it cannot resume or warm-start; clear the candidates")
        result, candidates = select_model(settings, data, progress=progress)
        details = {**(details or {}), "candidates": candidates}
    elif distributed:
        if resume:
            raise TrainingError("resume is for one training process: with "
                                "train.distributed a run starts over")
        from recops.training.launch import train_distributed

        result = train_distributed(settings, data, run.file("ddp"), init=init,
                                   run_id=run.run_id, progress=progress)
        details = {**(details or {}), "distributed": result.checkpoint.get("distributed")}
    else:
        from recops.training.trainer import train_model

        result = train_model(settings, data, init=init, progress=progress, ledger=ledger,
                             run_id=run.run_id,
                             resume_from=run.load_resume() if resume else None,
                             on_epoch=run.save_resume)
    result.checkpoint.setdefault("run_id", run.run_id)
    result.save(run)
    info = {**key, "run_id": run.run_id, "mode": settings.train.mode,
            "kind": result.checkpoint.get("kind"), "privacy": result.privacy,
            "federated": federated, "epochs_run": len(result.history),
            "valid_metrics": result.valid_metrics,
            "valid_per_segment": result.checkpoint.get("valid_per_segment", {}),
            "warm_start": init is not None, "n_users": int(data.n_users),
            "n_items": int(data.n_items),
            "train_seconds": round(time.perf_counter() - started, 2), **(details or {})}
    run.write_json(RunDir.TRAIN, info)
    run.audit("train", inputs={**key, "labels_sha256": run.sha256(RunDir.LABELS)},
              outputs={"checkpoint_sha256": run.sha256(RunDir.CHECKPOINT)},
              details={k: info.get(k) for k in ("mode", "kind", "epochs_run", "train_seconds",
                                                "privacy", "warm_start", "federated",
                                                *(details or {}))})
    return info


def select_model(settings: Settings, data: Any, *, progress: bool = False
                 ) -> tuple[Any, list[dict[str, Any]]]:
    """Train every kind of ``train.candidates``; the best on validation ``gate.metric`` wins.

    Returns the winner's result and one row per candidate (kind, validation metrics, seconds,
    chosen). Refused with DP on: each candidate and the choice itself would spend privacy that
    no accountant here records; choose the kind on public or synthetic data instead.
    """
    from recops.errors import ConfigError
    from recops.training.trainer import train_model

    if settings.privacy.enabled:
        raise ConfigError("train.candidates with privacy.enabled: selecting among models "
                          "trained on private data spends privacy that is not accounted; "
                          "choose model.kind on public or synthetic data, or clear candidates")
    kinds = list(dict.fromkeys(settings.train.candidates))
    metric = settings.gate.metric
    rows: list[dict[str, Any]] = []
    best: Any = None
    for kind in kinds:
        s = settings.model_copy(update={"model": settings.model.model_copy(update={"kind": kind})})
        t0 = time.perf_counter()
        result = train_model(s, data, progress=progress)
        rows.append({"kind": kind, "valid": result.valid_metrics,
                     "seconds": round(time.perf_counter() - t0, 2), "chosen": False})
        if best is None or result.valid_metrics[metric] > best[1].valid_metrics[metric]:
            best = (len(rows) - 1, result)
    rows[best[0]]["chosen"] = True
    return best[1], rows
