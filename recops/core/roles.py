"""Event roles: what each event means, resolved once from ``data.event_roles`` for every consumer.

An event is a positive with a weight, a negative, or ignored (:mod:`recops.config_events`). A
type of role ``rating`` resolves by its rating: positive above ``rating_positive_above``,
negative at or below ``rating_negative_at_most``, in between per ``rating_between``. Training
sequences, Feast's user rows, ``/feedback`` and off-policy evaluation all call this module, so
the four agree on every event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recops import schema
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config_events import EventSettings

POSITIVE, IGNORED, NEGATIVE = 1, 0, -1
ROLE_NAMES = {POSITIVE: "positive", IGNORED: "ignored", NEGATIVE: "negative"}


def _rated(rating: float, events: EventSettings, weight: float) -> tuple[int, float]:
    if rating > events.rating_positive_above:
        return POSITIVE, weight
    if rating <= events.rating_negative_at_most:
        return NEGATIVE, 0.0
    if events.rating_between == "positive":
        return POSITIVE, events.rating_between_weight
    return IGNORED, 0.0


def resolve_one(event_type: str, rating: float | None, events: EventSettings) -> tuple[int, float]:
    """(role, weight) of one event; weight is 0 for a non-positive. Raises DataError for a type
    not in ``data.event_roles.roles`` or a rated type without a rating."""
    spec = events.roles.get(event_type)
    if spec is None:
        raise DataError(f"event type {event_type!r} is not in data.event_roles.roles (accepted: "
                        f"{events.types()})")
    if spec.role == "positive":
        return POSITIVE, spec.positive_weight
    if spec.role == "negative":
        return NEGATIVE, 0.0
    if spec.role == "ignored":
        return IGNORED, 0.0
    if rating is None or (isinstance(rating, float) and math.isnan(rating)):
        raise DataError(f"event type {event_type!r} has role 'rating' in data.event_roles.roles: "
                        "it needs a rating")
    return _rated(float(rating), events, spec.positive_weight)


def resolve(event_types: Any, ratings: Any, events: EventSettings,
            *, where: str = "interactions") -> tuple[np.ndarray, np.ndarray]:
    """Roles (int8: 1 positive, 0 ignored, -1 negative) and weights (float32, 0 unless
    positive) of many events. ``where`` names the table in errors."""
    types = pd.Series(event_types, dtype="string").to_numpy(dtype=object)
    rating = np.asarray(pd.Series(ratings, dtype="Float64").to_numpy(np.float64, na_value=np.nan))
    n = len(types)
    role = np.zeros(n, np.int8)
    weight = np.zeros(n, np.float32)
    if not n:
        return role, weight
    uniq, inv = np.unique(types.astype(str), return_inverse=True)
    unknown = [str(t) for t in uniq if t not in events.roles]
    if unknown:
        counts = {t: int((types.astype(str) == t).sum()) for t in unknown}
        raise DataError(f"{where}: column {schema.EVENT_TYPE}: {sum(counts.values())} row(s) of "
                        f"event type(s) not in data.event_roles.roles {counts}; add them to the "
                        f"role table (accepted: {events.types()})")
    for k, t in enumerate(uniq):
        spec = events.roles[str(t)]
        rows = inv == k
        if spec.role == "positive":
            role[rows], weight[rows] = POSITIVE, spec.positive_weight
        elif spec.role == "negative":
            role[rows] = NEGATIVE
        elif spec.role == "rating":
            r = rating[rows]
            if np.isnan(r).any():
                raise DataError(f"{where}: column {schema.RATING}: {int(np.isnan(r).sum())} "
                                f"row(s) of event type {str(t)!r} (role 'rating' in "
                                "data.event_roles.roles) have no rating")
            w = spec.positive_weight
            sub_role = np.where(r > events.rating_positive_above, POSITIVE,
                                np.where(r <= events.rating_negative_at_most, NEGATIVE,
                                         POSITIVE if events.rating_between == "positive"
                                         else IGNORED)).astype(np.int8)
            sub_w = np.where(r > events.rating_positive_above, w,
                             np.where(sub_role == POSITIVE, events.rating_between_weight, 0.0))
            role[rows], weight[rows] = sub_role, sub_w
    return role, weight


@dataclass(frozen=True)
class Resolved:
    """A table of events split by role: positives (with an ``event_weight`` column) and
    negatives; ignored events are dropped."""

    positives: pd.DataFrame
    negatives: pd.DataFrame

    def counts(self) -> dict[str, int]:
        return {"positive": len(self.positives), "negative": len(self.negatives)}


def with_roles(interactions: pd.DataFrame, events: EventSettings, *,
               where: str = "interactions", drop_ignored: bool = False) -> pd.DataFrame:
    """``interactions`` plus ``event_role`` and ``event_weight`` columns (without the ignored
    events when ``drop_ignored``)."""
    role, weight = resolve(interactions[schema.EVENT_TYPE], interactions[schema.RATING]
                           if schema.RATING in interactions.columns else
                           np.full(len(interactions), np.nan), events, where=where)
    out = interactions.assign(**{schema.EVENT_ROLE: role, schema.EVENT_WEIGHT: weight})
    return out[role != IGNORED] if drop_ignored else out


def split_roles(interactions: pd.DataFrame, events: EventSettings,
                *, where: str = "interactions") -> Resolved:
    """Positives (the sequences' events, with their weights) and negatives of a table."""
    df = with_roles(interactions, events, where=where)
    role = df[schema.EVENT_ROLE].to_numpy()
    pos = df[role == POSITIVE].drop(columns=[schema.EVENT_ROLE]).reset_index(drop=True)
    neg = df[role == NEGATIVE].drop(columns=[schema.EVENT_ROLE, schema.EVENT_WEIGHT])
    return Resolved(pos, neg.reset_index(drop=True))


def ensure_roles(interactions: pd.DataFrame, events: EventSettings | None = None) -> pd.DataFrame:
    """``interactions`` with resolved roles, ignored events dropped: as given when they carry an
    ``event_role`` column already, else resolved by ``events`` (default: the built-in table);
    a table without event types is all positives."""
    if schema.EVENT_ROLE in interactions.columns or schema.EVENT_TYPE not in interactions:
        return interactions
    from recops.config_events import EventSettings

    return with_roles(interactions, events or EventSettings(), drop_ignored=True)
