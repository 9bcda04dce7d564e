"""Append-only, hash-chained audit log: each record carries its predecessor's hash.

Editing, removing or reordering any record breaks the chain at that record, and
:func:`verify` names it. JSONL under ``<home>/audit/audit.jsonl``. A chain alone cannot show
that records were cut off its end, so every append also rewrites a *head* file
(``audit.head.json``: the last record's seq and hash); a log shorter than its head, or whose
record at the head's seq has another hash, was truncated or rewritten.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.core.atomic import write_atomic
from recops.core.hashing import sha256_json
from recops.errors import AuditError

if TYPE_CHECKING:  # psycopg is imported lazily: only the PostgreSQL mirror needs it
    from psycopg import Connection
    from psycopg.rows import TupleRow

GENESIS = "0" * 64


def _record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return sha256_json(body)


def _last_record(f: Any, block: int = 1 << 16) -> dict[str, Any] | None:
    """The last record of an open log, read from the end (appends stay O(1) in the log size)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    buf = ""
    pos = end
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        try:
            buf = f.read(step) + buf
        except UnicodeDecodeError as exc:  # records are ASCII (json.dumps): this was edited
            raise AuditError(f"{f.name} holds non-ASCII bytes near offset {pos}: the log was "
                             "edited; run `recops audit verify`") from exc
        lines = [ln for ln in buf.splitlines() if ln.strip()]
        # A complete last line needs its start: either another line before it, or offset 0.
        if len(lines) >= 2 or (pos == 0 and lines):
            try:
                last: dict[str, Any] = json.loads(lines[-1])
                return last
            except json.JSONDecodeError as exc:
                raise AuditError(f"the last record of {f.name} is not valid JSON ({exc}): "
                                 "run `recops audit verify` before appending") from exc
    return None


def _line_error(path: Path, n: int, what: str) -> AuditError:
    err = AuditError(f"{path}:{n}: {what}")
    err.line = n  # type: ignore[attr-defined]  # verify names the record from it
    return err


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".head.json")

    def head(self) -> dict[str, Any] | None:
        """The anchor written by the last append ({seq, hash, time}), None when absent."""
        try:
            head: dict[str, Any] = json.loads(self.head_path.read_text(encoding="utf-8"))
            return head
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise AuditError(f"audit head {self.head_path} is unreadable ({exc})") from exc

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _line_error(self.path, n, f"record is not valid JSON ({exc}): the line "
                                  "was edited or cut short") from exc
            if not isinstance(rec, dict):
                raise _line_error(self.path, n, "record is not a JSON object")
            out.append(rec)
        return out

    def append(
        self,
        stage: str,
        *,
        run_id: str | None = None,
        inputs: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        result: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one record under an exclusive lock (several processes may write) and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                last = _last_record(f)
                prev = last["hash"] if last else GENESIS
                record: dict[str, Any] = {
                    "seq": last["seq"] + 1 if last else 0,
                    "time": datetime.now(UTC).isoformat(),
                    "stage": stage,
                    "run_id": run_id,
                    "actor": getpass.getuser(),
                    "inputs": inputs or {},
                    "outputs": outputs or {},
                    "config_hash": sha256_json(config) if config is not None else None,
                    "result": result,
                    "details": details or {},
                    "prev_hash": prev,
                }
                record["hash"] = _record_hash(record)
                f.seek(0, os.SEEK_END)
                f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
                # After the record is durable: a crash in between leaves the head one behind,
                # which verify accepts (the record at the head's seq still matches).
                write_atomic(self.head_path, json.dumps(
                    {"seq": record["seq"], "hash": record["hash"], "time": record["time"]}))
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return record


@dataclass(frozen=True)
class ChainStatus:
    ok: bool
    records: int
    problem: str | None = None
    bad_seq: int | None = None
    anchored: bool = False  # a head file vouches for the log's end
    last_hash: str | None = None


def verify(log: AuditLog) -> ChainStatus:
    """Walk the chain; the first record whose hash, predecessor or position is wrong is named.

    Then hold the end of the log against the head file: fewer records than the head names
    means records were cut off the end (truncation) or the log was replaced.
    """
    try:
        records = log.records()
    except AuditError as exc:
        line = getattr(exc, "line", None)
        return ChainStatus(False, 0, str(exc), line - 1 if line else None)
    status = _walk(records)
    if not status.ok:
        return status
    try:
        head = log.head()
    except AuditError as exc:
        return ChainStatus(False, len(records), str(exc), None)
    if head is None:
        if records:  # every append writes the head: without it the end cannot be vouched for
            return ChainStatus(False, len(records), (
                f"audit head {log.head_path} is missing: the chain is intact up to seq "
                f"{len(records) - 1} but records cut off its end could not be detected"),
                None, False, status.last_hash)
        return status
    hseq, hhash = head.get("seq"), head.get("hash")
    if not isinstance(hseq, int) or hseq < 0:
        return ChainStatus(False, len(records), f"audit head {log.head_path} holds no valid seq")
    if hseq >= len(records):
        first_missing = len(records)
        return ChainStatus(False, len(records), (
            f"the log ends at seq {len(records) - 1} but its head records seq {hseq}: "
            f"record(s) seq {first_missing}..{hseq} were removed from the end (truncated)"),
            first_missing, True)
    if records[hseq]["hash"] != hhash:
        return ChainStatus(False, len(records), (
            f"record seq {hseq} has hash {records[hseq]['hash'][:12]}… but the head recorded "
            f"{str(hhash)[:12]}…: the log was rewritten from seq {hseq} or earlier"), hseq, True)
    # hseq < last seq: the head lags (a crash between the record and its head); still anchored.
    return ChainStatus(True, len(records), None, None, True, status.last_hash)


def _walk(records: list[dict[str, Any]]) -> ChainStatus:
    prev = GENESIS
    for pos, rec in enumerate(records):
        seq = rec.get("seq")
        if seq != pos:
            return ChainStatus(False, len(records), f"record at line {pos + 1} has seq {seq}, "
                               f"expected {pos}: a record was removed or reordered", pos)
        if rec.get("prev_hash") != prev:
            return ChainStatus(False, len(records), f"record seq {seq} does not follow its "
                               "predecessor: a record before it was removed, reordered or "
                               "edited", pos)
        if _record_hash(rec) != rec.get("hash"):
            return ChainStatus(False, len(records), f"record seq {seq} ({rec.get('stage')}) was "
                               "edited: its content no longer matches its hash", pos)
        prev = rec["hash"]
    return ChainStatus(True, len(records), last_hash=prev if records else None)


# ---------------------------------------------------------------------------------------------
# Optional PostgreSQL mirror: a second, independent copy of the chain's hashes. A forger then has
# to rewrite the JSONL, its head file and the database alike.

MIRROR_TABLE = "recops_audit"


def _pg_connect(dsn: str) -> Connection[TupleRow]:
    import psycopg

    # Settings hold SQLAlchemy-style DSNs (postgresql+psycopg://); libpq wants postgresql://.
    plain = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        return psycopg.connect(plain, connect_timeout=10)
    except psycopg.Error as exc:
        raise AuditError(f"cannot connect to the audit mirror database: {exc}") from None


def mirror_to_postgres(log: AuditLog, dsn: str, table: str = MIRROR_TABLE) -> int:
    """Copy the records the mirror lacks into PostgreSQL; returns how many were added.

    Refuses when the local chain does not verify or disagrees with what was mirrored before
    (mirroring a tampered log would launder it).
    """
    from psycopg import sql

    status = verify(log)
    if not status.ok:
        raise AuditError(f"refusing to mirror a broken audit chain: {status.problem}")
    check = verify_against_postgres(log, dsn, table)
    if not check.ok:
        raise AuditError(f"refusing to mirror: {check.problem}")
    records = log.records()
    ident = sql.Identifier(table)
    with _pg_connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (seq bigint PRIMARY KEY, "
                             "hash text NOT NULL, prev_hash text NOT NULL, record jsonb NOT NULL, "
                             "mirrored_at timestamptz NOT NULL DEFAULT now())").format(ident))
        row = conn.execute(sql.SQL("SELECT coalesce(max(seq), -1) FROM {}").format(ident)
                           ).fetchone()
        assert row is not None  # an aggregate query returns exactly one row
        start = int(row[0]) + 1
        new = records[start:]
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (seq, hash, prev_hash, record) VALUES "
                                    "(%s, %s, %s, %s)").format(ident),
                            [(r["seq"], r["hash"], r["prev_hash"],
                              json.dumps(r, sort_keys=True, default=str)) for r in new])
    return len(new)


def verify_against_postgres(log: AuditLog, dsn: str, table: str = MIRROR_TABLE) -> ChainStatus:
    """:func:`verify`, then every mirrored hash must match the local record at its seq."""
    from psycopg import errors, sql

    status = verify(log)
    if not status.ok:
        return status
    records = log.records()
    with _pg_connect(dsn) as conn:
        try:
            rows = conn.execute(sql.SQL("SELECT seq, hash FROM {} ORDER BY seq").format(
                sql.Identifier(table))).fetchall()
        except errors.UndefinedTable:
            return status  # nothing mirrored yet
    for seq, digest in rows:
        if seq >= len(records):
            return ChainStatus(False, len(records), (
                f"the PostgreSQL mirror holds record seq {seq} but the log ends at seq "
                f"{len(records) - 1}: records were removed from the end"), len(records),
                status.anchored)
        if records[seq]["hash"] != digest:
            return ChainStatus(False, len(records), (
                f"record seq {seq} ({records[seq].get('stage')}) differs from its PostgreSQL "
                "mirror: the log was rewritten from there"), seq, status.anchored)
    return status
