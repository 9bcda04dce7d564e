"""Off-policy estimates and exploration on a simulator with a known click model
(recops.policy.simulator): the estimators' 95% intervals cover a target policy's true click rate
about 95% of the time over many seeds, and an exploring policy that learns from its own feedback
ends up with more clicks than greedy on a mis-specified model."""

from __future__ import annotations

import numpy as np
import pytest

from recops.errors import DataError
from recops.policy import ope
from recops.policy.policies import EpsilonGreedy, Greedy, Policy
from recops.policy.simulator import learning_run, make_world, simulate_log, true_value

SEEDS = 60
LOGGING = EpsilonGreedy(0.3, 10)


@pytest.mark.parametrize("target", [Greedy(), EpsilonGreedy(0.05, 10), EpsilonGreedy(1.0, 10)],
                         ids=lambda p: p.tag)
def test_estimators_cover_the_true_click_rate_over_many_seeds(target: Policy) -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    errors: dict[str, list[float]] = {k: [] for k in covered}
    for seed in range(SEEDS):
        world = make_world(seed)
        truth = true_value(world, target)
        logged = simulate_log(world, LOGGING, 2000, np.random.default_rng(10_000 + seed))
        est = ope.estimate_all(logged, target.marginals, seed=seed)
        for name in covered:
            covered[name] += est[name].covers(truth)
            errors[name].append((est[name].value - truth) / est[name].se)
    for name, hits in covered.items():
        # Nominal 95%; with 60 seeds a correct interval covers >= 49 times with prob > 0.99.
        assert hits >= 0.82 * SEEDS, (name, hits)
        # No systematic bias: the mean standardised error is near 0 (its s.e. is ~1/sqrt(60)).
        assert abs(np.mean(errors[name])) < 0.45, (name, np.mean(errors[name]))


def test_the_truth_differs_between_policies_so_coverage_is_not_trivial() -> None:
    world = make_world(0)
    values = [true_value(world, p) for p in (Greedy(), EpsilonGreedy(0.3, 10),
                                              EpsilonGreedy(1.0, 10))]
    assert values[0] > values[1] > values[2]
    logged = simulate_log(world, LOGGING, 2000, np.random.default_rng(0))
    # An interval as wide as the gap between greedy and uniform would say nothing.
    dr = ope.estimate_all(logged, Greedy().marginals)["dr"]
    assert dr.high - dr.low < (values[0] - values[2]) / 2


def test_greedy_logs_cannot_evaluate_another_policy_and_say_so() -> None:
    world = make_world(1)
    logged = simulate_log(world, Greedy(), 500, np.random.default_rng(1))
    target = EpsilonGreedy(0.5, 10)
    pt = ope.target_marginals(logged, target.marginals)
    p0 = ope.target_marginals(logged, Greedy().marginals)
    assert ope.unsupported_mass(logged, pt, p0) == pytest.approx(0.5 * 0.9)
    assert ope.unsupported_mass(logged, p0, p0) == 0.0


def test_estimators_refuse_empty_or_impossible_logs() -> None:
    empty = ope.Logged(np.zeros((0, 3), int), np.zeros((0, 2), int), np.zeros((0, 2)),
                       np.zeros((0, 2)))
    with pytest.raises(DataError, match="no logged lists"):
        ope.estimate_all(empty, Greedy().marginals)
    with pytest.raises(DataError, match="propensity is outside"):
        ope.Logged(np.array([[5, 6]]), np.array([[0]]), np.array([[0.0]]), np.array([[1.0]]))


def test_exploring_learns_what_greedy_never_shows() -> None:
    """A cold model ranks every user's candidates (the same 20 items, a popularity-like
    ranking with a mis-specified item bias); each policy re-ranks them by a click-rate estimate
    that starts at a pessimistic prior and learns from the clicks on what it showed."""
    gains = []
    for seed in range(6):
        world = make_world(seed, n_candidates=20, shared=True)
        prior = np.zeros(world.attract.shape[1])
        prior[world.candidates[0]] = 0.5 * world.attract.mean() * (1 - 0.01 * np.arange(20))
        runs = {p.tag: learning_run(world, p, rounds=600, per_round=50, seed=seed, prior=prior)
                for p in (Greedy(), EpsilonGreedy(0.1, 20))}
        greedy, explore = runs["greedy"], runs["epsilon_greedy(epsilon=0.1,top_n=20)"]
        # Greedy is stuck: its last rounds are no better than its first.
        assert greedy[-150:].mean() < greedy[:50].mean() + 0.01
        gains.append(explore[-150:].mean() - greedy[-150:].mean())
    assert np.mean(gains) > 0.015, gains  # mean true click rate per slot, last quarter
    assert sum(g > 0 for g in gains) >= 5, gains
