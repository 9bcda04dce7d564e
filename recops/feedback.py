"""Durable feedback log: one JSON line per event, fsync'd before append returns.

Offsets are byte positions in ``<paths.feedback>/feedback.jsonl``: ``append`` returns where the
record starts, ``read(since)`` returns every complete record at or after ``since`` and the offset
to pass next time. Several processes may append (an exclusive ``flock`` serialises them).
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recops import schema
from recops.errors import DataError

FILENAME = "feedback.jsonl"
COLUMNS = (schema.USER_ID, schema.ITEM_ID, schema.RATING, schema.EVENT_TYPE,
           schema.EVENT_TIMESTAMP, "received_at")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"feedback field of type {type(value).__name__} is not JSON-serialisable")


class FeedbackLog:
    """Append-only JSONL of feedback events under ``root`` (``settings.paths.feedback``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / FILENAME

    def append(self, event: dict[str, Any]) -> int:
        """Write one event and fsync it; returns the byte offset where its record starts."""
        missing = [c for c in (schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE) if c not in event]
        if missing:
            raise DataError(f"feedback event lacks {missing}; got fields {sorted(event)}")
        record = dict(event)
        record.setdefault("received_at", datetime.now(UTC))
        line = (json.dumps(record, default=_json_default, sort_keys=True) + "\n").encode("utf-8")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A torn write from a crash was never acknowledged: drop the partial line so the
                # next record starts on its own line.
                data = os.pread(fd, size, 0)
                size = data.rfind(b"\n") + 1
                os.ftruncate(fd, size)
            offset = size
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        if offset == 0:
            # First record: the directory entry must be durable too.
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return offset

    def read(self, since: int = 0) -> tuple[pd.DataFrame, int]:
        """Complete records from byte ``since`` on, as a frame, and the offset to read from next."""
        if since < 0:
            raise DataError(f"feedback offset must be >= 0, got {since}")
        if not self.path.exists():
            return _frame([]), since
        with open(self.path, "rb") as f:
            f.seek(since)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a trailing partial line is a write in progress
        rows = []
        for n, raw in enumerate(data[:end].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}: record {n} after offset {since} is not valid JSON "
                                f"({exc}); was the offset taken from this log?") from exc
        return _frame(rows), since + end

    def count(self) -> int:
        """Number of complete records (cheap enough for tests and benchmarks)."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return f.read().count(b"\n")


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS) if not rows else None)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    df[schema.USER_ID] = df[schema.USER_ID].astype("int64")
    df[schema.ITEM_ID] = df[schema.ITEM_ID].astype("int64")
    df[schema.RATING] = pd.to_numeric(df[schema.RATING]).astype("float32")
    df[schema.EVENT_TYPE] = df[schema.EVENT_TYPE].astype("string")
    df[schema.EVENT_TIMESTAMP] = pd.to_datetime(df[schema.EVENT_TIMESTAMP], utc=True,
                                                format="ISO8601").astype("datetime64[us, UTC]")
    df["received_at"] = pd.to_datetime(df["received_at"], utc=True, format="ISO8601")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]
