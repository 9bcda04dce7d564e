"""The feedback log as a PostgreSQL table, shared by every replica (``feedback.backend: postgres``).

Same contract as the file log (:class:`recops.core.feedback.FeedbackLog`): ``append_many`` returns
only after the events' transaction committed (``synchronous_commit = on``: the WAL is flushed),
a repeated event (same :func:`recops.core.feedback.event_key`) is stored once, and
``read(since) -> (frame, next_offset)`` gives retraining every event after a watermark.

Offsets are the table's ``seq``. A sequence alone hands out numbers in *start* order, not commit
order, so a reader could pass a number whose transaction commits later and skip it for good.
Every writing transaction therefore takes one advisory lock before it draws numbers and holds
it to commit: numbers are then handed out in commit order, and ``seq > since`` misses nothing.
The lock is held for one batch (group commit), not one event.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from recops.core.events import Appended, Erased, event_key, frame, prepare_record, record_json
from recops.errors import DataError

if TYPE_CHECKING:
    from psycopg import Connection

    from recops.config import Settings


class PostgresFeedbackLog:
    """Append-only feedback events in table ``table`` of the database at ``dsn``.

    The record kind is the file log's three hooks (``prepare``, ``key``, ``to_frame``):
    :class:`recops.policy.impressions.PostgresImpressionLog` keeps served lists in another table.
    """

    name = "postgres"
    prepare = staticmethod(prepare_record)
    key = staticmethod(event_key)
    to_frame = staticmethod(frame)

    def __init__(self, dsn: str, table: str = "recops_feedback") -> None:
        from psycopg import sql

        self.dsn = dsn
        self.table = table
        self._t = sql.Identifier(table)
        self._mu = threading.Lock()
        self._conn: Connection[Any] | None = None
        self.name = f"postgres:{table}"

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresFeedbackLog:
        from recops.config import libpq_dsn

        dsn = settings.stores.postgres_dsn
        if dsn is None:  # Settings refuse this; a hand-built Settings may not
            raise DataError("feedback.backend 'postgres' needs stores.postgres_dsn")
        return cls(libpq_dsn(dsn), settings.feedback.table)

    # --- connection -----------------------------------------------------------------------------
    def _connect(self) -> Connection[Any]:
        import psycopg
        from psycopg import sql

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=5, autocommit=True)
        except psycopg.Error as exc:
            raise DataError(f"cannot reach the feedback log's database "
                            f"({_where(self.dsn)}): {exc}") from None
        # Autocommit: each `transaction()` block below is a real transaction, committed at its
        # end. Acknowledged must mean durable, whatever the server's default.
        conn.execute("SET synchronous_commit = on")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_name,))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, "
                "event_key text NOT NULL UNIQUE, record jsonb NOT NULL)").format(self._t))
        self._conn = conn
        return conn

    @property
    def _lock_name(self) -> str:
        return f"recops.feedback:{self.table}"

    def _run(self, work: Any) -> Any:
        """Run ``work(conn)`` under the process lock; a broken connection is dropped and named."""
        import psycopg

        with self._mu:
            try:
                return work(self._connect())
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise DataError(f"feedback log table '{self.table}' ({_where(self.dsn)}): "
                                f"{exc}") from None

    def close(self) -> None:
        with self._mu:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the log interface ----------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> int:
        """Store one event; returns its offset once committed."""
        return self.append_many([event])[0].offset

    def append_many(self, events: Sequence[Mapping[str, Any]]) -> list[Appended]:
        """Store the new events in one transaction (group commit); repeats are not re-stored."""
        from psycopg import sql

        records = [self.prepare(e) for e in events]
        if not records:
            return []
        keys = [self.key(r) for r in records]
        fresh = dict(zip(keys, records, strict=True))  # first of each key within the batch

        def work(conn: Connection[Any]) -> dict[str, tuple[int, bool]]:
            where: dict[str, tuple[int, bool]] = {}
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_name,))
                cur = conn.execute(sql.SQL(
                    "INSERT INTO {} (event_key, record) "
                    "SELECT k, r FROM unnest(%s::text[], %s::jsonb[]) "
                    "WITH ORDINALITY AS x(k, r, n) ORDER BY n "
                    "ON CONFLICT (event_key) DO NOTHING RETURNING seq, event_key"
                ).format(self._t), (list(fresh), [record_json(r) for r in fresh.values()]))
                for seq, key in cur.fetchall():
                    where[key] = (int(seq), False)
                old = [k for k in fresh if k not in where]
                if old:
                    cur = conn.execute(sql.SQL("SELECT seq, event_key FROM {} "
                                               "WHERE event_key = ANY(%s)").format(self._t), (old,))
                    for seq, key in cur.fetchall():
                        where[key] = (int(seq), True)
            return where  # committed: durable from here on

        where = self._run(work)
        out, seen = [], set()
        for key in keys:
            seq, dup = where[key]
            out.append(Appended(seq, dup or key in seen))
            seen.add(key)
        return out

    def read(self, since: int = 0) -> tuple[pd.DataFrame, int]:
        """Events with offset > ``since`` (0: all), in commit order, and the offset to pass next."""
        from psycopg import sql

        if since < 0:
            raise DataError(f"feedback offset must be >= 0, got {since}")

        def work(conn: Connection[Any]) -> list[tuple[int, Any]]:
            with conn.transaction():
                rows: list[tuple[int, Any]] = conn.execute(
                    sql.SQL("SELECT seq, record FROM {} WHERE seq > %s ORDER BY seq"
                            ).format(self._t), (since,)).fetchall()
            return rows

        rows = self._run(work)
        nxt = int(rows[-1][0]) if rows else since
        return self.to_frame([r for _, r in rows]), nxt

    def erase_user(self, user_id: int) -> Erased:
        """Delete ``user_id``'s events in one transaction, then VACUUM the table.

        Offsets (``seq``) of the other events do not move. The transaction holds the writers'
        advisory lock, so no batch commits half-way through it; VACUUM then clears the deleted
        row versions from the table's pages (a DELETE alone leaves them there until vacuumed).
        """
        from psycopg import sql

        def work(conn: Connection[Any]) -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_name,))
                cur = conn.execute(sql.SQL("DELETE FROM {} WHERE (record->>'user_id')::bigint "
                                           "= %s").format(self._t), (int(user_id),))
                removed = cur.rowcount
            if removed:
                conn.execute(sql.SQL("VACUUM {}").format(self._t))  # autocommit: no transaction
            return int(removed)

        return Erased(self._run(work))

    def count(self) -> int:
        from psycopg import sql

        def work(conn: Connection[Any]) -> int:
            with conn.transaction():
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._t)).fetchone()
            return int(row[0]) if row else 0

        n: int = self._run(work)
        return n


def _where(dsn: str) -> str:
    """The DSN without its password, for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a malformed DSN: say only that
        return "malformed DSN"
    return f"{info.get('user', '?')}@{info.get('host', '?')}:{info.get('port', 5432)}/" \
           f"{info.get('dbname', '?')}"
