"""A synthetic recommendation world with a known click model, for testing policies and their
off-policy estimates (tests/policy, benchmarks/bench_policy.py).

Users and items have latent vectors; a user finds an item attractive with probability
``attract[u, a] = sigmoid(bias + base[a] + u . v)``, and examines slot j with probability
``examine[j]`` (position bias); a click happens when both do. The *model* the policies re-rank
sees the truth through noise (``model_noise``, per item and per pair), so its ranking is
mis-specified; each user's candidates are the model's top ``n_candidates`` items. Everything
is exact: a policy's true click rate is computed from its marginals, not sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recops.policy.ope import Logged
from recops.policy.policies import EpsilonGreedy, Greedy, Policy


@dataclass(frozen=True)
class World:
    attract: np.ndarray  # [U, M] P(click | examined)
    examine: np.ndarray  # [k] P(slot j examined)
    candidates: np.ndarray  # [U, N] item ids, the model's ranking, best first
    k: int


def make_world(seed: int, *, n_users: int = 200, n_items: int = 60, n_candidates: int = 10,
               k: int = 5, dim: int = 4, model_noise: float = 1.0, shared: bool = False) -> World:
    """A world; ``shared``: every user gets the same candidates, the model's top items on
    average (a popularity-like, non-personal ranking, as for a new user or a cold model)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 0.7, (n_users, dim))
    items = rng.normal(0, 0.7, (n_items, dim))
    base = rng.normal(0, 0.8, n_items)
    logit = -2.0 + base[None, :] + users @ items.T
    attract = 1.0 / (1.0 + np.exp(-logit))
    examine = 1.0 / (1.0 + np.arange(k)) ** 0.7
    # The model's errors: one per item (a mis-specified item bias) and one per (user, item).
    model = logit + rng.normal(0, model_noise, n_items)[None, :] \
        + rng.normal(0, model_noise, logit.shape)
    if shared:
        model = np.broadcast_to(model.mean(axis=0), model.shape)
    candidates = np.argsort(-model, axis=1)[:, :n_candidates]
    return World(attract, examine, candidates, k)


def draw(policy: Policy, n_lists: int, n: int, k: int, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """``n_lists`` slates of ``policy`` over n ranked candidates: (positions [L, m],
    propensities [L, m]), vectorised for the built-in policies."""
    m = min(k, n)
    marg = policy.marginals(n, k)
    if isinstance(policy, Greedy | EpsilonGreedy):
        pos = np.tile(np.arange(m), (n_lists, 1))
        if isinstance(policy, EpsilonGreedy) and policy.epsilon > 0:
            explore = rng.random(n_lists) < policy.epsilon
            perm = np.argsort(rng.random((int(explore.sum()), n)), axis=1)[:, :m]
            pos[explore] = perm
    else:
        pos = np.asarray([policy.choose(n, k, rng).positions for _ in range(n_lists)])
    return pos, marg[np.arange(m)[None, :], pos]


def true_value(world: World, policy: Policy) -> float:
    """The exact expected click rate per slot of ``policy`` (users drawn uniformly)."""
    n, k = world.candidates.shape[1], world.k
    marg = policy.marginals(n, k)  # [m, n]
    m = marg.shape[0]
    p = np.take_along_axis(world.attract, world.candidates, axis=1)  # [U, n]
    per_user = (marg[None, :, :] * p[:, None, :]).sum(axis=2) @ world.examine[:m]
    return float(per_user.mean() / m)


def simulate_log(world: World, policy: Policy, n_lists: int, rng: np.random.Generator
                 ) -> Logged:
    """``n_lists`` impressions served by ``policy`` to random users, with sampled clicks."""
    users = rng.integers(0, len(world.attract), n_lists)
    cands = world.candidates[users]
    pos, prop = draw(policy, n_lists, cands.shape[1], world.k, rng)
    items = np.take_along_axis(cands, pos, axis=1)
    p_click = world.examine[None, :pos.shape[1]] * world.attract[users[:, None], items]
    clicks = (rng.random(p_click.shape) < p_click).astype(float)
    return Logged(cands, pos, prop, clicks)


def learning_run(world: World, policy: Policy, *, rounds: int, per_round: int, seed: int,
                 prior: np.ndarray, prior_weight: float = 5.0) -> np.ndarray:
    """Serve ``rounds`` batches of lists, re-ranking each user's candidates by a click-rate
    estimate per item that starts at ``prior`` (a cold, mis-specified model) and is updated
    from the clicks on what the policy itself showed (examination-weighted counts, the known
    position bias). Returns the true expected click rate per slot of each round."""
    rng = np.random.default_rng(seed)
    n_items = world.attract.shape[1]
    clicks = np.zeros(n_items)
    exams = np.zeros(n_items)
    out = np.zeros(rounds)
    n, k = world.candidates.shape[1], world.k
    for r in range(rounds):
        est = (clicks + prior_weight * prior) / (exams + prior_weight)
        users = rng.integers(0, len(world.attract), per_round)
        cands = world.candidates[users]
        order = np.argsort(-est[cands], axis=1, kind="stable")
        ranked = np.take_along_axis(cands, order, axis=1)
        pos, _ = draw(policy, per_round, n, k, rng)
        items = np.take_along_axis(ranked, pos, axis=1)
        exam = world.examine[None, :pos.shape[1]]
        p_click = exam * world.attract[users[:, None], items]
        out[r] = float(p_click.mean())
        got = rng.random(p_click.shape) < p_click
        np.add.at(clicks, items.ravel(), got.ravel().astype(float))
        np.add.at(exams, items.ravel(), np.broadcast_to(exam, items.shape).ravel())
    return out
