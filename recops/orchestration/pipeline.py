"""The pipeline's stages as plain functions: the Airflow DAG and `recops pipeline` both call these.

Each stage takes the settings, a run id and the small outputs of the stages before it (ids and
paths, never data), does its work through the owning area's module (imported inside the body:
this is the composition root), and returns a small JSON-able dict. Stages hand results to each
other through the run directory (:class:`recops.core.runs.RunDir`), which writes every file and
audit record. Stages are idempotent: rerunning one with the same inputs returns the same
outputs without redoing the work (training, registering) or re-charging the privacy budget.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops import schema
from recops.config import Settings
from recops.core.hashing import code_version, sha256_json
from recops.core.runs import RunDir
from recops.errors import ConfigError, DataError
from recops.schema import METRIC_KEYS

STAGES = ("ingest", "validate", "features", "train", "evaluate", "gate", "register", "report")

# ---------------------------------------------------------------------------------------------
# Run ids and settings


def new_run_id() -> str:
    """A sortable, unique, path-safe run id: ``YYYYmmddTHHMMSSZ-<6 hex>``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def safe_run_id(raw: str) -> str:
    """An Airflow run id (``manual__2026-01-01T00:00:00+00:00``) as a directory name."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._")
    if not out:
        raise ConfigError(f"run id {raw!r} has no usable characters")
    return out[:120]


def config_hash(settings: Settings) -> str:
    """What a training's reuse key records of the settings."""
    return sha256_json(settings.public_dict())


# ---------------------------------------------------------------------------------------------
# Stages


def ingest(settings: Settings, run_id: str) -> dict[str, Any]:
    """Load the configured dataset and stage it for validation; returns its ``staged_id``."""
    from recops.data.loaders import FILES, load_dataset
    from recops.data.tables import stage

    if settings.data.dataset == FILES:  # a team's events streamed, one chunk at a time
        from recops.data.team_stage import stage_files

        staged = stage_files(settings)
        staged_id, rows, source = staged.staged_id, staged.rows, staged.source
    else:
        tables = load_dataset(settings)
        staged_id = stage(settings.paths.staging, tables)
        rows = {name: len(df) for name, df in tables.as_dict().items()}
        source = tables.source
    RunDir.of(settings, run_id).audit(
        "ingest", inputs={"dataset": settings.data.dataset}, outputs={"staged_id": staged_id},
        details={"rows": rows, "source": source})
    return {"staged_id": staged_id, "source": source, "rows": rows}


def validate(settings: Settings, run_id: str, staged_id: str) -> dict[str, Any]:
    """Validate a staged batch with Great Expectations; accepted tables land in the lake.

    A blocking failure quarantines the batch whole and raises ``ValidationFailed``: the stages
    after this one never run on it.
    """
    from validation.gate import accept_or_quarantine

    accepted = accept_or_quarantine(settings, staged_id, run_id=run_id)
    report = str(accepted.data_docs) if accepted.data_docs else None
    out = {"dataset_version": accepted.dataset_version, "passed": True, "report": report}
    RunDir.of(settings, run_id).write_json(
        RunDir.VALIDATION, {**out, "staged_id": staged_id, "summary": accepted.summary()})
    return out


def features(settings: Settings, run_id: str, dataset_version: str) -> dict[str, Any]:
    """Write the Feast sources from the lake, ``feast apply`` and materialise the online store.

    ``feast_store.apply``/``materialize`` write the ``features.*`` audit records themselves.
    """
    from recops.core.lake import Lake
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.orchestration.fit import check_version

    lake = Lake(settings.paths.lake)
    check_version(lake, dataset_version)
    sources = build_sources(settings, lake)
    applied = feast_store.apply(settings, run_id=run_id)
    materialized = feast_store.materialize(settings, run_id=run_id)
    out = {"dataset_version": dataset_version, "feature_service": schema.FEATURE_SERVICE,
           "project": applied.get("project"),
           "views": {k: v.get("action") for k, v in materialized.get("views", {}).items()}}
    RunDir.of(settings, run_id).write_json(
        RunDir.FEATURES, {**out, "sources": sources, "materialized": materialized})
    return out


def train(settings: Settings, run_id: str, dataset_version: str, *,
          progress: bool = False) -> dict[str, Any]:
    """Train on point-in-time features from Feast, centralised or federated by ``train.mode``."""
    from recops.orchestration.fit import fit, lake_tables, training_data

    run = RunDir.of(settings, run_id)
    key = {"dataset_version": dataset_version, "config_hash": config_hash(settings)}
    if run.done(RunDir.TRAIN, key) and run.has(RunDir.CHECKPOINT):
        return {"run_dir": str(run.path), "reused": True}
    tables = lake_tables(settings, dataset_version)
    fit(settings, run, tables, training_data(settings, tables), key=key, progress=progress)
    return {"run_dir": str(run.path), "reused": False}


def test_metrics(model: Any, data: Any) -> dict[str, Any]:
    """Test-split metrics, overall and per segment, as plain floats."""
    from recops.training.evaluation import evaluate_model

    res = evaluate_model(model, data, split="test", k=10, segments=True)
    return {"overall": {k: float(v) for k, v in res.overall.items()},
            "per_segment": res.per_segment, "n_users": int(res.n_users)}


def evaluate(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Full-ranking metrics on the test split, overall and per segment -> ``metrics.json``."""
    return evaluate_run(settings, RunDir.of(settings, Path(run_dir).name))


def evaluate_run(settings: Settings, run: RunDir, *, users: list[int] | None = None,
                 champion: Any | None = None) -> dict[str, Any]:
    """Score a run's model on its test labels (of ``users`` only, when given) -> ``metrics.json``.

    With ``champion`` (a registered model) it is scored on exactly the same users and items
    -> ``champion_metrics.json``, which the gate then compares against. Reuses the metrics of
    an unchanged checkpoint.
    """
    from recops.orchestration.fit import run_data
    from recops.training.evaluation import model_for_data

    ckpt_hash = run.sha256(RunDir.CHECKPOINT)
    path = str(run.file(RunDir.METRICS))
    if run.done(RunDir.METRICS, {"checkpoint_sha256": ckpt_hash}):
        out = {"metrics": run.read_json(RunDir.METRICS)["overall"], "path": path}
        if champion is not None:
            out["champion_metrics"] = run.read_json(RunDir.CHAMPION_METRICS)["overall"]
        return out
    from recops.training.models import Pop, read_checkpoint
    from recops.training.trainer import fit_popularity

    data = run_data(settings, run)
    # The baseline the gate compares with: popularity counted on the run's whole training data.
    popularity = fit_popularity(Pop(data.n_items), data)
    if users is not None:
        data = data.subset(users)
    model, mdata = model_for_data(read_checkpoint(run.file(RunDir.CHECKPOINT)), data)
    ours = test_metrics(model, mdata)
    ours["baseline"] = {"kind": "pop", "overall": test_metrics(popularity, data)["overall"]}
    scope = {"split": "test", "k": 10} if users is None else {"split": "test", "k": 10,
                                                              "period": "newest"}
    details: dict[str, Any] = {"overall": ours["overall"], "n_users": ours["n_users"],
                               "baseline": ours["baseline"]["overall"]}
    inputs: dict[str, Any] = {"checkpoint_sha256": ckpt_hash}
    result = {"metrics": ours["overall"], "path": path}
    if champion is not None:
        cmodel, cdata = model_for_data(champion.checkpoint, data)
        theirs = test_metrics(cmodel, cdata)
        run.write_json(RunDir.CHAMPION_METRICS, {**theirs, **scope, "tag": champion.tag})
        details["champion"] = theirs["overall"]
        inputs["champion"] = champion.tag
        result["champion_metrics"] = theirs["overall"]
    run.write_json(RunDir.METRICS, {**scope, **ours, "checkpoint_sha256": ckpt_hash})
    run.audit("evaluate", inputs=inputs, outputs={"metrics_sha256": run.sha256(RunDir.METRICS)},
              details=details)
    return result


def challenger_metadata(settings: Settings, run: RunDir) -> dict[str, Any]:
    """The registry metadata of a run's model (docs/architecture.md, "Registry metadata")."""
    from recops.training.privacy import PrivacyLedger, default_population

    info = run.read_json(RunDir.TRAIN)
    metrics = run.read_json(RunDir.METRICS)
    validation = run.read_json(RunDir.VALIDATION) if run.has(RunDir.VALIDATION) else {}
    population = default_population(settings)
    eps, delta = PrivacyLedger(settings.paths.privacy_ledger).total(population)
    return {
        "run_id": info.get("run_id", run.run_id),
        "metrics": {k: metrics["overall"].get(k) for k in METRIC_KEYS},
        "baseline_metrics": {k: (metrics.get("baseline") or {}).get("overall", {}).get(k)
                             for k in METRIC_KEYS},
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
    from recops.release.gate import decide, policy_estimate

    run = RunDir.of(settings, Path(run_dir).name)
    key = {"checkpoint_sha256": run.read_json(RunDir.METRICS)["checkpoint_sha256"]}
    if run.done(RunDir.GATE, key):
        return {"passed": run.read_json(RunDir.GATE)["passed"],
                "path": str(run.file(RunDir.GATE))}
    challenger = challenger_metadata(settings, run)
    champ_tag = registry.champion_tag(settings)
    champion = registry.metadata(settings, champ_tag) if champ_tag else None
    if champion is not None and run.has(RunDir.CHAMPION_METRICS):
        rescored = run.read_json(RunDir.CHAMPION_METRICS)
        champion = {**champion, "metrics": rescored["overall"],
                    "per_segment": rescored.get("per_segment", {})}
    decision = decide(settings, challenger, champion, policy_estimate(settings))
    out = {**key, "passed": bool(decision.promote), "champion": champ_tag,
           "challenger_run": challenger["run_id"], **decision.to_dict()}
    run.write_json(RunDir.GATE, out)
    run.audit("gate", inputs={**key, "champion": champ_tag}, outputs={"promote": out["passed"]},
              result="ok" if out["passed"] else "rejected",
              details={"reasons": decision.reasons, "checks": decision.checks})
    return {"passed": out["passed"], "path": str(run.file(RunDir.GATE)),
            "reasons": decision.reasons}


def register(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """Register the model in the BentoML store with its metadata; promote it if the gate passed.

    A model that fails the gate is still registered (for the record) but the champion stays.
    ``registry.register``/``promote`` write the ``register``/``promote`` audit records.
    """
    from recops.release import registry
    from recops.training.models import read_checkpoint

    run = RunDir.of(settings, Path(run_dir).name)
    g = run.read_json(RunDir.GATE)
    key = {"checkpoint_sha256": g["checkpoint_sha256"]}
    if run.done(RunDir.REGISTER, key):
        done = run.read_json(RunDir.REGISTER)
        return {"tag": done["tag"], "promoted": done["promoted"]}
    metadata = challenger_metadata(settings, run)
    metadata["gate"] = {"passed": g["passed"], "champion": g.get("champion"),
                        "reasons": g.get("reasons", [])}
    tag = registry.register(settings, read_checkpoint(run.file(RunDir.CHECKPOINT)), metadata)
    promoted = False
    if g["passed"]:
        registry.promote(settings, tag, reason="gate", decision={
            k: g.get(k) for k in ("promote", "reasons", "checks")})
        promoted = True
    run.write_json(RunDir.REGISTER, {**key, "tag": tag, "promoted": promoted,
                                     "champion": registry.champion_tag(settings)})
    return {"tag": tag, "promoted": promoted}


def report(settings: Settings, run_id: str, run_dir: str) -> dict[str, Any]:
    """The compliance report of this run's model (HTML under ``paths.reports``)."""
    from recops.compliance.report import build_report

    run = RunDir.of(settings, Path(run_dir).name)
    tag = run.read_json(RunDir.REGISTER)["tag"]
    if run.done(RunDir.REPORT, {"tag": tag}) and Path(run.read_json(RunDir.REPORT)["report"]
                                                         ).exists():
        return {"report": run.read_json(RunDir.REPORT)["report"]}
    path = str(build_report(settings, tag, run_id=run_id))
    run.write_json(RunDir.REPORT, {"tag": tag, "report": path})
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
    done = release_stages(step, trained["run_dir"], evaluate)
    return {"run_id": run_id, "dataset_version": accepted["dataset_version"],
            "validation_report": accepted.get("report"), **done, "timings": timings}


def release_stages(step: StageTimer, run_dir: str,
                   evaluate_stage: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """evaluate → gate → register → report of a trained run, as a pipeline or a cycle ends."""
    evaluated = step("evaluate", evaluate_stage, run_dir)
    gated = step("gate", gate, run_dir)
    registered = step("register", register, run_dir)
    reported = step("report", report, run_dir)
    return {"run_dir": run_dir, "metrics": evaluated["metrics"],
            "champion_metrics": evaluated.get("champion_metrics"),
            "gate_passed": gated["passed"], "reasons": gated.get("reasons", []),
            "tag": registered["tag"], "promoted": registered["promoted"],
            "report": reported.get("report")}


def summary_of_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """The same summary as :func:`run_pipeline`, read back from a finished run's directory."""
    run = RunDir.of(settings, run_id)
    if not run.path.exists():
        raise DataError(f"no run directory {run.path}: the run did not start")
    val = run.read_json(RunDir.VALIDATION)
    metrics = run.read_json(RunDir.METRICS)
    g = run.read_json(RunDir.GATE)
    reg = run.read_json(RunDir.REGISTER)
    rep = run.read_json(RunDir.REPORT) if run.has(RunDir.REPORT) else {}
    return {"run_id": run_id, "run_dir": str(run.path), "dataset_version": val["dataset_version"],
            "validation_report": val.get("report"), "metrics": metrics["overall"],
            "per_segment": metrics.get("per_segment", {}), "gate_passed": g["passed"],
            "tag": reg["tag"], "promoted": reg["promoted"], "report": rep.get("report")}
