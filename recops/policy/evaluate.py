"""``recops policy evaluate``'s core: join the impression and feedback logs by request id and
estimate a candidate policy's click rate (IPS, SNIPS, DR with 95% intervals).

A shown item counts as clicked (the reward) when a feedback event of one of ``events`` whose
role resolves positive (``data.event_roles``: a negative such as a dislike, or a rating at or below
the threshold, is never a click) carries the list's ``request_id`` and the item's id. The
candidate policy re-ranks the same logged candidates (the model's ranking at serving time), so
any policy of
:mod:`recops.policy.policies` can be evaluated on lists an exploring policy served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recops import schema
from recops.errors import DataError
from recops.policy import ope
from recops.policy.impressions import REQUEST_ID
from recops.policy.policies import Policy, from_record

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.config_events import EventSettings


@dataclass
class Evaluation:
    """A candidate policy's estimated click rate per shown slot, beside what was observed."""

    policy: str
    events: list[str]
    lists: int
    clicks: int
    observed: float  # click rate per slot of the lists as served (the logging policies)
    logged_policies: dict[str, int]
    unsupported: float  # the candidate's slot probability on (item, slot)s never loggable
    estimates: dict[str, ope.Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "events": self.events, "lists": self.lists,
                "clicks": self.clicks, "observed_click_rate": self.observed,
                "logged_policies": self.logged_policies, "unsupported_mass": self.unsupported,
                "estimates": {k: v.to_dict() for k, v in self.estimates.items()}}


def clicked(feedback: pd.DataFrame, events: Sequence[str],
            roles: EventSettings | None = None) -> set[tuple[str, int]]:
    """(request id, item id) of every feedback event of a kind in ``events`` tied to a list
    whose role (``roles``, default the built-in table) resolves positive."""
    from recops.config_events import EventSettings
    from recops.core.roles import POSITIVE, resolve

    if REQUEST_ID not in feedback.columns or not len(feedback):
        return set()
    rows = feedback[feedback[schema.EVENT_TYPE].isin(list(events))
                    & feedback[REQUEST_ID].notna()]
    if len(rows):
        rating = (rows[schema.RATING] if schema.RATING in rows.columns
                  else pd.Series(np.nan, index=rows.index))
        role, _ = resolve(rows[schema.EVENT_TYPE], rating, roles or EventSettings(),
                          where="the feedback log")
        rows = rows[role == POSITIVE]
    return {(str(r), int(i)) for r, i in zip(rows[REQUEST_ID], rows[schema.ITEM_ID],
                                                  strict=True)}


def logged_lists(impressions: pd.DataFrame, clicks: set[tuple[str, int]]
                 ) -> tuple[ope.Logged, np.ndarray]:
    """The impressions as padded arrays, and the logging policies' full marginals [n, K, N]."""
    n = len(impressions)
    kmax = max((len(x) for x in impressions["items"]), default=0)
    nmax = max((len(x) for x in impressions["candidates"]), default=0)
    cands = np.full((n, nmax), -1, dtype=np.int64)
    shown = np.full((n, kmax), -1, dtype=np.int64)
    prop = np.zeros((n, kmax))
    got = np.zeros((n, kmax))
    p0 = np.zeros((n, kmax, nmax))
    policies: dict[tuple[str, str], Policy] = {}
    for i, row in enumerate(impressions.itertuples(index=False)):
        cand = [int(c) for c in row.candidates]
        where = {c: a for a, c in enumerate(cand)}
        cands[i, :len(cand)] = cand
        for j, (item, p) in enumerate(zip(row.items, row.propensities, strict=True)):
            if int(item) not in where:
                raise DataError(f"impression {row.request_id}: shown item {item} is not among "
                                "its candidates; the impression log is not one recops wrote")
            shown[i, j] = where[int(item)]
            prop[i, j] = float(p)
            got[i, j] = (str(row.request_id), int(item)) in clicks
        pkey = (str(row.policy), repr(sorted((row.policy_params or {}).items())))
        if pkey not in policies:
            policies[pkey] = from_record(str(row.policy), row.policy_params)
        marg = policies[pkey].marginals(len(cand), int(row.k))
        p0[i, :marg.shape[0], :marg.shape[1]] = marg[:len(row.items)]
    return ope.Logged(cands, shown, prop, got), p0


def evaluate_frames(impressions: pd.DataFrame, feedback: pd.DataFrame, policy: Policy,
                    events: Sequence[str], *, seed: int = 0,
                    roles: EventSettings | None = None) -> Evaluation:
    """The estimates from the two logs' frames (no I/O)."""
    if not len(impressions):
        raise DataError("the impression log holds no served lists: serve /recommend (with "
                        "serving.log_impressions on) before evaluating a policy")
    logged, p0 = logged_lists(impressions, clicked(feedback, events, roles))
    per_slot = logged.clicks.sum(axis=1) / np.maximum(logged.k, 1)
    pt = ope.target_marginals(logged, policy.marginals)
    return Evaluation(
        policy=policy.tag, events=list(events), lists=logged.n,
        clicks=int(logged.clicks.sum()), observed=float(per_slot.mean()),
        logged_policies={str(k): int(v) for k, v in
                         impressions["policy_tag"].value_counts().items()},
        unsupported=ope.unsupported_mass(logged, pt, p0),
        estimates=ope.estimate_all(logged, policy.marginals, seed=seed))


def evaluate(settings: Settings, policy: Policy,
             events: Sequence[str] | None = None) -> Evaluation:
    """Read both logs (``settings.feedback.backend``) and evaluate ``policy`` on them; a click
    is an event of ``events`` (default :meth:`Settings.reward_events`) that resolves positive."""
    from recops.core.feedback import open_log
    from recops.policy.impressions import open_impressions

    impressions, _ = open_impressions(settings).read(0)
    feedback, _ = open_log(settings).read(0)
    return evaluate_frames(impressions, feedback, policy,
                           events if events is not None else settings.reward_events(),
                           seed=settings.seed, roles=settings.data.event_roles)
