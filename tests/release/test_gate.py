"""Gate rules, each with a passing and a failing case, and the recorded decision."""

from __future__ import annotations

import json

import pytest

from recops.config import load_settings
from recops.release.gate import decide


def _meta(ndcg=0.30, segments=None, validated=True, eps=None, total=None, pop=0.02):
    return {
        "run_id": "r",
        "metrics": {"hr@10": 0.5, "ndcg@10": ndcg, "mrr": 0.2, "coverage@10": 0.3},
        "baseline_metrics": {"ndcg@10": pop} if pop is not None else None,
        "per_segment": segments if segments is not None else {"<20": {"ndcg@10": ndcg}},
        "validation": {"passed": validated, "report": "r.html"} if validated is not None else None,
        "privacy": {"epsilon": eps, "delta": 1e-5} if eps is not None else None,
        "privacy_total": {"epsilon": total, "delta": 1e-5} if total is not None else None,
    }


@pytest.fixture
def s(home):
    return load_settings(overrides={"gate.tolerance": 0.01, "gate.floor": 0.05,
                                    "gate.max_segment_regression": 0.2,
                                    "privacy.budget_epsilon": 10.0})


def test_first_model_above_floor_is_promoted(s):
    d = decide(s, _meta(0.3), None)
    assert d.promote and all(c["passed"] for c in d.checks.values())


@pytest.mark.parametrize("validated", [False, None])
def test_unvalidated_data_blocks(s, validated):
    d = decide(s, _meta(validated=validated), None)
    assert not d.promote and not d.checks["validation"]["passed"]
    assert any("validat" in r for r in d.reasons)


def test_floor(s):
    assert not decide(s, _meta(0.04), None).promote
    assert "floor" in decide(s, _meta(0.04), None).reasons[0]
    assert decide(s, _meta(0.05), None).promote


def test_tolerance_against_champion(s):
    champ = _meta(0.30)
    assert decide(s, _meta(0.295), champ).promote          # within tolerance 0.01
    d = decide(s, _meta(0.285), champ)
    assert not d.promote and d.checks["metric"]["champion"] == 0.30


def test_challenger_must_beat_popularity_on_the_same_users(s, home):
    d = decide(s, _meta(0.30, pop=0.30), None)
    assert not d.promote and not d.checks["baseline"]["passed"]
    assert "does not beat popularity (0.3000)" in d.reasons[0]
    assert decide(s, _meta(0.30, pop=0.29), None).promote
    # A margin: 10% better than popularity.
    s10 = load_settings(overrides={"gate.floor": 0.05, "gate.baseline_margin": 0.1})
    assert not decide(s10, _meta(0.30, pop=0.28), None).promote
    assert decide(s10, _meta(0.30, pop=0.27), None).promote
    # No baseline on record is refused, unless the rule is off.
    d = decide(s, _meta(0.30, pop=None), None)
    assert not d.promote and "no popularity ndcg@10" in d.reasons[0]
    off = load_settings(overrides={"gate.floor": 0.05, "gate.baseline": "none"})
    assert decide(off, _meta(0.30, pop=0.30), None).promote


def test_missing_metric_rejected(s):
    meta = _meta()
    del meta["metrics"]["ndcg@10"]
    assert not decide(s, meta, None).promote


def test_privacy_budget(s):
    assert decide(s, _meta(eps=4.0, total=9.5), None).promote
    d = decide(s, _meta(eps=4.0, total=12.0), None)
    assert not d.promote and "exceeds the budget" in " ".join(d.reasons)
    # Without a ledger total, the run's own spend is what is checked.
    assert not decide(s, _meta(eps=11.0), None).promote


def test_privacy_required_when_enabled(home):
    s = load_settings(overrides={"privacy.enabled": True})
    assert not decide(s, _meta(), None).promote
    assert decide(s, _meta(eps=2.0, total=2.0), None).promote


def test_segment_regression(s):
    champ = _meta(0.30, {"<20": {"ndcg@10": 0.30}, "200+": {"ndcg@10": 0.20}})
    ok = _meta(0.30, {"<20": {"ndcg@10": 0.31}, "200+": {"ndcg@10": 0.17}})  # -15%
    bad = _meta(0.30, {"<20": {"ndcg@10": 0.35}, "200+": {"ndcg@10": 0.15}})  # -25%
    assert decide(s, ok, champ).promote
    d = decide(s, bad, champ)
    assert not d.promote and "200+" in " ".join(d.reasons)
    assert d.checks["segments"]["segments"]["200+"]["relative_drop"] == pytest.approx(0.25)


def test_decision_is_json(s):
    d = decide(s, _meta(), _meta())
    assert json.loads(json.dumps(d.to_dict()))["promote"] is True
