"""The quarantine area: rejected batches kept whole with their validation result and a reason.

Layout under ``settings.paths.quarantine``::

    <id>/<the batch's files, untouched>      moved (staged batch) or copied (a submitted file)
    <id>/meta.json                           what, where from, rows per table, why, status
    <id>/REASON.txt                          the failing expectations, for people
    <id>/validation_result.json              the Great Expectations results per table
    <id>/fixed/<file>                        replacement files supplied at release
    <id>/attempts/<time>.json                failed release attempts
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.core.atomic import write_atomic
from recops.core.audit import AuditLog
from recops.errors import DataError

META = "meta.json"
REASON = "REASON.txt"
RESULT = "validation_result.json"


def _free_dir(root: Path, qid: str) -> Path:
    dest, n = root / qid, 1
    while dest.exists():  # the same content quarantined again: keep both, never overwrite
        n += 1
        dest = root / f"{qid}-{n}"
    return dest


def put(settings: Settings, qid: str, *, kind: str, source: str, tables: dict[str, str],
        rows: dict[str, int | None], failed: list[str], reason: str,
        result: dict[str, Any] | None, move_dir: Path | None = None,
        copy_files: list[Path] | None = None, origin: str | None = None,
        run_id: str | None = None) -> Path:
    """Quarantine a batch: move its folder (or copy its files) and write the reason and result."""
    root = settings.paths.quarantine
    root.mkdir(parents=True, exist_ok=True)
    dest = _free_dir(root, qid)
    if move_dir is not None:
        shutil.move(str(move_dir), str(dest))
    else:
        dest.mkdir(parents=True)
        for f in copy_files or []:
            shutil.copy2(f, dest / f.name)  # byte-for-byte: nothing rewritten
    meta = {
        "id": dest.name, "kind": kind, "source": source, "origin": origin, "tables": tables,
        "rows": rows, "failed": failed, "created_at": datetime.now(UTC).isoformat(),
        "run_id": run_id, "status": "quarantined",
    }
    write_atomic(dest / META, json.dumps(meta, indent=2))
    (dest / REASON).write_text(
        f"Batch {dest.name} ({kind}, source {source}) was quarantined at {meta['created_at']}.\n\n"
        f"{reason}\n\nFailing checks:\n" + "".join(f"  - {f}\n" for f in failed)
        + f"\nInspect: recops quarantine show {dest.name}\n"
        f"Resubmit once fixed: recops quarantine release {dest.name} [--file FIXED]\n")
    if result is not None:
        write_atomic(dest / RESULT, json.dumps(result, indent=1, default=str))
    AuditLog(settings.paths.audit_log).append(
        "quarantine", run_id=run_id, inputs={"batch": qid, "source": source, "origin": origin},
        outputs={"quarantine_path": str(dest)}, result="failed",
        details={"kind": kind, "rows": rows, "failed": failed[:50], "reason": reason})
    return dest


def path_of(settings: Settings, qid: str) -> Path:
    d = settings.paths.quarantine / qid
    if not (d / META).is_file():
        known = ", ".join(m["id"] for m in list_batches(settings)) or "none"
        raise DataError(f"no quarantined batch '{qid}' under {settings.paths.quarantine} "
                        f"(quarantined: {known})")
    return d


def read_meta(settings: Settings, qid: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((path_of(settings, qid) / META).read_text())
    return meta


def write_meta(settings: Settings, meta: dict[str, Any]) -> None:
    write_atomic(path_of(settings, meta["id"]) / META, json.dumps(meta, indent=2))


def list_batches(settings: Settings) -> list[dict[str, Any]]:
    """Every quarantined batch's metadata, oldest first."""
    root = settings.paths.quarantine
    if not root.is_dir():
        return []
    metas = [json.loads((d / META).read_text()) for d in root.iterdir() if (d / META).is_file()]
    return sorted(metas, key=lambda m: m["created_at"])


def record_attempt(settings: Settings, qid: str, summary: dict[str, Any]) -> Path:
    d = path_of(settings, qid) / "attempts"
    d.mkdir(exist_ok=True)
    out = d / (datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + ".json")
    out.write_text(json.dumps(summary, indent=1, default=str))
    return out
