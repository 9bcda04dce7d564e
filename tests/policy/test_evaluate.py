"""`recops policy evaluate` on logs written as serving writes them: the estimates come from the
impression log joined with the feedback by request id, match the estimators on the same lists,
and bad input (no logs, bad flags, a log recops did not write) is a clear one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recops.config import load_settings
from recops.policy import ope
from recops.policy.evaluate import evaluate
from recops.policy.policies import EpsilonGreedy, Greedy
from recops.policy.simulator import make_world, simulate_log, true_value
from recops.release.gate import decide, policy_estimate
from tests.conftest import run_cli_text
from tests.policy.conftest import write_logs

LOGGING = EpsilonGreedy(0.3, 10)


@pytest.fixture
def logged_home(home: Path):
    world = make_world(3)
    logged = simulate_log(world, LOGGING, 1500, np.random.default_rng(3))
    settings = load_settings(overrides={"home": home})
    write_logs(settings, logged, LOGGING)
    return settings, world, logged


def test_evaluate_joins_clicks_by_request_id_and_matches_the_estimators(logged_home) -> None:
    settings, world, logged = logged_home
    got = evaluate(settings, Greedy(), ["click"])
    assert got.lists == logged.n and got.clicks == int(logged.clicks.sum())
    assert got.logged_policies == {LOGGING.tag: logged.n}
    assert got.unsupported == 0.0
    assert got.observed == pytest.approx(logged.clicks.mean())
    direct = ope.estimate_all(logged, Greedy().marginals, seed=settings.seed)
    for name in ("ips", "snips", "dr"):
        assert got.estimates[name].value == pytest.approx(direct[name].value)
    assert got.estimates["dr"].covers(true_value(world, Greedy()))
    # Views are not clicks: with only "view" counted nothing was clicked.
    assert evaluate(settings, Greedy(), ["view"]).clicks == 0


def test_cli_prints_the_table_and_writes_the_result(monkeypatch, capsys, logged_home) -> None:
    settings, world, _ = logged_home
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.home), "policy",
                              "evaluate", "--policy", "greedy")
    assert code == 0, text
    assert "IPS" in text and "SNIPS" in text and "doubly robust" in text and "warning" not in text
    saved = json.loads((settings.paths.reports / "policy_evaluation.json").read_text())
    assert saved["policy"] == "greedy" and set(saved["estimates"]) >= {"ips", "snips", "dr"}
    dr = saved["estimates"]["dr"]
    assert f"{dr['value']:.4f}" in text and dr["low"] <= true_value(world, Greedy()) <= dr["high"]
    out = settings.home / "eps.json"
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.home), "policy",
                              "evaluate", "--policy", "epsilon_greedy", "--epsilon", "0.05",
                              "--top-n", "10", "--json", "--out", str(out))
    assert code == 0, text
    assert json.loads(out.read_text())["policy"] == "epsilon_greedy(epsilon=0.05,top_n=10)"


def test_greedy_logs_warn_that_other_policies_are_unsupported(monkeypatch, capsys, home) -> None:
    world = make_world(4)
    settings = load_settings(overrides={"home": home})
    write_logs(settings, simulate_log(world, Greedy(), 200, np.random.default_rng(4)), Greedy())
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "policy", "evaluate",
                              "--policy", "epsilon_greedy", "--epsilon", "0.5", "--top-n", "10")
    assert code == 0, text
    assert "never shows there" in text


@pytest.mark.parametrize(("args", "message"), [
    (("--policy", "ucb"), "setting 'serving.policy'"),
    (("--epsilon", "2"), "setting 'serving.explore_epsilon'"),
    (("--top-n", "0"), "setting 'serving.policy_top_n'"),
    (("--event", "clicks"), "gate.policy_events ['clicks'] are not positive event types"),
    (("--event", "dislike"), "gate.policy_events ['dislike'] are not positive event types"),
    (("--top-n", "many"), "is not a valid integer"),
    (("--bogus",), "No such option"),
])
def test_bad_flags_are_one_clear_line(monkeypatch, capsys, logged_home, args, message) -> None:
    settings = logged_home[0]
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.home), "policy",
                              "evaluate", *args)
    assert code == 2 and message in text and "Traceback" not in text, text


def test_missing_or_foreign_logs_are_a_clear_error(monkeypatch, capsys, home) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "policy", "evaluate")
    assert code == 2 and "holds no served lists" in text and "Traceback" not in text, text
    log = home / "feedback" / "impressions.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"request_id": "r1", "user_id": 1, "items": [5], "propensities": [0.5], '
                   '"candidates": [6, 7], "k": 1, "policy": "greedy", "policy_tag": "greedy"}\n')
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "policy", "evaluate")
    assert code == 2 and "not among its candidates" in text, text
    log.write_text("not json\n")
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "policy", "evaluate")
    assert code == 2 and "not valid JSON" in text, text


def _meta() -> dict:
    return {"run_id": "r", "metrics": {"ndcg@10": 0.3}, "baseline_metrics": {"ndcg@10": 0.01},
            "per_segment": {}, "validation": {"passed": True}, "privacy": None}


def test_gate_policy_check_is_off_by_default_and_uses_the_estimate(logged_home) -> None:
    settings, _, _ = logged_home
    assert policy_estimate(settings) is None
    assert "policy" not in decide(settings, _meta(), None).checks
    on = {"home": settings.home, "gate.policy_check": True, "gate.policy_min_lists": 100}
    # Greedy on the model's ranking gets more clicks than the exploring lists did: passes.
    s = load_settings(overrides={**on, "serving.policy": "greedy"})
    d = decide(s, _meta(), None, policy_estimate(s))
    assert d.promote and d.checks["policy"]["passed"], d.reasons
    # Always exploring (uniform) is estimated well below what was served: refused.
    s = load_settings(overrides={**on, "serving.policy": "epsilon_greedy",
                                 "serving.explore_epsilon": 1.0, "serving.policy_top_n": 10})
    d = decide(s, _meta(), None, policy_estimate(s))
    assert not d.promote and "below the logged lists'" in d.reasons[0]
    # Too few lists, or none at all, is a failed check with the reason.
    s = load_settings(overrides={**on, "gate.policy_min_lists": 10_000})
    assert "fewer than gate.policy_min_lists" in decide(s, _meta(), None,
                                                        policy_estimate(s)).reasons[0]
    s = load_settings(overrides={**on, "home": settings.home / "empty"})
    assert "holds no served lists" in decide(s, _meta(), None, policy_estimate(s)).reasons[0]


def test_a_click_is_an_event_whose_role_resolves_positive() -> None:
    """Off-policy rewards follow data.event_roles: a dislike or a rating at/below the threshold
    tied to a list is never a click, whatever types are counted; a purchase is one."""
    import pandas as pd

    from recops.config_events import EventSettings
    from recops.policy.evaluate import clicked

    fb = pd.DataFrame({
        "request_id": ["r1", "r1", "r2", "r2", "r3", "r4"],
        "item_id": [1, 2, 3, 4, 5, 6],
        "event_type": ["click", "dislike", "rating", "rating", "purchase", "skip"],
        "rating": [None, None, 1.5, 4.5, None, None]})
    settings = load_settings(overrides={"data.event_roles.roles": {
        **EventSettings().model_dump()["roles"], "skip": {"role": "negative"}}})
    every = settings.data.event_roles.types()
    assert clicked(fb, every, settings.data.event_roles) == {("r1", 1), ("r2", 4), ("r3", 5)}
    assert clicked(fb, settings.reward_events(), settings.data.event_roles) == {
        ("r1", 1), ("r2", 4), ("r3", 5)}
    assert clicked(fb, ["click"], settings.data.event_roles) == {("r1", 1)}
