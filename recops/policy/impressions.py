"""The impression log: every list /recommend served, with the propensity of each shown item.

One record per served list: ``request_id`` (returned by /recommend; /feedback may send it back,
which joins a click to the list it came from), ``user_id``, ``items`` (item ids in slot order,
slot 0 first), ``propensities`` (for each shown item, the probability that the serving policy
put *that item in that slot* for this request: its marginal, see
:mod:`recops.policy.policies`), ``candidates`` (the model's ranked items the policy chose from,
best first), ``k``, ``policy`` / ``policy_params`` / ``policy_tag``, ``model`` (the model's
tag), ``fallback`` and ``served_at`` (UTC).

Durable as the feedback log is, by the same code: the file backend is a
:class:`recops.core.feedback.FeedbackLog` with another record kind (``impressions.jsonl`` next to
``feedback.jsonl``: group commit, one fsync per batch, acknowledged = durable), the PostgreSQL
backend another table (``feedback.impressions_table``). A request id is stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from recops import schema
from recops.core.events import EventLog, records_frame, timestamp_text
from recops.core.feedback import FeedbackLog
from recops.core.feedback_pg import PostgresFeedbackLog
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings

FILENAME = "impressions.jsonl"
REQUEST_ID = "request_id"
COLUMNS = (REQUEST_ID, schema.USER_ID, "items", "propensities", "candidates", "k", "policy",
           "policy_params", "policy_tag", "model", "fallback", "served_at")
REQUIRED = (REQUEST_ID, schema.USER_ID, "items", "propensities", "candidates", "policy")


def prepare(event: Mapping[str, Any]) -> dict[str, Any]:
    """A served list as the record stored: fields checked, ids as ints, time as UTC text."""
    missing = [c for c in REQUIRED if event.get(c) is None]
    if missing:
        raise DataError(f"impression record lacks {missing}; got fields {sorted(event)}")
    items = [int(i) for i in event["items"]]
    props = [float(p) for p in event["propensities"]]
    if len(items) != len(props) or not all(0.0 < p <= 1.0 for p in props):
        raise DataError(f"impression {event[REQUEST_ID]}: one propensity in (0, 1] per shown "
                        f"item is required, got {len(props)} for {len(items)} items")
    record = {k: event.get(k) for k in COLUMNS}
    record.update(items=items, propensities=props, user_id=int(event[schema.USER_ID]),
                  candidates=[int(i) for i in event["candidates"]],
                  k=int(event.get("k") or len(items)), policy_params=dict(
                      event.get("policy_params") or {}),
                  served_at=timestamp_text(event.get("served_at") or datetime.now(UTC)))
    return record


def key(event: Mapping[str, Any]) -> str:
    """A served list's idempotency key: its request id."""
    return f"req:{event[REQUEST_ID]}"


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Impression records as a frame, one row per served list (list-valued columns)."""
    df = records_frame(rows, COLUMNS)
    df[schema.USER_ID] = df[schema.USER_ID].astype("int64")
    df[REQUEST_ID] = df[REQUEST_ID].astype("string")
    df["served_at"] = pd.to_datetime(df["served_at"], utc=True, format="ISO8601")
    return df[list(COLUMNS)]


class ImpressionLog(FeedbackLog):
    """Served lists in ``<root>/impressions.jsonl``, with the feedback log's durability."""

    name = "impressions-file"
    filename = FILENAME
    prepare = staticmethod(prepare)
    key = staticmethod(key)
    to_frame = staticmethod(to_frame)


class PostgresImpressionLog(PostgresFeedbackLog):
    """Served lists in a PostgreSQL table, shared by every replica."""

    prepare = staticmethod(prepare)
    key = staticmethod(key)
    to_frame = staticmethod(to_frame)


def open_impressions(settings: Settings) -> EventLog:
    """The impression log of ``settings.feedback.backend`` (next to the feedback log)."""
    if settings.feedback.backend == "postgres":
        from recops.config import libpq_dsn

        dsn = settings.stores.postgres_dsn
        if dsn is None:  # Settings refuse this; a hand-built Settings may not
            raise DataError("feedback.backend 'postgres' needs stores.postgres_dsn")
        return PostgresImpressionLog(libpq_dsn(dsn), settings.feedback.impressions_table)
    return ImpressionLog(settings.paths.feedback)
