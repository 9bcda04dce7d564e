"""Data-subject requests: what recops holds about one user (access) and erasing it (erasure).

Erasure rewrites every lake batch holding the user's rows as a new batch without them, in the
old batch's place (``Lake.supersede``: the lake's log stays append-only and says what was
replaced), deletes the old files, rewrites staged and quarantined Parquet copies, records an
``erase`` audit record, and marks every model and run trained on the superseded batches in
``<home>/audit/retrain_required.json`` (read by the report and the pipeline; independent of
the model store). The audit trail names the user only by a hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq

from recops import schema
from recops.compliance.audit import AuditLog
from recops.errors import DataError
from recops.hashing import sha256_json

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.lake import Lake

USER_TABLES = (schema.INTERACTIONS, schema.USERS)


def subject_hash(user_id: int) -> str:
    """How records name a subject. User ids are small integers, so this is pseudonymous, not
    anonymous: it keeps the raw id out of the audit trail, not out of reach of a guesser."""
    return hashlib.sha256(f"recops-subject:{int(user_id)}".encode()).hexdigest()[:24]


def parse_user_id(raw: str | int) -> int:
    """A user id from the command line: a non-negative integer, as in the schema."""
    try:
        uid = int(str(raw).strip())
    except ValueError:
        raise DataError(f"user id {raw!r} is not an integer (the lake's {schema.USER_ID} "
                        "column is int64)") from None
    if uid < 0:
        raise DataError(f"user id {uid} is negative; user ids are >= 0")
    return uid


# ---------------------------------------------------------------------------------------------
# Retrain marker


def retrain_marker_path(settings: Settings) -> Path:
    return settings.paths.audit_log.parent / "retrain_required.json"


def retrain_required(settings: Settings) -> dict[str, dict[str, Any]]:
    """Models (by tag) and runs (``run:<id>``) that must be retrained, with why and when."""
    path = retrain_marker_path(settings)
    if not path.exists():
        return {}
    try:
        marker: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        return marker
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"retrain marker {path} is unreadable ({exc}); restore it from the "
                        "`erase` records of the audit log") from exc


def _mark(settings: Settings, entries: dict[str, dict[str, Any]]) -> None:
    path = retrain_marker_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = retrain_required(settings)
        for key, info in entries.items():
            current.setdefault(key, info)  # the first erasure that hit a model is its reason
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Which data versions held which batches


def _table_version(ids: list[str]) -> str | None:
    # The same definition as Lake.version / dataset_version (a test holds them equal).
    return sha256_json(ids)[:16] if ids else None


def versions_containing(lake: Lake, batch_ids: set[str]) -> set[str]:
    """Every dataset version the lake has ever had while holding any of ``batch_ids``.

    Replays the tables' logs in time order (the lake only appends, so this is its history).
    """
    from recops.lake import SUPERSEDE

    events = []
    for order, table in enumerate(schema.TABLES):
        for n, e in enumerate(lake.log_entries(table)):
            when = e.get("time") if e.get("op") == SUPERSEDE else e.get("created_at")
            events.append((str(when), order, n, table, e))
    events.sort(key=lambda t: t[:3])
    state: dict[str, list[str]] = {t: [] for t in schema.TABLES}
    out = set()
    for *_, table, e in events:
        ids = state[table]
        if e.get("op") == SUPERSEDE:
            if e["old"] in ids:
                pos = ids.index(e["old"])
                ids[pos:pos + 1] = [e["new"]["batch_id"]] if e.get("new") else []
        else:
            ids.append(e["batch_id"])
        if state[schema.INTERACTIONS] and any(i in batch_ids for t in state for i in state[t]):
            out.add(sha256_json({t: _table_version(state[t]) for t in schema.TABLES})[:16])
    return out


def _user_rows(path: str | Path, user_id: int) -> int:
    """Rows of ``user_id`` in a Parquet file (reads the one column)."""
    try:
        if schema.USER_ID not in pq.read_schema(path).names:
            return 0
        col = pq.read_table(path, columns=[schema.USER_ID]).column(0).to_pandas()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} to look for user rows: {exc}") from exc
    return int((col == user_id).sum())


# ---------------------------------------------------------------------------------------------
# Access


@dataclass
class SubjectView:
    """Everything recops holds about one user, or did, and what was built from it."""

    user_id: int
    subject: str
    batches: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    privacy_spends: list[dict[str, Any]] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    feedback_events: int = 0
    erasures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _runs(settings: Settings) -> list[tuple[str, Path, dict[str, Any]]]:
    root = settings.paths.runs
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            info = d / "train.json"
            if d.is_dir() and info.is_file():
                try:
                    out.append((d.name, d, json.loads(info.read_text())))
                except (OSError, json.JSONDecodeError):
                    out.append((d.name, d, {}))
    return out


def _staged_and_quarantined(settings: Settings) -> list[Path]:
    files: list[Path] = []
    for root in (settings.paths.staging, settings.paths.quarantine):
        if root.is_dir():
            files += sorted(root.rglob("*.parquet"))
    return files


def show(settings: Settings, user_id: int) -> SubjectView:
    """Datasets/batches, runs, model versions and privacy spends that involved ``user_id``."""
    from recops.feedback import FeedbackLog
    from recops.lake import Lake
    from recops.release import registry
    from recops.training.privacy import PrivacyLedger

    lake = Lake(settings.paths.lake)
    view = SubjectView(user_id, subject_hash(user_id))
    hit_ids: set[str] = set()
    for table in USER_TABLES:
        for b in lake.batches(table):
            n = _user_rows(b.path, user_id)
            if n:
                hit_ids.add(b.batch_id)
                view.batches.append({"table": table, "batch_id": b.batch_id, "rows": n,
                                     "source": b.source, "created_at": b.created_at})
                if table == schema.INTERACTIONS:
                    view.events += n
    # Past erasures of this subject: the versions that held the superseded batches still count.
    log = AuditLog(settings.paths.audit_log)
    view.erasures = [r for r in log.records() if r["stage"] == "erase"
                     and r.get("details", {}).get("subject") == view.subject]
    for r in view.erasures:
        hit_ids |= set(r.get("inputs", {}).get("superseded", []))
    versions = versions_containing(lake, hit_ids) if hit_ids else set()
    run_ids = set()
    for rid, rdir, info in _runs(settings):
        labels = rdir / "labels.parquet"
        in_labels = labels.is_file() and _user_rows(labels, user_id) > 0
        if in_labels or info.get("dataset_version") in versions:
            run_ids.add(rid)
            view.runs.append({"run_id": rid, "dataset_version": info.get("dataset_version"),
                              "mode": info.get("mode"), "in_labels": in_labels})
            if in_labels:
                view.copies.append({"where": "run labels", "path": str(labels)})
    for m in registry.list_models(settings):
        meta = m.metadata
        if meta.get("run_id") in run_ids or meta.get("data_version") in versions:
            run_ids.add(str(meta.get("run_id")))
            view.models.append({"tag": m.tag, "run_id": meta.get("run_id"),
                                "data_version": meta.get("data_version"),
                                "champion": m.champion,
                                "retrain_required": m.tag in retrain_required(settings)})
    view.privacy_spends = [s.to_dict() for s in
                           PrivacyLedger(settings.paths.privacy_ledger).entries()
                           if s.run_id in run_ids]
    for f in _staged_and_quarantined(settings):
        n = _user_rows(f, user_id)
        if n:
            view.copies.append({"where": "staging" if settings.paths.staging in f.parents
                                else "quarantine", "path": str(f), "rows": n})
    for table in USER_TABLES:
        for f in lake.orphans(table):
            if _user_rows(f, user_id):
                view.copies.append({"where": "orphaned lake file", "path": str(f)})
    fb, _ = FeedbackLog(settings.paths.feedback).read(0)
    if len(fb) and schema.USER_ID in fb.columns:
        view.feedback_events = int((fb[schema.USER_ID] == user_id).sum())
    return view


# ---------------------------------------------------------------------------------------------
# Erasure


@dataclass
class ErasureResult:
    erasure_id: str
    user_id: int
    subject: str
    superseded: list[dict[str, Any]]
    rows_removed: int
    files_rewritten: list[str]
    models_marked: list[str]
    runs_marked: list[str]
    remaining: list[dict[str, Any]]
    dataset_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rewrite_without(path: Path, user_id: int) -> int:
    df = pd.read_parquet(path)
    keep = df[df[schema.USER_ID] != user_id]
    tmp = path.with_suffix(".parquet.tmp")
    keep.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return len(df) - len(keep)


def erase(settings: Settings, user_id: int, *, reason: str = "data subject erasure request",
          run_id: str | None = None) -> ErasureResult:
    """Remove ``user_id``'s rows from the lake (and staged/quarantined copies); mark models.

    Idempotent: a second call finds nothing left to remove and records that it found nothing.
    """
    from recops.lake import Lake
    from recops.release import registry

    lake = Lake(settings.paths.lake)
    subject = subject_hash(user_id)
    erasure_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    superseded: list[dict[str, Any]] = []
    removed = 0
    for table in USER_TABLES:
        for b in lake.batches(table):
            n = _user_rows(b.path, user_id)
            if not n:
                continue
            df = lake.read(table, [b.batch_id])
            new = lake.supersede(table, b.batch_id, df[df[schema.USER_ID] != user_id],
                                 source=b.source, reason=f"erasure {erasure_id}")
            superseded.append({"table": table, "old": b.batch_id, "rows_removed": n,
                               "new": new.batch_id if new else None})
            removed += n
    rewritten = []
    for f in _staged_and_quarantined(settings):
        if _user_rows(f, user_id):
            removed += _rewrite_without(f, user_id)
            rewritten.append(str(f))
    for table in USER_TABLES:
        for f in lake.orphans(table):  # left by an erasure interrupted between log and delete
            if _user_rows(f, user_id):
                f.unlink()
                rewritten.append(str(f))
    old_ids: set[str] = {str(s["old"]) for s in superseded}
    # Earlier erasures of this subject count too, so a rerun after a crash still marks.
    for r in AuditLog(settings.paths.audit_log).records():
        if r["stage"] == "erase" and r.get("details", {}).get("subject") == subject:
            old_ids |= set(r.get("inputs", {}).get("superseded", []))
    versions = versions_containing(lake, old_ids) if old_ids else set()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    why = {"reason": f"trained on data that held erased rows ({reason})",
           "erasure_id": erasure_id, "time": now}
    marks: dict[str, dict[str, Any]] = {}
    runs_marked = []
    for rid, rdir, info in _runs(settings):
        labels = rdir / "labels.parquet"
        if info.get("dataset_version") in versions or (labels.is_file()
                                                       and _user_rows(labels, user_id)):
            runs_marked.append(rid)
            marks[f"run:{rid}"] = {**why, "run_id": rid}
    models_marked = []
    for m in registry.list_models(settings):
        meta = m.metadata
        if meta.get("data_version") in versions or meta.get("run_id") in runs_marked:
            models_marked.append(m.tag)
            marks[m.tag] = {**why, "run_id": meta.get("run_id"), "champion": m.champion}
    if marks:
        _mark(settings, marks)
    remaining = [c for c in show_copies_outside_lake(settings, user_id, runs_marked)]
    try:
        version = lake.dataset_version()
    except DataError:
        version = None  # the erased user was the whole lake
    AuditLog(settings.paths.audit_log).append(
        "erase", run_id=run_id, inputs={"superseded": sorted(s["old"] for s in superseded)},
        outputs={"new_batches": [s["new"] for s in superseded if s["new"]],
                 "dataset_version": version, "files_rewritten": rewritten},
        result="ok" if superseded or rewritten else "nothing-found",
        details={"subject": subject, "erasure_id": erasure_id, "reason": reason,
                 "rows_removed": removed, "models_marked": models_marked,
                 "runs_marked": runs_marked, "remaining": remaining})
    return ErasureResult(erasure_id, user_id, subject, superseded, removed, rewritten,
                         models_marked, runs_marked, remaining, version)


def show_copies_outside_lake(settings: Settings, user_id: int,
                             runs: list[str]) -> list[dict[str, Any]]:
    """Derived copies erasure leaves for their owners' next run, so the operator knows them."""
    from recops.feedback import FeedbackLog

    out = [{"where": "run directory", "path": str(settings.paths.runs / rid),
            "what": "labels / partitions of a run now marked for retraining"} for rid in runs]
    if settings.paths.features.is_dir():
        out.append({"where": "feature sources and online store", "path":
                    str(settings.paths.features), "what": "rebuilt from the lake by the next "
                    "`features` stage (recops features build + materialize)"})
    fb, _ = FeedbackLog(settings.paths.feedback).read(0)
    if len(fb) and schema.USER_ID in fb.columns and (fb[schema.USER_ID] == user_id).any():
        out.append({"where": "feedback log", "path": str(settings.paths.feedback),
                    "what": f"{int((fb[schema.USER_ID] == user_id).sum())} feedback event(s); "
                    "the log is append-only with consumer offsets"})
    return out
