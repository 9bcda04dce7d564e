"""Durable feedback log: one JSON line per event; a batch of events shares one fsync.

Offsets are byte positions in ``<paths.feedback>/feedback.jsonl``: ``append_many`` returns where
each record starts, ``read(since)`` returns every complete record at or after ``since`` and the
offset to pass next time. Several processes may append (an exclusive ``flock`` serialises them).

A repeated event is stored once: its key is the client's ``event_id`` when it sent one, else
(user, item, event type, timestamp) — see :func:`event_key`. ``settings.feedback.backend``
chooses this file or a shared PostgreSQL table (:mod:`recops.feedback_pg`), one interface.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from recops import schema
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings

FILENAME = "feedback.jsonl"
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


def open_log(settings: Settings) -> EventLog:
    """The feedback log ``settings.feedback.backend`` names."""
    if settings.feedback.backend == "postgres":
        from recops.feedback_pg import PostgresFeedbackLog

        return PostgresFeedbackLog.from_settings(settings)
    return FeedbackLog(settings.paths.feedback)


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


class FeedbackLog:
    """Append-only JSONL of feedback events under ``root`` (``settings.paths.feedback``).

    The record kind is three hooks (:meth:`prepare`, :meth:`key`, :meth:`to_frame`) and a file
    name: :class:`recops.policy.impressions.ImpressionLog` keeps served lists with the same
    group commit, locking, torn-tail repair and durable erasure.
    """

    name = "file"
    filename = FILENAME

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / self.filename
        self._mu = threading.Lock()
        self._keys: dict[str, int] = {}  # idempotency key -> offset, for bytes [0, _scanned)
        self._scanned = 0
        self._inode: int | None = None  # of the file _keys describes (an erasure replaces it)

    @staticmethod
    def prepare(event: Mapping[str, Any]) -> dict[str, Any]:
        """The record stored for an event (checked)."""
        return prepare_record(event)

    @staticmethod
    def key(event: Mapping[str, Any]) -> str:
        """A record's idempotency key: a repeat of a stored key is not stored again."""
        return event_key(event)

    @staticmethod
    def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Records as a frame."""
        return frame(rows)

    def append(self, event: Mapping[str, Any]) -> int:
        """Write one event and fsync it; returns the byte offset where its record starts."""
        return self.append_many([event])[0].offset

    def append_many(self, events: Sequence[Mapping[str, Any]]) -> list[Appended]:
        """Write the events that are new with one write and one fsync (group commit).

        Returns, per event in order, its record's offset and whether it was a repeat. Nothing
        is acknowledged until the fsync returns; a crash before it leaves at most a torn last
        line, which the next append drops (it was never acknowledged).
        """
        records = [self.prepare(e) for e in events]
        if not records:
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        with self._mu:
            fd = self._open_locked()
            try:
                size = self._repair_tail(fd)
                self._catch_up(fd, size)
                out, lines, end = [], [], size
                for rec in records:
                    key = self.key(rec)
                    if key in self._keys:
                        out.append(Appended(self._keys[key], True))
                        continue
                    line = (record_json(rec) + "\n").encode("utf-8")
                    self._keys[key] = end
                    out.append(Appended(end, False))
                    lines.append(line)
                    end += len(line)
                if lines:
                    data = memoryview(b"".join(lines))
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                self._scanned = end
            except BaseException:
                self._keys.clear()  # unknown state: rescan on the next append
                self._scanned = 0
                raise
            finally:
                os.close(fd)  # closing releases the lock
        if size == 0 and lines:
            # First record: the directory entry must be durable too.
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return out

    def _open_locked(self) -> int:
        """The log open for appending under the writers' lock: the file now at ``path``.

        An erasure may have renamed a new file over the one opened here while this process
        waited for the lock; appending to the old one would lose the records, so reopen.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _repair_tail(self, fd: int) -> int:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A torn write from a crash was never acknowledged: drop the partial line so the
            # next record starts on its own line.
            data = os.pread(fd, size, 0)
            size = data.rfind(b"\n") + 1
            os.ftruncate(fd, size)
        return size

    def _catch_up(self, fd: int, size: int) -> None:
        """Learn the keys of records other processes appended since this one last looked."""
        inode = os.fstat(fd).st_ino
        if size < self._scanned or inode != self._inode:  # the file was replaced: start over
            self._keys.clear()
            self._scanned = 0
            self._inode = inode
        pos = self._scanned
        if size > pos:
            for raw in os.pread(fd, size - pos, pos).splitlines(keepends=True):
                if raw.strip():
                    self._keys[self.key(self._parse(raw, pos))] = pos
                pos += len(raw)
        self._scanned = size

    def _parse(self, raw: bytes, offset: int) -> dict[str, Any]:
        try:
            rec: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: the record at byte {offset} is not valid JSON "
                            f"({exc}); was the offset taken from this log?") from exc
        return rec

    def read(self, since: int = 0) -> tuple[pd.DataFrame, int]:
        """Complete records from byte ``since`` on, as a frame, and the offset to read from next."""
        if since < 0:
            raise DataError(f"feedback offset must be >= 0, got {since}")
        if not self.path.exists():
            return self.to_frame([]), since
        with open(self.path, "rb") as f:
            f.seek(since)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a trailing partial line is a write in progress
        rows, pos = [], since
        for raw in data[:end].splitlines(keepends=True):
            if raw.strip():
                rows.append(self._parse(raw, pos))
            pos += len(raw)
        return self.to_frame(rows), since + end

    def erase_user(self, user_id: int) -> Erased:
        """Rewrite the log without ``user_id``'s records: atomically and durably.

        Under the writers' lock: the kept lines go to a temporary file that is fsync'd, renamed
        over the log, and the folder fsync'd, so a crash leaves the old log or the new one.
        Appenders in other processes notice the new file (its inode) and rescan it.
        """
        if not self.path.exists():
            return Erased(0)
        with self._mu:
            fd = self._open_locked()
            try:
                size = self._repair_tail(fd)
                data = os.pread(fd, size, 0)
                kept, spans, pos = [], [], 0
                for raw in data.splitlines(keepends=True):
                    if raw.strip() and int(self._parse(raw, pos)[schema.USER_ID]) == user_id:
                        spans.append((pos, len(raw)))
                    else:
                        kept.append(raw)
                    pos += len(raw)
                if spans:
                    tmp = self.path.with_name(self.path.name + ".erase.tmp")
                    with open(tmp, "wb") as f:
                        f.write(b"".join(kept))
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                    dfd = os.open(self.root, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                    self._keys.clear()
                    self._scanned = 0
            finally:
                os.close(fd)  # the lock goes with it; writers waiting on it then see the new file
        return Erased(len(spans), tuple(spans))

    def count(self) -> int:
        """Number of complete records (cheap enough for tests and benchmarks)."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return f.read().count(b"\n")


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
