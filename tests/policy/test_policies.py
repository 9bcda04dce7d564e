"""Serving policies: each draw's propensities are the exact marginals the estimators divide by,
and a bad policy setting or parameter is a clear configuration error."""

from __future__ import annotations

import numpy as np
import pytest

from recops.config import load_settings
from recops.errors import ConfigError
from recops.policy.policies import EpsilonGreedy, Greedy, from_record, from_settings, make_policy


def test_greedy_shows_the_top_k_in_order_with_propensity_one() -> None:
    slate = Greedy().choose(10, 4, np.random.default_rng(0))
    assert slate.positions == [0, 1, 2, 3] and slate.propensities == [1.0] * 4
    assert Greedy().choose(2, 4, np.random.default_rng(0)).positions == [0, 1]  # fewer items


@pytest.mark.parametrize(("n", "k"), [(10, 4), (3, 5), (6, 6)])
def test_epsilon_greedy_draws_follow_their_logged_propensities(n: int, k: int) -> None:
    policy = EpsilonGreedy(0.3, n)
    rng = np.random.default_rng(1)
    m = min(n, k)
    counts = np.zeros((m, n))
    draws = 20_000
    for _ in range(draws):
        slate = policy.choose(n, k, rng)
        assert len(slate.positions) == m == len(set(slate.positions))  # no item twice
        for j, (a, p) in enumerate(zip(slate.positions, slate.propensities, strict=True)):
            counts[j, a] += 1
            assert p == pytest.approx((0.7 if a == j else 0.0) + 0.3 / n)
    marg = policy.marginals(n, k)
    assert np.allclose(marg.sum(axis=1), 1.0)  # each slot holds one item
    # The empirical frequency of every (slot, item) matches its marginal (4 standard errors).
    se = np.sqrt(marg * (1 - marg) / draws) + 1e-9
    assert np.all(np.abs(counts / draws - marg) <= 4 * se + 1e-3)


def test_epsilon_zero_is_greedy_and_one_is_uniform() -> None:
    rng = np.random.default_rng(2)
    assert EpsilonGreedy(0.0, 10).choose(10, 3, rng).positions == [0, 1, 2]
    assert np.allclose(EpsilonGreedy(1.0, 10).marginals(10, 3), 0.1)


def test_policies_from_settings_and_records() -> None:
    s = load_settings(overrides={"serving.policy": "epsilon_greedy", "serving.explore_epsilon": 0.2,
                                 "serving.policy_top_n": 15})
    policy = from_settings(s.serving)
    assert policy.tag == "epsilon_greedy(epsilon=0.2,top_n=15)" and policy.candidates(5) == 15
    assert from_record(policy.name, policy.params()) == policy
    assert from_settings(load_settings().serving) == Greedy()  # the default: today's behaviour


@pytest.mark.parametrize(("overrides", "message"), [
    ({"serving.policy": "thompson"}, "setting 'serving.policy'"),
    ({"serving.explore_epsilon": 1.5}, "setting 'serving.explore_epsilon'"),
    ({"serving.explore_epsilon": -0.1}, "setting 'serving.explore_epsilon'"),
    ({"serving.explore_epsilon": "a lot"}, "setting 'serving.explore_epsilon'"),
    ({"serving.policy_top_n": 0}, "setting 'serving.policy_top_n'"),
    ({"gate.policy_events": ["clicks"]}, "gate.policy_events .'clicks'. are not positive"),
    ({"gate.policy_events": ["dislike"]}, "gate.policy_events .'dislike'. are not positive"),
    ({"gate.policy_events": []}, "setting 'gate.policy_events'"),
])
def test_bad_policy_settings_are_a_config_error_naming_the_setting(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides=overrides)


def test_bad_policy_parameters_are_refused_outside_the_settings_too() -> None:
    with pytest.raises(ConfigError, match="unknown serving policy 'ucb'"):
        make_policy("ucb")
    with pytest.raises(ConfigError, match="epsilon must be in"):
        EpsilonGreedy(2.0, 10)
    with pytest.raises(ConfigError, match="needs epsilon and top_n"):
        from_record("epsilon_greedy", {})


@pytest.mark.parametrize(("overrides", "logged"), [
    ({}, False),  # greedy: its log can estimate no other policy, so no fsync per request
    ({"serving.policy": "epsilon_greedy"}, True),
    ({"serving.log_impressions": True}, True),  # an audit trail of greedy lists, asked for
    ({"serving.policy": "epsilon_greedy", "serving.log_impressions": False}, False),
])
def test_impressions_are_logged_when_the_policy_explores_or_when_asked(overrides, logged) -> None:
    assert load_settings(overrides=overrides).serving.impressions_logged() is logged
