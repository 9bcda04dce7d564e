"""Promotion gate: a challenger replaces the champion only if every rule passes.

Rules (settings.gate / settings.privacy): its data passed validation; its metric (NDCG@10) is at
least the champion's minus ``tolerance`` and at least ``floor``; it beats a popularity model
scored on the same test users (by ``baseline_margin``); its privacy total is within
``budget_epsilon``; no user segment's metric drops by more than ``max_segment_regression``
(relative) from the champion's. Optional (``gate.policy_check``): the serving policy's click
rate, estimated off-policy from the impression and feedback logs, is not below what the logged
lists got (docs/policies.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from recops.core.audit import AuditLog
from recops.core.runs import RunDir

if TYPE_CHECKING:
    from recops.config import Settings


@dataclass
class GateDecision:
    """``promote`` is True only when every check passed; ``reasons`` say why in words."""

    promote: bool
    reasons: list[str]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(meta: dict[str, Any], name: str) -> float | None:
    value = (meta.get("metrics") or {}).get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _check_validation(meta: dict[str, Any]) -> tuple[bool, str]:
    val = meta.get("validation")
    if not isinstance(val, dict) or "passed" not in val:
        return False, "no data-validation record: the model's training data was never validated"
    if val["passed"] is not True:
        return False, f"training data failed validation (report: {val.get('report')})"
    return True, "training data passed validation"


def _check_metric(settings: Settings, chall: dict[str, Any],
                  champ: dict[str, Any] | None) -> tuple[bool, str, dict[str, Any]]:
    name, tol, floor = settings.gate.metric, settings.gate.tolerance, settings.gate.floor
    value = _metric(chall, name)
    info: dict[str, Any] = {"metric": name, "challenger": value, "floor": floor, "tolerance": tol}
    if value is None:
        return False, f"challenger has no {name} in its metrics", info
    if value < floor:
        return False, f"{name} {value:.4f} is below the floor {floor:.4f}", info
    if champ is None:
        return True, f"{name} {value:.4f} >= floor {floor:.4f}; no champion to compare", info
    base = _metric(champ, name)
    info["champion"] = base
    if base is None:
        return True, f"{name} {value:.4f} >= floor; champion has no {name} to compare", info
    if value < base - tol:
        return False, (f"{name} {value:.4f} is below the champion's {base:.4f} minus tolerance "
                       f"{tol:.4f}"), info
    return True, f"{name} {value:.4f} >= champion {base:.4f} - {tol:.4f}", info


def _check_baseline(settings: Settings, chall: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    name, margin = settings.gate.metric, settings.gate.baseline_margin
    info: dict[str, Any] = {"baseline": settings.gate.baseline, "metric": name, "margin": margin}
    if settings.gate.baseline == "none":
        return True, "no baseline rule (gate.baseline: none)", info
    value = _metric(chall, name)
    base = _metric({"metrics": chall.get("baseline_metrics") or {}}, name)
    info.update(challenger=value, popularity=base)
    if base is None:
        return False, (f"no popularity {name} on the challenger's test users to compare with: "
                       "evaluate it through the pipeline, or set gate.baseline: none"), info
    if value is None or value <= base * (1 + margin):
        shown = "none" if value is None else f"{value:.4f}"
        return False, (f"{name} {shown} does not beat popularity ({base:.4f})"
                       + (f" by {margin:.0%}" if margin else "") + " on the same test users"), info
    return True, f"{name} {value:.4f} beats popularity ({base:.4f}) on the same test users", info


def _privacy_total(meta: dict[str, Any]) -> float | None:
    total = meta.get("privacy_total") or {}
    if total.get("epsilon") is not None:
        return float(total["epsilon"])
    spend = meta.get("privacy") or {}
    return float(spend["epsilon"]) if spend.get("epsilon") is not None else None


def _check_privacy(settings: Settings, chall: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    budget = settings.privacy.budget_epsilon
    eps = _privacy_total(chall)
    info = {"epsilon_total": eps, "budget_epsilon": budget, "required": settings.privacy.enabled}
    if eps is None:
        if settings.privacy.enabled:
            return False, ("privacy is enabled in the config but the model records no privacy "
                           "spend"), info
        return True, "trained without differential privacy (no spend to account)", info
    if math.isnan(eps) or eps > budget:
        return False, f"privacy total epsilon {eps:.3f} exceeds the budget {budget:.3f}", info
    return True, f"privacy total epsilon {eps:.3f} within the budget {budget:.3f}", info


def _check_segments(settings: Settings, chall: dict[str, Any],
                    champ: dict[str, Any] | None) -> tuple[bool, str, dict[str, Any]]:
    name, limit = settings.gate.metric, settings.gate.max_segment_regression
    info: dict[str, Any] = {"metric": name, "max_regression": limit, "segments": {}}
    if champ is None:
        return True, "no champion: no segment to regress from", info
    ours, theirs = chall.get("per_segment") or {}, champ.get("per_segment") or {}
    worst: list[str] = []
    for seg in sorted(set(ours) & set(theirs)):
        new, old = (ours[seg] or {}).get(name), (theirs[seg] or {}).get(name)
        if new is None or old is None or old <= 0:
            continue  # nothing to regress from
        drop = (old - new) / old
        info["segments"][seg] = {"challenger": new, "champion": old, "relative_drop": drop}
        if drop > limit:
            worst.append(f"{seg} ({old:.4f} -> {new:.4f}, -{drop:.0%})")
    missing = sorted(set(theirs) - set(ours))
    if missing:
        info["missing_segments"] = missing
    if worst:
        return False, (f"segment {name} regresses more than {limit:.0%}: " + ", ".join(worst)), info
    return True, f"no segment regresses more than {limit:.0%}", info


def policy_estimate(settings: Settings) -> dict[str, Any] | None:
    """The off-policy estimate of ``serving.policy`` for :func:`decide` (reads both logs);
    None when ``gate.policy_check`` is off, ``{"error": ...}`` when there is nothing to use."""
    from recops.errors import DataError
    from recops.policy.evaluate import evaluate
    from recops.policy.policies import from_settings

    if not settings.gate.policy_check:
        return None
    try:
        return evaluate(settings, from_settings(settings.serving),
                        settings.reward_events()).to_dict()
    except DataError as exc:
        return {"error": str(exc)}


def _check_policy(settings: Settings, est: dict[str, Any] | None
                  ) -> tuple[bool, str, dict[str, Any]]:
    g = settings.gate
    info: dict[str, Any] = {"tolerance": g.policy_tolerance, "min_lists": g.policy_min_lists,
                            "estimate": est}
    if est is None or "error" in est:
        why = est["error"] if est else "no estimate was made"
        return False, f"policy check on, but no off-policy estimate: {why}", info
    dr, seen, n = est["estimates"]["dr"], est["observed_click_rate"], est["lists"]
    name = est["policy"]
    if n < g.policy_min_lists:
        return False, (f"policy check: {n} logged lists, fewer than gate.policy_min_lists "
                       f"({g.policy_min_lists})"), info
    if est["unsupported_mass"] > 0.01:
        return False, (f"policy check: the logs cannot evaluate {name} "
                       f"({est['unsupported_mass']:.0%} of its slots were never loggable)"), info
    if dr["high"] < seen - g.policy_tolerance:
        return False, (f"policy {name}: estimated click rate {dr['value']:.4f} (DR, 95% "
                       f"interval up to {dr['high']:.4f}) is below the logged lists' "
                       f"{seen:.4f} minus {g.policy_tolerance:.4f}"), info
    return True, (f"policy {name}: estimated click rate {dr['value']:.4f} (DR) is not below "
                  f"the logged lists' {seen:.4f}"), info


def decide(settings: Settings, challenger_meta: dict[str, Any],
           champion_meta: dict[str, Any] | None,
           policy: dict[str, Any] | None = None) -> GateDecision:
    """Apply every rule; pure (no I/O), so the pipeline and the CLI agree. ``policy``: the
    :func:`policy_estimate`, checked only when ``gate.policy_check`` is on."""
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    ok, why = _check_validation(challenger_meta)
    checks["validation"] = {"passed": ok, "reason": why}
    reasons.append(why)
    for key, (ok, why, info) in (
        ("metric", _check_metric(settings, challenger_meta, champion_meta)),
        ("baseline", _check_baseline(settings, challenger_meta)),
        ("privacy", _check_privacy(settings, challenger_meta)),
        ("segments", _check_segments(settings, challenger_meta, champion_meta)),
        *((("policy", _check_policy(settings, policy)),) if settings.gate.policy_check else ()),
    ):
        checks[key] = {"passed": ok, "reason": why, **info}
        reasons.append(why)
    passed = all(c["passed"] for c in checks.values())
    failed = [c["reason"] for c in checks.values() if not c["passed"]]
    return GateDecision(promote=passed, reasons=failed if failed else reasons, checks=checks)


def run_gate(settings: Settings, tag: str, *, promote: bool = True) -> GateDecision:
    """Gate a registered model against the champion; record the decision; promote if it passes.

    Writes ``<runs>/<run_id>/gate.json`` and an audit ``gate`` record (and ``promote`` when
    promoted). A challenger that is already the champion is re-checked but nothing changes.
    """
    from recops.release import registry

    full = registry.resolve(settings, tag)
    chall = registry.metadata(settings, full)
    champ_tag = registry.champion_tag(settings)
    champ = registry.metadata(settings, champ_tag) if champ_tag and champ_tag != full else None
    decision = decide(settings, chall, champ, policy_estimate(settings))
    record = {"challenger": full, "champion": champ_tag, **decision.to_dict()}
    run_id = chall.get("run_id")
    audit: dict[str, Any] = {"inputs": {"challenger": full, "champion": champ_tag},
             "outputs": {"promote": decision.promote},
             "result": "ok" if decision.promote else "rejected",
             "details": {"reasons": decision.reasons, "checks": decision.checks}}
    if run_id:
        run = RunDir.of(settings, str(run_id))
        run.write_json(RunDir.GATE, record)
        run.audit("gate", **audit)
    else:
        AuditLog(settings.paths.audit_log).append("gate", config=settings.public_dict(), **audit)
    if decision.promote and promote and champ_tag != full:
        registry.promote(settings, full, reason="gate", decision=decision.to_dict())
    return decision


__all__ = ["GateDecision", "decide", "policy_estimate", "run_gate"]
