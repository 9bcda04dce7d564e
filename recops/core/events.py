"""The feedback record and the log interface every backend keeps (file, PostgreSQL, impressions).

A record is one event with its time as UTC text; a repeated event is recognised by
:func:`event_key` (the client's ``event_id`` when it sent one, else the event's content).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd

from recops import schema
from recops.errors import DataError

EVENT_ID = "event_id"
COLUMNS = (schema.USER_ID, schema.ITEM_ID, schema.RATING, schema.EVENT_TYPE,
           schema.EVENT_TIMESTAMP, "received_at")
REQUIRED = (schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE, schema.EVENT_TIMESTAMP)


@dataclass(frozen=True)
class Erased:
    """What :meth:`EventLog.erase_user` removed: the record count and, for a log whose offsets
    are byte positions, the ``(start, length)`` byte spans cut out (to shift watermarks)."""

    removed: int
    spans: tuple[tuple[int, int], ...] = ()

    def shift(self, offset: int) -> int:
        """Where a reader's ``offset`` of the old log points in the rewritten one."""
        return offset - sum(min(length, max(0, offset - start)) for start, length in self.spans)


@dataclass(frozen=True)
class Appended:
    """Where an event's record is, and whether it was there already (a repeat, not re-stored)."""

    offset: int
    duplicate: bool


class EventLog(Protocol):
    """What serving writes and retraining reads, whatever the backend."""

    name: str

    def append_many(self, events: Sequence[Mapping[str, Any]]) -> list[Appended]: ...

    def append(self, event: Mapping[str, Any]) -> int: ...

    def read(self, since: int = 0) -> tuple[pd.DataFrame, int]: ...

    def count(self) -> int: ...

    def erase_user(self, user_id: int) -> Erased: ...


def timestamp_text(value: Any) -> str:
    """An event time as UTC ISO text to the microsecond (one spelling per instant)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise DataError(f"feedback event_timestamp {value!r} is not a timestamp")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text: str = value.astimezone(UTC).isoformat(timespec="microseconds")
    return text


def event_key(event: Mapping[str, Any]) -> str:
    """The idempotency key: ``id:<event_id>`` if the client sent one, else the event's content."""
    eid = event.get(EVENT_ID)
    if eid is not None:
        return f"id:{eid}"
    return (f"ev:{int(event[schema.USER_ID])}:{int(event[schema.ITEM_ID])}:"
            f"{event[schema.EVENT_TYPE]}:{timestamp_text(event[schema.EVENT_TIMESTAMP])}")


def prepare_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """The record stored for an event: checked for the required fields, times as UTC text."""
    missing = [c for c in REQUIRED if event.get(c) is None]
    if missing:
        raise DataError(f"feedback event lacks {missing}; got fields {sorted(event)}")
    record = {k: v for k, v in event.items() if v is not None or k == schema.RATING}
    record[schema.EVENT_TIMESTAMP] = timestamp_text(event[schema.EVENT_TIMESTAMP])
    record["received_at"] = timestamp_text(event.get("received_at") or datetime.now(UTC))
    return record


def record_json(record: Mapping[str, Any]) -> str:
    """A record as one line of JSON (sorted keys; numpy scalars as plain numbers)."""
    return json.dumps(record, default=_json_default, sort_keys=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"feedback field of type {type(value).__name__} is not JSON-serialisable")



def records_frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """Log records as a frame holding at least ``columns`` (None where a record lacks one)."""
    df = pd.DataFrame(rows, columns=list(columns) if not rows else None)
    for col in columns:
        if col not in df.columns:
            df[col] = None
    return df


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Feedback records as a frame with the log's columns and dtypes (extra fields kept)."""
    df = records_frame(rows, COLUMNS)
    df[schema.USER_ID] = df[schema.USER_ID].astype("int64")
    df[schema.ITEM_ID] = df[schema.ITEM_ID].astype("int64")
    df[schema.RATING] = pd.to_numeric(df[schema.RATING]).astype("float32")
    df[schema.EVENT_TYPE] = df[schema.EVENT_TYPE].astype("string")
    df[schema.EVENT_TIMESTAMP] = pd.to_datetime(df[schema.EVENT_TIMESTAMP], utc=True,
                                                format="ISO8601").astype("datetime64[us, UTC]")
    df["received_at"] = pd.to_datetime(df["received_at"], utc=True, format="ISO8601")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]
