"""Off-policy estimators of a target policy's click rate from logged lists: IPS, SNIPS, DR.

Pure numpy over a :class:`Logged` batch of n lists (padded to the longest list and the largest
candidate set). The estimand is the target policy's expected click rate per shown slot,
``V = E_x[(1/k) sum_j P(click in slot j)]``, on the logged contexts ``x`` (user, the model's
ranked candidates, k). The estimators are the *item-position* ones: they assume a click in
slot j depends on the user, the item and the slot, not on the other items of the list (a
position-based click model), and weigh each shown (item, slot) by
``w = P_target(item in slot j) / P_logging(item in slot j)``, the marginal propensities the
impression log records. With that assumption and a logging policy that gives every candidate a
positive probability in every slot (``epsilon_greedy`` with epsilon > 0), IPS and DR are
unbiased and SNIPS consistent. Intervals are normal 95% intervals over lists (SNIPS: delta
method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from recops.errors import DataError

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Logged:
    """n logged lists. ``candidates[i, a]``: item id of the a-th ranked candidate (-1: none);
    ``shown[i, j]``: the candidate position shown in slot j (-1: no slot j); ``propensity``:
    the logging policy's P(that candidate in slot j); ``clicks``: 1 if it was clicked."""

    candidates: np.ndarray  # [n, N] int
    shown: np.ndarray  # [n, K] int
    propensity: np.ndarray  # [n, K] float
    clicks: np.ndarray  # [n, K] float (0/1)

    def __post_init__(self) -> None:
        n = len(self.candidates)
        if not (len(self.shown) == len(self.propensity) == len(self.clicks) == n):
            raise DataError("logged lists: candidates, shown, propensity and clicks differ in "
                            "length")
        slot = self.shown >= 0
        if np.any(slot & ~(self.propensity > 0)) or np.any(self.propensity > 1 + 1e-9):
            raise DataError("logged lists: a shown item's propensity is outside (0, 1]; the "
                            "impression log is not one recops wrote")

    @property
    def n(self) -> int:
        return len(self.candidates)

    @property
    def slots(self) -> np.ndarray:
        """[n, K] True where slot j exists in list i."""
        return self.shown >= 0

    @property
    def k(self) -> np.ndarray:
        return np.asarray(self.slots.sum(axis=1))

    @property
    def n_candidates(self) -> np.ndarray:
        return np.asarray((self.candidates >= 0).sum(axis=1))


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its standard error and 95% interval."""

    estimator: str
    value: float
    se: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


Marginals = Callable[[int, int], np.ndarray]  # (n candidates, k) -> [min(k, n), n]


def target_marginals(logged: Logged, marginals: Marginals) -> np.ndarray:
    """[n, K, N]: the target policy's P(candidate a in slot j) for every logged context."""
    n, kmax = logged.shown.shape
    out = np.zeros((n, kmax, logged.candidates.shape[1]))
    ks, ns = logged.k, logged.n_candidates
    for k, m in {(int(a), int(b)) for a, b in zip(ks, ns, strict=True)}:
        rows = np.flatnonzero((ks == k) & (ns == m))
        marg = marginals(m, k)
        out[np.ix_(rows, np.arange(marg.shape[0]), np.arange(m))] = marg
    return out


def _weights(logged: Logged, pt: np.ndarray) -> np.ndarray:
    """[n, K]: target over logging propensity of each shown (item, slot); 0 off the slots."""
    slot = logged.slots
    pos = np.where(slot, logged.shown, 0)
    p_t = np.take_along_axis(pt, pos[:, :, None], axis=2)[:, :, 0]
    return np.where(slot, p_t / np.where(slot, logged.propensity, 1.0), 0.0)


def _mean_interval(name: str, terms: np.ndarray) -> Estimate:
    n = len(terms)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return Estimate(name, value, se, value - Z95 * se, value + Z95 * se, n)


def _per_list(values: np.ndarray, logged: Logged) -> np.ndarray:
    return np.asarray(values.sum(axis=1) / np.maximum(logged.k, 1))


def ips(logged: Logged, pt: np.ndarray) -> Estimate:
    """Inverse propensity scoring: mean over lists of (1/k) sum_j w_j c_j."""
    return _mean_interval("ips", _per_list(_weights(logged, pt) * logged.clicks, logged))


def snips(logged: Logged, pt: np.ndarray) -> Estimate:
    """Self-normalised IPS: sum(w c) / sum(w) over lists (each list's terms divided by k)."""
    w = _weights(logged, pt)
    a, b = _per_list(w * logged.clicks, logged), _per_list(w, logged)
    n, bbar = len(a), float(b.mean())
    if bbar <= 0:
        raise DataError("SNIPS: the target policy puts no weight on any logged item (no "
                        "overlap with the logging policy)")
    value = float(a.mean() / bbar)
    se = float(np.std(a - value * b, ddof=1) / (bbar * np.sqrt(n))) if n > 1 else float("inf")
    return Estimate("snips", value, se, value - Z95 * se, value + Z95 * se, n)


def direct(logged: Logged, pt: np.ndarray, q: np.ndarray) -> Estimate:
    """The reward model alone: mean over lists of (1/k) sum_j sum_a P_t(a in j) q(a, j)."""
    dm = (pt * q).sum(axis=2) * logged.slots
    return _mean_interval("dm", _per_list(dm, logged))


def doubly_robust(logged: Logged, pt: np.ndarray, q: np.ndarray) -> Estimate:
    """DR: the reward model's prediction for the target, plus IPS on its residuals."""
    slot = logged.slots
    pos = np.where(slot, logged.shown, 0)
    q_shown = np.take_along_axis(q, pos[:, :, None], axis=2)[:, :, 0]
    dm = (pt * q).sum(axis=2) * slot
    corr = _weights(logged, pt) * (logged.clicks - q_shown)
    return _mean_interval("dr", _per_list(dm + corr, logged))


def reward_model(logged: Logged, fit: np.ndarray, *, prior: float = 10.0) -> np.ndarray:
    """[n, K, N]: predicted click probability of candidate a in slot j, from the lists ``fit``.

    A position-based model ``q(a, j) = slot_rate(j) * item_lift(a)``: the click rate of slot j
    over the fitted lists, times the item's clicks over its slot-weighted expected clicks
    (shrunk to 1 by ``prior`` pseudo-shows). DR stays unbiased whatever its quality; a better
    model only narrows the interval.
    """
    slot = logged.slots[fit]
    clicks = logged.clicks[fit] * slot
    shows_at = np.maximum(slot.sum(axis=0), 1)
    rate = clicks.sum(axis=0) / shows_at  # [K]
    ids = np.take_along_axis(logged.candidates[fit], np.where(slot, logged.shown[fit], 0), 1)
    ids = ids[slot]
    expected = np.broadcast_to(rate, slot.shape)[slot]
    got = clicks[slot]
    uniq, inv = np.unique(ids, return_inverse=True)
    num = np.bincount(inv, weights=got, minlength=len(uniq))
    den = np.bincount(inv, weights=expected, minlength=len(uniq))
    base = float(rate.mean()) if rate.size else 0.0
    lift = (num + prior * base) / (den + prior * base) if base > 0 else np.ones(len(uniq))
    cand = logged.candidates
    if len(uniq):
        where = np.clip(np.searchsorted(uniq, cand), 0, len(uniq) - 1)
        item_lift = np.where(uniq[where] == cand, lift[where], 1.0)  # [n, N]
    else:
        item_lift = np.ones(cand.shape)
    q = rate[None, :, None] * item_lift[:, None, :]
    return np.asarray(np.clip(q, 0.0, 1.0) * (cand >= 0)[:, None, :])


def cross_fitted_q(logged: Logged, seed: int = 0) -> np.ndarray:
    """The reward model for each list fitted on the other half of the lists (2-fold), so a
    list's own clicks never predict themselves."""
    fold = np.random.default_rng(seed).permutation(logged.n) % 2
    q = np.zeros((*logged.shown.shape, logged.candidates.shape[1]))
    for f in (0, 1):
        rows = fold == f
        other = ~rows if (~rows).any() else rows
        q[rows] = reward_model(logged, other)[rows]
    return q


def estimate_all(logged: Logged, marginals: Marginals, *, seed: int = 0) -> dict[str, Estimate]:
    """IPS, SNIPS, DR (and the reward model alone, DM) of the policy whose marginals are given."""
    if logged.n == 0:
        raise DataError("no logged lists to evaluate a policy on")
    pt = target_marginals(logged, marginals)
    q = cross_fitted_q(logged, seed)
    return {"ips": ips(logged, pt), "snips": snips(logged, pt),
            "dr": doubly_robust(logged, pt, q), "dm": direct(logged, pt, q)}


def unsupported_mass(logged: Logged, pt: np.ndarray, p0: np.ndarray) -> float:
    """The share of the target's slot probability on (item, slot) pairs the logging policy
    never shows (``p0`` its full marginals): what IPS cannot see. 0 means full support."""
    slot = logged.slots[:, :, None]
    off = (pt * ((p0 <= 0) & slot)).sum()
    total = (pt * slot).sum()
    return float(off / total) if total > 0 else 0.0
