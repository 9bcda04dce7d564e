"""The settings of event semantics (``data.event_roles``): each event type's role and weight.

A section of the one :class:`recops.config.Settings` (under ``data``); the role table is the
source of truth for which event types recops accepts anywhere (ingest, validation, ``/feedback``,
training, the online rows, off-policy evaluation). Resolution lives in :mod:`recops.core.roles`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from recops.config_base import Section

# What an event means: a weighted positive, a negative (never a positive; filtered at serving;
# optionally a training negative), ignored, or decided by its rating (data.event_roles thresholds).
Role = Literal["positive", "negative", "ignored", "rating"]
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class EventRole(Section):
    """One event type's role; ``weight`` (> 0) is a positive's loss weight in training."""

    role: Role
    weight: float | None = Field(None, gt=0, description=(
        "Loss weight of a positive (role positive, or a rating above the threshold); "
        "unset: 1.0. Not allowed for negative or ignored."))

    @model_validator(mode="after")
    def _weight_for_positives(self) -> EventRole:
        if self.weight is not None and self.role in ("negative", "ignored"):
            raise ValueError(f"weight is for positive roles; role '{self.role}' takes none")
        return self

    @property
    def positive_weight(self) -> float:
        return 1.0 if self.weight is None else self.weight


def _default_roles() -> dict[str, EventRole]:
    # Defaults: purchase > like > click > view; a rating by its value; a dislike is negative.
    return {
        "purchase": EventRole(role="positive", weight=4.0),
        "like": EventRole(role="positive", weight=2.0),
        "click": EventRole(role="positive", weight=1.0),
        "view": EventRole(role="positive", weight=0.5),
        "rating": EventRole(role="rating", weight=1.0),
        "dislike": EventRole(role="negative"),
    }


class EventSettings(Section):
    """``data.event_roles``: the role of every event type recops accepts, and rating thresholds."""

    roles: dict[str, EventRole] = Field(default_factory=_default_roles, description=(
        "Event type -> {role: positive|negative|ignored|rating, weight}. Only the types named "
        "here are accepted; a team adds its own (e.g. skip: {role: negative})."))
    # role "rating": positive above rating_positive_above, negative at or below
    # rating_negative_at_most; in between, rating_between decides (a weak positive by default:
    # a 3-star film was still watched, and dropping it shortens every sequence; docs/data.md).
    rating_positive_above: float = Field(3.0, description=(
        "A rating above this is a positive (with its type's weight)."))
    rating_negative_at_most: float = Field(2.0, description=(
        "A rating at or below this is a negative."))
    rating_between: Literal["positive", "ignored"] = Field("positive", description=(
        "What a rating between the two thresholds is: a positive of rating_between_weight, "
        "or ignored."))
    rating_between_weight: float = Field(0.5, gt=0, description=(
        "Loss weight of a rating between the thresholds (rating_between positive)."))
    # How many of a user's most recent negatives the online row keeps (and serving filters).
    max_blocked: int = Field(200, ge=1, le=10_000)

    @field_validator("roles")
    @classmethod
    def _table(cls, roles: dict[str, EventRole]) -> dict[str, EventRole]:
        import re

        bad = [t for t in roles if not re.match(EVENT_TYPE_PATTERN, t)]
        if bad:
            raise ValueError(f"event type name(s) {bad} must be lower-case letters, digits and "
                             "'_', starting with a letter, at most 32 characters")
        if not any(r.role in ("positive", "rating") for r in roles.values()):
            raise ValueError("no event type is positive (role positive or rating): there would "
                             "be nothing to learn from")
        return roles

    @model_validator(mode="after")
    def _thresholds(self) -> EventSettings:
        if self.rating_negative_at_most >= self.rating_positive_above:
            raise ValueError("data.event_roles.rating_negative_at_most "
                             f"({self.rating_negative_at_most})"
                             f" must be below data.event_roles.rating_positive_above "
                             f"({self.rating_positive_above})")
        return self

    def types(self) -> list[str]:
        """The accepted event types, in the table's order."""
        return list(self.roles)

    def rated_types(self) -> list[str]:
        """The types whose role a rating decides (they need a rating)."""
        return [t for t, r in self.roles.items() if r.role == "rating"]

    def positive_types(self) -> list[str]:
        """The types that can be positive (role positive, or rating)."""
        return [t for t, r in self.roles.items() if r.role in ("positive", "rating")]
