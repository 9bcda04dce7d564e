"""Durable feedback log: one JSON line per event; a batch of events shares one fsync.

Offsets are byte positions in ``<paths.feedback>/feedback.jsonl``: ``append_many`` returns where
each record starts, ``read(since)`` returns every complete record at or after ``since`` and the
offset to pass next time. Several processes may append (an exclusive ``flock`` serialises them).

A repeated event is stored once: its key is the client's ``event_id`` when it sent one, else
(user, item, event type, timestamp) — see :func:`event_key`. ``settings.feedback.backend``
chooses this file or a shared PostgreSQL table (:mod:`recops.core.feedback_pg`), one interface.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recops import schema
from recops.core.atomic import write_atomic
from recops.core.events import (
    Appended,
    Erased,
    EventLog,
    event_key,
    frame,
    prepare_record,
    record_json,
)
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings

FILENAME = "feedback.jsonl"


def open_log(settings: Settings) -> EventLog:
    """The feedback log ``settings.feedback.backend`` names."""
    if settings.feedback.backend == "postgres":
        from recops.core.feedback_pg import PostgresFeedbackLog

        return PostgresFeedbackLog.from_settings(settings)
    return FeedbackLog(settings.paths.feedback)


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
                    write_atomic(self.path, b"".join(kept), sync_dir=True)
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
