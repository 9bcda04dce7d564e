"""The pipeline's stages as plain functions: the Airflow DAG and `recops pipeline` both call these.

Each stage takes the settings, a run id and the small outputs of the stages before it (ids and
paths, never data), does its work through the owning area's module (imported inside the body:
this is the composition root), appends an audit record and returns a small JSON-able dict.
Stages are idempotent: rerunning one with the same inputs returns the same outputs without
redoing the work (training, registering) or re-charging the privacy budget.

Stages hand results to each other through the run directory ``<runs>/<run_id>/``:
``validation.json``, ``features.json``, ``train.json``, ``checkpoint.pt``, ``history.json``,
``privacy.json``, ``federated_rounds.json``, ``labels.parquet``, ``metrics.json``, ``gate.json``,
``register.json``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops import schema
from recops.compliance.audit import AuditLog
from recops.config import Settings, load_settings
from recops.errors import ConfigError, DataError, TrainingError
from recops.hashing import code_version, sha256_file, sha256_json

STAGES = ("ingest", "validate", "features", "train", "evaluate", "gate", "register", "report")
METRIC_KEYS = ("hr@10", "ndcg@10", "mrr", "coverage@10")

# Airflow Params (and `recops run` flags) -> settings keys. None means "as configured".
PARAM_SETTINGS = {
    "dataset": "data.dataset",
    "mode": "train.mode",
    "dp": "privacy.enabled",
    "budget_epsilon": "privacy.budget_epsilon",
    "target_epsilon": "privacy.target_epsilon",
    "epochs": "train.epochs",
    "federated_engine": "federated.engine",
    "clients": "federated.num_clients",
    "rounds": "federated.rounds",
}


# ---------------------------------------------------------------------------------------------
# Run ids, settings, small files


def new_run_id() -> str:
    """A sortable, unique, path-safe run id: ``YYYYmmddTHHMMSSZ-<6 hex>``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def safe_run_id(raw: str) -> str:
    """An Airflow run id (``manual__2026-01-01T00:00:00+00:00``) as a directory name."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._")
    if not out:
        raise ConfigError(f"run id {raw!r} has no usable characters")
    return out[:120]


def settings_from_params(params: Mapping[str, Any] | None) -> Settings:
    """Settings for an Airflow task: this process's settings (RECOPS_CONFIG) with Params applied."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(PARAM_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown pipeline param(s) {unknown}; expected {sorted(PARAM_SETTINGS)}")
    return load_settings(overrides={PARAM_SETTINGS[k]: v for k, v in params.items()
                                    if v is not None})


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.paths.runs / run_id


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path} is missing: run the stage that writes it first")
    return json.loads(path.read_text())


def _audit(settings: Settings, stage: str, run_id: str, *, inputs: dict[str, Any],
           outputs: dict[str, Any], result: str = "ok",
           details: dict[str, Any] | None = None) -> None:
    AuditLog(settings.paths.audit_log).append(
        stage, run_id=run_id, inputs=inputs, outputs=outputs, config=settings.public_dict(),
        result=result, details=details)


def _config_hash(settings: Settings) -> str:
    return sha256_json(settings.public_dict())




# ---------------------------------------------------------------------------------------------
# Stages


def ingest(settings: Settings, run_id: str) -> dict[str, Any]:
    """Load the configured dataset and stage it for validation; returns its ``staged_id``."""
    from recops.data.loaders import load_dataset
    from recops.data.tables import stage

    tables = load_dataset(settings)
    staged_id = stage(settings.paths.staging, tables)
    rows = {name: len(df) for name, df in tables.as_dict().items()}
    out = {"staged_id": staged_id, "source": tables.source, "rows": rows}
    _audit(settings, "ingest", run_id, inputs={"dataset": settings.data.dataset},
           outputs={"staged_id": staged_id}, details={"rows": rows, "source": tables.source})
    return out


def validate(settings: Settings, run_id: str, staged_id: str) -> dict[str, Any]:
    """Validate a staged batch with Great Expectations; accepted tables land in the lake.

    A blocking failure quarantines the batch whole and raises ``ValidationFailed``: the stages
    after this one never run on it.
    """
    from validation.gate import accept_or_quarantine

    accepted = accept_or_quarantine(settings, staged_id, run_id=run_id)
    report = str(accepted.data_docs) if accepted.data_docs else None
    out = {"dataset_version": accepted.dataset_version, "passed": True, "report": report}
    _write_json(run_dir(settings, run_id) / "validation.json",
                {**out, "staged_id": staged_id, "summary": _jsonable(accepted.summary())})
    return out


def features(settings: Settings, run_id: str, dataset_version: str) -> dict[str, Any]:
    """Write the Feast sources from the lake, ``feast apply`` and materialise the online store.

    ``feast_store.apply``/``materialize`` write the ``features.*`` audit records themselves.
    """
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.lake import Lake

    lake = Lake(settings.paths.lake)
    _check_version(lake, dataset_version)
    sources = build_sources(settings, lake)
    applied = feast_store.apply(settings, run_id=run_id)
    materialized = feast_store.materialize(settings, run_id=run_id)
    out = {"dataset_version": dataset_version, "feature_service": schema.FEATURE_SERVICE,
           "project": applied.get("project"),
           "views": {k: v.get("action") for k, v in materialized.get("views", {}).items()}}
    _write_json(run_dir(settings, run_id) / "features.json",
                {**out, "sources": _jsonable(sources), "materialized": _jsonable(materialized)})
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _check_version(lake: Any, dataset_version: str) -> None:
    current = lake.dataset_version()
    if current != dataset_version:
        raise DataError(f"the lake is at dataset version {current}, not {dataset_version} that "
                        "this run validated: new data landed since; start a new run")


def build_labelled(settings: Settings, interactions: Any, users: Any,
                   labels: Any | None = None) -> Any:
    """Leave-last-out labels with point-in-time histories from Feast, plus user attributes."""
    from recops.features.feast_store import historical_sequences
    from recops.training.splits import leave_last_out_labels

    if labels is None:
        labels = leave_last_out_labels(interactions)
    if labels.empty:
        raise TrainingError("no labels to train on: the lake holds no usable user history")
    labelled = historical_sequences(settings, labels)
    extra = [c for c in users.columns if c in schema.USER_OPTIONAL_COLUMNS
             and c not in labelled.columns]
    if extra:
        labelled = labelled.merge(users[[schema.USER_ID, *extra]], on=schema.USER_ID, how="left")
    return labelled


def train(settings: Settings, run_id: str, dataset_version: str, *,
          progress: bool = False) -> dict[str, Any]:
    """Train on point-in-time features from Feast, centralised or federated by ``train.mode``."""
    from recops.lake import Lake

    rdir = run_dir(settings, run_id)
    marker = rdir / "train.json"
    key = {"dataset_version": dataset_version, "config_hash": _config_hash(settings)}
    if _done(marker, key) and (rdir / "checkpoint.pt").exists():
        return {"run_dir": str(rdir), "reused": True}
    lake = Lake(settings.paths.lake)
    _check_version(lake, dataset_version)
    interactions = lake.read(schema.INTERACTIONS)
    items = lake.read_latest(schema.ITEMS)
    users = lake.read_latest(schema.USERS)
    labelled = build_labelled(settings, interactions, users)
    rdir.mkdir(parents=True, exist_ok=True)
    labelled.to_parquet(rdir / "labels.parquet", index=False)
    started = time.perf_counter()
    info = fit(settings, labelled, items, interactions, run_id=run_id, rdir=rdir,
               progress=progress)
    info["train_seconds"] = round(time.perf_counter() - started, 2)
    _write_json(marker, {**key, **info, "run_id": run_id})
    labels_hash = sha256_file(rdir / "labels.parquet")
    _audit(settings, "train", run_id,
           inputs={"dataset_version": dataset_version, "labels_sha256": labels_hash},
           outputs={"checkpoint_sha256": sha256_file(rdir / "checkpoint.pt")},
           details={k: info.get(k) for k in ("mode", "kind", "epochs_run", "train_seconds",
                                             "privacy", "warm_start", "federated")})
    return {"run_dir": str(rdir), "reused": False}


def _done(marker: Path, key: Mapping[str, Any]) -> bool:
    """Whether a stage already ran with exactly these inputs (its marker file records them)."""
    if not marker.exists():
        return False
    done = json.loads(marker.read_text())
    return all(done.get(k) == v for k, v in key.items())


def fit(settings: Settings, labelled: Any, items: Any, interactions: Any | None = None, *,
        run_id: str, rdir: Path, init: dict[str, Any] | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Train one model (centralised or federated) and write it and its records to ``rdir``."""
    from recops.training.models import save_checkpoint
    from recops.training.privacy import PrivacyLedger
    from recops.training.sequences import SequenceData

    data = SequenceData.from_labelled(labelled, items, interactions=interactions)
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    if settings.train.mode == "federated":
        from federated.runner import train_federated

        # Writes federated_rounds.json itself, one row per round.
        result = train_federated(settings, data, init=init, ledger=ledger, run_dir=rdir,
                                 run_id=run_id)
    else:
        from recops.training.trainer import train_model

        result = train_model(settings, data, init=init, progress=progress, ledger=ledger,
                             run_dir=rdir, run_id=run_id)
    ckpt = dict(result.checkpoint)
    ckpt.setdefault("run_id", run_id)
    save_checkpoint(ckpt, rdir / "checkpoint.pt")
    privacy = _jsonable(result.privacy) if result.privacy is not None else None
    _write_json(rdir / "history.json", _jsonable(result.history))
    _write_json(rdir / "privacy.json", privacy)
    federated = None
    if settings.train.mode == "federated":
        fed = settings.federated
        federated = _jsonable(ckpt.get("federated")) or {
            "rounds": fed.rounds, "strategy": fed.strategy, "partition": fed.partition}
        federated.setdefault("num_clients", fed.num_clients)
        federated["engine"] = fed.engine
        federated.setdefault("client_dp", fed.client_dp)
    return {"mode": settings.train.mode, "kind": ckpt.get("kind"), "privacy": privacy,
            "federated": federated, "epochs_run": len(result.history),
            "valid_metrics": _jsonable(result.valid_metrics), "warm_start": init is not None,
            "n_users": int(data.n_users), "n_items": int(data.n_items)}


def run_data(settings: Settings, rdir: Path, labels_file: str = "labels.parquet") -> Any:
    """The SequenceData of a run, rebuilt from its labelled frame and the lake it trained on."""
    import pandas as pd

    from recops.lake import Lake
    from recops.training.sequences import SequenceData

    info = _read_json(rdir / "train.json")
    lake = Lake(settings.paths.lake)
    _check_version(lake, info["dataset_version"])
    labelled = pd.read_parquet(rdir / labels_file)
    return SequenceData.from_labelled(labelled, lake.read_latest(schema.ITEMS),
                                      interactions=lake.read(schema.INTERACTIONS))


def metrics_of(model: Any, data: Any) -> dict[str, Any]:
    """Test-split metrics, overall and per segment, as plain floats."""
    from recops.training.evaluation import evaluate_model

    res = evaluate_model(model, data, split="test", k=10, segments=True)
    return {"overall": {k: float(v) for k, v in res.overall.items()},
            "per_segment": _jsonable(res.per_segment), "n_users": int(res.n_users)}


def evaluate(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Full-ranking metrics on the test split, overall and per segment -> ``metrics.json``."""
    from recops.training.evaluation import model_for_data
    from recops.training.models import read_checkpoint

    rdir = Path(run_dir)
    ckpt_hash = sha256_file(rdir / "checkpoint.pt")
    mpath = rdir / "metrics.json"
    if _done(mpath, {"checkpoint_sha256": ckpt_hash}):
        return {"metrics": _read_json(mpath)["overall"], "path": str(mpath)}
    model, data = model_for_data(read_checkpoint(rdir / "checkpoint.pt"), run_data(settings, rdir))
    out = {"split": "test", "k": 10, **metrics_of(model, data), "checkpoint_sha256": ckpt_hash}
    _write_json(mpath, out)
    _audit(settings, "evaluate", run_id, inputs={"checkpoint_sha256": ckpt_hash},
           outputs={"metrics_sha256": sha256_file(mpath)},
           details={"overall": out["overall"], "n_users": out["n_users"]})
    return {"metrics": out["overall"], "path": str(mpath)}


def challenger_metadata(settings: Settings, rdir: Path) -> dict[str, Any]:
    """The registry metadata of a run's model (docs/architecture.md, "Registry metadata")."""
    from recops.training.privacy import PrivacyLedger, default_population

    info = _read_json(rdir / "train.json")
    metrics = _read_json(rdir / "metrics.json")
    vpath = rdir / "validation.json"
    validation = json.loads(vpath.read_text()) if vpath.exists() else {}
    population = default_population(settings)
    eps, delta = PrivacyLedger(settings.paths.privacy_ledger).total(population)
    return {
        "run_id": info.get("run_id", rdir.name),
        "metrics": {k: metrics["overall"].get(k) for k in METRIC_KEYS},
        "per_segment": metrics.get("per_segment", {}),
        "privacy": info.get("privacy"),
        # Spent on these people over every run and cycle so far, this one included.
        "privacy_total": ({"population": population, "epsilon": eps, "delta": delta,
                           "budget_epsilon": settings.privacy.budget_epsilon}
                          if info.get("privacy") else {"population": population,
                                                       "epsilon": None, "delta": None,
                                                       "spent_before": eps}),
        "data_version": info.get("dataset_version"),
        "feature_service": schema.FEATURE_SERVICE,
        "code_version": code_version(),
        "config": settings.public_dict(),
        "training_mode": info.get("mode", settings.train.mode),
        "federated": info.get("federated"),
        "warm_start_from": info.get("warm_start_from"),
        "validation": {"passed": bool(validation.get("passed")),
                       "report": validation.get("report")},
    }


def gate(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Challenger vs champion (metric, segments, privacy budget, validation) -> ``gate.json``.

    When the run directory holds ``champion_metrics.json`` (a retrain cycle re-scored the
    champion on the same newest-period test set), those metrics stand for the champion's.
    """
    from recops.release import registry
    from recops.release.gate import decide

    rdir = Path(run_dir)
    gpath = rdir / "gate.json"
    metrics = _read_json(rdir / "metrics.json")
    key = {"checkpoint_sha256": metrics["checkpoint_sha256"]}
    if _done(gpath, key):
        return {"passed": _read_json(gpath)["passed"], "path": str(gpath)}
    challenger = challenger_metadata(settings, rdir)
    champ_tag = registry.champion_tag(settings)
    champion = registry.metadata(settings, champ_tag) if champ_tag else None
    cpath = rdir / "champion_metrics.json"
    if champion is not None and cpath.exists():
        rescored = _read_json(cpath)
        champion = {**champion, "metrics": rescored["overall"],
                    "per_segment": rescored.get("per_segment", {})}
    decision = decide(settings, challenger, champion)
    out = {**key, "passed": bool(decision.promote), "champion": champ_tag,
           "challenger_run": challenger["run_id"], **decision.to_dict()}
    _write_json(gpath, out)
    _audit(settings, "gate", run_id, inputs={**key, "champion": champ_tag},
           outputs={"promote": out["passed"]}, result="ok" if out["passed"] else "rejected",
           details={"reasons": decision.reasons, "checks": decision.checks})
    return {"passed": out["passed"], "path": str(gpath), "reasons": decision.reasons}


def register(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Register the model in the BentoML store with its metadata; promote it if the gate passed.

    A model that fails the gate is still registered (for the record) but the champion stays.
    ``registry.register``/``promote`` write the ``register``/``promote`` audit records.
    """
    from recops.release import registry
    from recops.training.models import read_checkpoint

    rdir = Path(run_dir)
    rpath = rdir / "register.json"
    g = _read_json(rdir / "gate.json")
    key = {"checkpoint_sha256": g["checkpoint_sha256"]}
    if _done(rpath, key):
        done = _read_json(rpath)
        return {"tag": done["tag"], "promoted": done["promoted"]}
    metadata = challenger_metadata(settings, rdir)
    metadata["gate"] = {"passed": g["passed"], "champion": g.get("champion"),
                        "reasons": g.get("reasons", [])}
    tag = registry.register(settings, read_checkpoint(rdir / "checkpoint.pt"), metadata)
    promoted = False
    if g["passed"]:
        registry.promote(settings, tag, reason="gate", decision={
            k: g.get(k) for k in ("promote", "reasons", "checks")})
        promoted = True
    _write_json(rpath, {**key, "tag": tag, "promoted": promoted,
                        "champion": registry.champion_tag(settings)})
    return {"tag": tag, "promoted": promoted}


def report(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """The compliance report of this run's model (HTML under ``paths.reports``)."""
    from recops.compliance.report import build_report

    rdir = Path(run_dir)
    reg = _read_json(rdir / "register.json")
    rpath = rdir / "report.json"
    if _done(rpath, {"tag": reg["tag"]}) and Path(_read_json(rpath)["report"]).exists():
        return {"report": _read_json(rpath)["report"]}
    path = str(build_report(settings, reg["tag"], run_id=run_id))
    _write_json(rpath, {"tag": reg["tag"], "report": path})
    return {"report": path}


# ---------------------------------------------------------------------------------------------
# Without Airflow


class StageTimer:
    """Calls stages with the shared settings and run id, timing each and reporting it."""

    def __init__(self, settings: Settings, run_id: str,
                 on_stage: Callable[[str, dict[str, Any], float], None] | None = None) -> None:
        self.settings, self.run_id, self.on_stage = settings, run_id, on_stage
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., dict[str, Any]], *args: Any,
                 **kw: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = fn(self.settings, self.run_id, *args, **kw)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        if self.on_stage:
            self.on_stage(name, out, self.timings[name])
        return out


def run_pipeline(settings: Settings, run_id: str | None = None, progress: bool = True,
                 on_stage: Callable[[str, dict[str, Any], float], None] | None = None
                 ) -> dict[str, Any]:
    """Run every stage in order in this process; returns the summary (ids, paths, metrics)."""
    run_id = run_id or new_run_id()
    step = StageTimer(settings, run_id, on_stage)
    timings = step.timings

    staged = step("ingest", ingest)
    accepted = step("validate", validate, staged["staged_id"])
    step("features", features, accepted["dataset_version"])
    trained = step("train", train, accepted["dataset_version"], progress=progress)
    rdir = trained["run_dir"]
    evaluated = step("evaluate", evaluate, rdir)
    gated = step("gate", gate, rdir)
    registered = step("register", register, rdir)
    reported = step("report", report, rdir)
    return {"run_id": run_id, "run_dir": rdir, "dataset_version": accepted["dataset_version"],
            "validation_report": accepted.get("report"), "metrics": evaluated["metrics"],
            "gate_passed": gated["passed"], "tag": registered["tag"],
            "promoted": registered["promoted"], "report": reported.get("report"),
            "timings": timings}


def summary_of_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """The same summary as :func:`run_pipeline`, read back from a finished run's directory."""
    rdir = run_dir(settings, run_id)
    if not rdir.exists():
        raise DataError(f"no run directory {rdir}: the run did not start")
    val = _read_json(rdir / "validation.json")
    metrics = _read_json(rdir / "metrics.json")
    g = _read_json(rdir / "gate.json")
    reg = _read_json(rdir / "register.json")
    rep = _read_json(rdir / "report.json") if (rdir / "report.json").exists() else {}
    return {"run_id": run_id, "run_dir": str(rdir), "dataset_version": val["dataset_version"],
            "validation_report": val.get("report"), "metrics": metrics["overall"],
            "per_segment": metrics.get("per_segment", {}), "gate_passed": g["passed"],
            "tag": reg["tag"], "promoted": reg["promoted"], "report": rep.get("report")}
