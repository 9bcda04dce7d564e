"""Serving policies: which of the model's ranked candidates are shown, in which slots, and with
what probability (the propensities the impression log records and the estimators divide by).

A policy sees only the candidates' order (the model's ranking, best first) and the number of
slots ``k``. Its :meth:`marginals` give, for every slot ``j`` and candidate ``a``, the exact
probability ``P(a is shown in slot j)`` over the policy's randomness; :meth:`choose` draws one
list and returns, for each shown item, that marginal (its *propensity*). Plain Python and
numpy, no framework: the service, the simulator and ``recops policy evaluate`` call the same
code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recops.errors import ConfigError

if TYPE_CHECKING:
    from recops.config_serving import ServingSettings

POLICIES = ("greedy", "epsilon_greedy")


@dataclass(frozen=True)
class Slate:
    """One drawn list: candidate positions (into the ranking) in slot order, and for each the
    probability that the policy puts that candidate in that slot."""

    positions: list[int]
    propensities: list[float]
    explored: bool = False


class Policy(Protocol):
    """What the service, the simulator and the estimators need of a policy."""

    name: str

    @property
    def tag(self) -> str: ...

    def params(self) -> dict[str, float | int]: ...

    def candidates(self, k: int) -> int: ...

    def marginals(self, n: int, k: int) -> np.ndarray: ...

    def choose(self, n: int, k: int, rng: np.random.Generator) -> Slate: ...


@dataclass(frozen=True)
class Greedy:
    """The model's top-k in its order (what recops served before policies): propensity 1."""

    name = "greedy"

    @property
    def tag(self) -> str:
        return "greedy"

    def params(self) -> dict[str, float | int]:
        return {}

    def candidates(self, k: int) -> int:
        """How many ranked candidates the policy needs for ``k`` slots."""
        return k

    def marginals(self, n: int, k: int) -> np.ndarray:
        """``[min(k, n), n]``: P(candidate a in slot j)."""
        return np.eye(min(k, n), n)

    def choose(self, n: int, k: int, rng: np.random.Generator) -> Slate:
        m = min(k, n)
        return Slate(list(range(m)), [1.0] * m)


@dataclass(frozen=True)
class EpsilonGreedy:
    """With probability ``1 - epsilon`` the top-k in order; with probability ``epsilon`` a
    uniformly random ordered choice of k among the top ``top_n`` (a list-level coin, so the
    propensities are exact and cheap).

    With ``n`` candidates (``top_n``, fewer when the user has seen the rest) and ``m = min(k, n)``
    slots, candidate ``a`` is in slot ``j`` with probability
    ``(1 - epsilon) * [a == j] + epsilon / n``: every candidate has a positive probability in
    every slot, so any policy over the same candidates can be evaluated from the log.
    """

    epsilon: float
    top_n: int
    name = "epsilon_greedy"

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"policy epsilon_greedy: epsilon must be in [0, 1], got "
                              f"{self.epsilon!r} (setting serving.explore_epsilon)")
        if self.top_n < 1:
            raise ConfigError(f"policy epsilon_greedy: top_n must be at least 1, got "
                              f"{self.top_n!r} (setting serving.policy_top_n)")

    @property
    def tag(self) -> str:
        return f"epsilon_greedy(epsilon={self.epsilon:g},top_n={self.top_n})"

    def params(self) -> dict[str, float | int]:
        return {"epsilon": self.epsilon, "top_n": self.top_n}

    def candidates(self, k: int) -> int:
        return max(k, self.top_n)

    def marginals(self, n: int, k: int) -> np.ndarray:
        m = min(k, n)
        return (1.0 - self.epsilon) * np.eye(m, n) + (self.epsilon / n if n else 0.0)

    def choose(self, n: int, k: int, rng: np.random.Generator) -> Slate:
        m = min(k, n)
        explored = bool(self.epsilon > 0 and rng.random() < self.epsilon)
        positions = [int(p) for p in rng.permutation(n)[:m]] if explored else list(range(m))
        marg = self.marginals(n, k)
        return Slate(positions, [float(marg[j, p]) for j, p in enumerate(positions)], explored)


def make_policy(name: str, *, epsilon: float | None = None, top_n: int | None = None) -> Policy:
    """A policy by name; a bad name or parameter is a :class:`ConfigError` that says which."""
    if name == "greedy":
        return Greedy()
    if name == "epsilon_greedy":
        if epsilon is None or top_n is None:
            raise ConfigError("policy epsilon_greedy needs epsilon and top_n "
                              "(settings serving.explore_epsilon, serving.policy_top_n)")
        return EpsilonGreedy(float(epsilon), int(top_n))
    raise ConfigError(f"unknown serving policy {name!r}: choose one of {list(POLICIES)} "
                      "(setting serving.policy)")


def from_record(name: str, params: dict[str, float | int] | None) -> Policy:
    """The policy an impression record names (its ``policy`` and ``policy_params`` fields)."""
    p = params or {}
    epsilon, top_n = p.get("epsilon"), p.get("top_n")
    return make_policy(name, epsilon=None if epsilon is None else float(epsilon),
                       top_n=None if top_n is None else int(top_n))


def from_settings(serving: ServingSettings) -> Policy:
    """The policy ``settings.serving`` chooses."""
    return make_policy(serving.policy, epsilon=serving.explore_epsilon, top_n=serving.policy_top_n)
