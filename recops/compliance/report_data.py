"""The records behind one model's compliance report, gathered into a :class:`ReportData`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops import schema
from recops.core.audit import AuditLog, ChainStatus, verify
from recops.errors import AuditError, DataError, RegistryError

if TYPE_CHECKING:
    from recops.config import Settings

RUN_FILES = ("validation.json", "features.json", "train.json", "history.json", "privacy.json",
             "federated_rounds.json", "metrics.json", "gate.json", "register.json")


@dataclass
class Figure:
    """One plot: what it shows, the series it was drawn from, and the PNG (base64)."""

    key: str
    title: str
    caption: str
    x_label: str
    series: dict[str, list[Any]]  # "x" and one list per line/bar, as read from the records
    png: str = ""


@dataclass
class ReportData:
    """Everything the template shows, gathered from the records."""

    tag: str
    metadata: dict[str, Any]
    run_id: str
    run_dir: Path
    champion: bool
    generated_at: str
    chain: ChainStatus
    run_files: dict[str, Any]
    missing_files: list[str]
    run_records: list[dict[str, Any]]
    lake: dict[str, list[dict[str, Any]]]
    superseded: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    privacy_total: dict[str, Any]
    privacy_words: list[str]
    segment_gap: dict[str, Any] | None
    retrain: dict[str, Any] | None
    figures: list[Figure] = field(default_factory=list)
    # Every erasure that removed rows, and whether this model's data version excludes them.
    erasures: list[dict[str, Any]] = field(default_factory=list)
    # The serving policy's off-policy click-rate estimate, when one was made (docs/policies.md).
    policy: dict[str, Any] | None = None


MISSING = object()  # a record file that is absent (a file holding JSON null is "recorded: none")


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"run record {path} is unreadable ({exc}); the report cannot vouch for "
                        "it: restore the file or rerun the stage that writes it") from exc


def _resolve_tag(settings: Settings, tag: str | None, run_id: str | None) -> str:
    from recops.release import registry

    if tag is None and run_id is not None:
        reg = _read_json(settings.paths.runs / run_id / "register.json")
        if not reg or not reg.get("tag"):
            raise RegistryError(f"run {run_id} registered no model (no register.json under "
                                f"{settings.paths.runs / run_id}): nothing to report on")
        tag = reg["tag"]
    return registry.resolve(settings, tag or registry.CHAMPION)


def _quarantined(settings: Settings) -> list[dict[str, Any]]:
    """Every quarantined batch's metadata (validation's ``meta.json``), oldest first."""
    root = settings.paths.quarantine
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            meta = d / "meta.json"
            if meta.is_file():
                m = _read_json(meta) or {}
                m["path"] = str(d)
                m["reason_file"] = str(d / "REASON.txt") if (d / "REASON.txt").is_file() else None
                out.append(m)
    return sorted(out, key=lambda m: str(m.get("created_at")))


def _lake(settings: Settings) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    from recops.core.lake import SUPERSEDE, Lake

    lake = Lake(settings.paths.lake)
    tables, superseded = {}, []
    for table in schema.TABLES:
        tables[table] = [asdict(b) for b in lake.batches(table)]
        superseded += [e for e in lake.log_entries(table) if e.get("op") == SUPERSEDE]
    return tables, superseded


def erasures_for(settings: Settings, data_version: str | None) -> list[dict[str, Any]]:
    """Each erasure that removed rows: its id and time, and ``excluded``: whether the dataset
    version ``data_version`` is free of the erased rows (no version holding them is it)."""
    from recops.compliance.subjects import versions_containing
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    out = []
    for r in AuditLog(settings.paths.audit_log).records():
        superseded = set(r.get("inputs", {}).get("superseded", [])) if r["stage"] == "erase" \
            else set()
        if superseded:
            held = versions_containing(lake, superseded)
            out.append({"erasure_id": r["details"].get("erasure_id"), "time": r.get("time"),
                        "excluded": data_version is not None and data_version not in held})
    return out


def _privacy(settings: Settings,
             meta: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from recops.training.privacy import PrivacyLedger, default_population

    spend = meta.get("privacy") or {}
    recorded_total = meta.get("privacy_total") or {}
    population = (spend.get("population") or recorded_total.get("population")
                  or default_population(settings))
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    entries = [s.to_dict() for s in ledger.entries(population)]
    eps = sum(e["epsilon"] for e in entries)
    delta = sum(e["delta"] for e in entries)
    budget = (meta.get("config") or {}).get("privacy", {}).get("budget_epsilon",
                                                                settings.privacy.budget_epsilon)
    upto = _spent_upto(entries, meta.get("run_id"))
    return entries, {"population": population, "epsilon_now": eps, "delta_now": delta,
                     "epsilon_at_model": upto, "budget_epsilon": budget,
                     "recorded": recorded_total, "runs": len({e.get("run_id") for e in entries}),
                     "left_now": budget - eps}


def _spent_upto(entries: list[dict[str, Any]], run_id: str | None) -> float | None:
    """ε charged to the population up to and including this model's run (None if not in it)."""
    idx = [i for i, e in enumerate(entries) if e.get("run_id") == run_id]
    return sum(e["epsilon"] for e in entries[: idx[-1] + 1]) if idx else None


def _clip_words(comp: dict[str, Any]) -> str:
    mechanism = str(comp.get("mechanism", ""))
    if mechanism.endswith("adaptive"):
        return "clipping norm adapted to the median per-user gradient norm, from"
    if mechanism.endswith("per-layer"):
        return "clipping norm split equally over the parameter tensors, in all"
    return "clipping norm"


def privacy_in_words(meta: dict[str, Any], total: dict[str, Any]) -> list[str]:
    """The guarantee as a reviewer would say it, every figure from the spend record."""
    spend = meta.get("privacy")
    if not spend:
        return ["This model was trained without differential privacy: it carries no formal "
                "guarantee about what it reveals of any one person's data."]
    parts = []
    components = spend.get("components") or {"": spend}
    for name, comp in components.items():
        unit = comp.get("unit", "user")
        who = ("one user (everything that user did: all of their events)" if unit == "user"
               else "one client (a whole group of users held by one participant)")
        eps, delta = float(comp["epsilon"]), float(comp["delta"])
        label = f" [{name.replace('_', '-')}]" if name else ""
        parts.append(
            f"Differential privacy{label}: adding or removing {who} changes the probability "
            f"of any outcome of training by at most a factor e^ε = {math.exp(eps):.3g} "
            f"(ε = {eps:.4g}), except with probability δ = {delta:.3g}. Mechanism "
            f"{comp.get('mechanism')}, accountant {str(comp.get('accountant')).upper()}, noise "
            f"multiplier σ = {float(comp['noise_multiplier']):.4g}, {_clip_words(comp)} "
            f"{float(comp['max_grad_norm']):.4g}, sampling rate {float(comp['sample_rate']):.4g}, "
            f"{comp.get('steps')} steps over {comp.get('epochs')} epoch(s)/round(s).")
    parts.append(
        "Covered: the model's weights, that is every training step that read a user's events"
        + (" (training ran a fixed number of epochs and kept the last model: nothing was chosen "
           "on private validation data outside the accountant)"
           if any(str(c.get("mechanism", "")).startswith("dp-sgd")
                  for c in components.values()) else "")
        + ". Item titles and genres are public and cost no privacy. Not covered: the quality "
        "figures in this report and the gate's decision, computed on the same users' held-out "
        "events and shown to operators rather than released with the model, and any setting "
        "tuned on this data instead of public or synthetic data (recops' DP defaults were "
        "chosen on synthetic data).")
    budget = total["budget_epsilon"]
    parts.append(
        f"Across all {total['runs']} run(s) and retraining cycles charged to population "
        f"'{total['population']}', the ledger sums to ε = {total['epsilon_now']:.4g} "
        f"(δ = {total['delta_now']:.3g}) by basic composition, against a budget of ε = "
        f"{budget:.4g}: {'within' if total['epsilon_now'] <= budget + 1e-9 else 'OVER'} budget, "
        f"ε = {total['left_now']:.4g} left.")
    return parts


def segment_gap(per_segment: dict[str, dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The best and worst segment on ``metric`` and the gap between them."""
    vals = {seg: float(m[metric]) for seg, m in (per_segment or {}).items()
            if isinstance(m, dict) and m.get(metric) is not None
            and math.isfinite(float(m[metric]))}
    if len(vals) < 2:
        return None
    best = max(vals, key=vals.__getitem__)
    worst = min(vals, key=vals.__getitem__)
    return {"metric": metric, "best": best, "best_value": vals[best], "worst": worst,
            "worst_value": vals[worst], "gap": vals[best] - vals[worst]}


def gather(settings: Settings, tag: str | None = None, *, run_id: str | None = None) -> ReportData:
    """Collect the records of one model (``tag``, the model of ``run_id``, or the champion)."""
    from recops.compliance.subjects import retrain_required
    from recops.release import registry

    full = _resolve_tag(settings, tag, run_id)
    meta = registry.metadata(settings, full)
    rid = meta.get("run_id") or ""
    rdir = settings.paths.runs / rid
    read = {name: _read_json(rdir / name, MISSING) for name in RUN_FILES} if rid else {}
    missing = [n for n, v in read.items() if v is MISSING
               and not (n == "federated_rounds.json" and meta.get("training_mode") != "federated")]
    files = {n: (None if v is MISSING else v) for n, v in read.items()}
    log = AuditLog(settings.paths.audit_log)
    chain = verify(log)
    try:
        records = [r for r in log.records() if r.get("run_id") == rid or _mentions(r, full)]
    except AuditError:  # an unreadable log is reported through `chain`, not hidden
        records = []
    lake, superseded = _lake(settings)
    ledger, total = _privacy(settings, meta)
    gate_metric = ((meta.get("config") or {}).get("gate") or {}).get("metric", "ndcg@10")
    data = ReportData(
        tag=full, metadata=meta, run_id=rid, run_dir=rdir,
        champion=registry.champion_tag(settings) == full,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"), chain=chain,
        run_files=files, missing_files=missing, run_records=records, lake=lake,
        superseded=superseded, quarantined=_quarantined(settings), ledger=ledger,
        privacy_total=total, privacy_words=privacy_in_words(meta, total),
        segment_gap=segment_gap(meta.get("per_segment") or {}, gate_metric),
        retrain=retrain_required(settings).get(full),
        erasures=erasures_for(settings, meta.get("data_version")),
        policy=policy_evaluation(settings, files.get("gate.json")))
    return data


def policy_evaluation(settings: Settings, gate: Any) -> dict[str, Any] | None:
    """The off-policy estimate to show: the gate's, when it checked one, else the last one
    ``recops policy evaluate`` wrote (``<reports>/policy_evaluation.json``); None when neither."""
    checks = (gate.get("checks") if isinstance(gate, dict) else None) or {}
    est = (checks.get("policy") or {}).get("estimate")
    if isinstance(est, dict) and "estimates" in est:
        return {**est, "source": "the promotion gate"}
    got = _read_json(settings.paths.reports / "policy_evaluation.json")
    if isinstance(got, dict) and "estimates" in got:
        return {**got, "source": "recops policy evaluate"}
    return None


def _mentions(record: dict[str, Any], tag: str) -> bool:
    return any(tag in json.dumps(record.get(k, {})) for k in ("inputs", "outputs"))
