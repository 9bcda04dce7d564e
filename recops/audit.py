"""Append-only, hash-chained audit log: each record carries its predecessor's hash.

Editing, removing or reordering any record breaks the chain at that record, and
:func:`verify` names it. JSONL under ``<home>/audit/audit.jsonl``.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops.errors import AuditError
from recops.hashing import sha256_json

GENESIS = "0" * 64


def _record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return sha256_json(body)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AuditError(f"{self.path}:{n}: record is not valid JSON ({exc})") from exc
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
                f.seek(0)
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
                prev = json.loads(lines[-1])["hash"] if lines else GENESIS
                record: dict[str, Any] = {
                    "seq": len(lines),
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
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return record


@dataclass(frozen=True)
class ChainStatus:
    ok: bool
    records: int
    problem: str | None = None
    bad_seq: int | None = None


def verify(log: AuditLog) -> ChainStatus:
    """Walk the chain; the first record whose hash, predecessor or position is wrong is named."""
    prev = GENESIS
    records = log.records()
    for pos, rec in enumerate(records):
        seq = rec.get("seq")
        if seq != pos:
            return ChainStatus(False, len(records), f"record at line {pos + 1} has seq {seq}, "
                               f"expected {pos}: a record was removed or reordered", pos)
        if rec.get("prev_hash") != prev:
            return ChainStatus(False, len(records), f"record seq {seq} does not follow its "
                               "predecessor: a record before it was removed, reordered or edited", pos)
        if _record_hash(rec) != rec.get("hash"):
            return ChainStatus(False, len(records), f"record seq {seq} ({rec.get('stage')}) was "
                               "edited: its content no longer matches its hash", pos)
        prev = rec["hash"]
    return ChainStatus(True, len(records))
