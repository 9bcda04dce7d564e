"""Data-subject requests: what recops holds about one user (access) and erasing it (erasure).

Erasure reaches every place the user's rows sit: it rewrites every lake batch holding them as a
new batch without them, in the old batch's place (``Lake.supersede``: the lake's log stays
append-only and says what was replaced) and deletes the old files; rewrites every other file
under the home that holds them (staged and quarantined batches, the feature sources, run files,
downloaded datasets: :mod:`recops.compliance.places`) and the event logs (feedback, file or
PostgreSQL); deletes the user's rows from Feast's online store
(:mod:`recops.features.online_store`); adds the user's hash to the lake's tombstones, so no
later ingestion or retraining cycle brings them back; records an ``erase`` audit record; and
marks every model and run trained on data that held the user in
``<home>/audit/retrain_required.json`` (read by the report and the pipeline). Records name the
user only by a hash.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from recops import schema
from recops.compliance import places
from recops.core import tombstones
from recops.core.atomic import file_lock, write_json
from recops.core.audit import AuditLog
from recops.core.hashing import sha256_json
from recops.core.tombstones import subject_hash
from recops.errors import DataError
from recops.features import online_store

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake

USER_TABLES = (schema.INTERACTIONS, schema.USERS)
__all__ = ["erase", "parse_user_id", "retrain_required", "show", "subject_hash",
           "versions_containing"]


def parse_user_id(raw: str | int) -> int:
    """A user id from the command line, as the team writes it: an integer is itself, any other
    text (a customer id, a UUID) is its internal id in the lake's id map."""
    from recops.core.idmap import internal_id

    text = str(raw).strip()
    if text.startswith("-") and text[1:].isdigit():
        raise DataError(f"user id {text} is negative; user ids are >= 0")
    return internal_id(text)


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
    with file_lock(path.with_suffix(".lock")):
        current = retrain_required(settings)
        for key, info in entries.items():
            current.setdefault(key, info)  # the first erasure that hit a model is its reason
        write_json(path, current)


# ---------------------------------------------------------------------------------------------
# Which data versions held which batches


def _table_version(ids: list[str]) -> str | None:
    # The same definition as Lake.version / dataset_version (a test holds them equal).
    return sha256_json(ids)[:16] if ids else None


def versions_containing(lake: Lake, batch_ids: set[str]) -> set[str]:
    """Every dataset version the lake has ever had while holding any of ``batch_ids``.

    Replays the tables' logs in time order (the lake only appends, so this is its history).
    """
    from recops.core.lake import SUPERSEDE

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
    copies: list[dict[str, Any]] = field(default_factory=list)  # places.Place, as dicts
    feedback_events: int = 0
    impressions: int = 0  # lists /recommend served the user (impression log)
    online_rows: int = 0
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


def erasures_of(settings: Settings, subject: str) -> list[dict[str, Any]]:
    """The ``erase`` audit records of ``subject`` (its hash), oldest first."""
    return [r for r in AuditLog(settings.paths.audit_log).records() if r["stage"] == "erase"
            and r.get("details", {}).get("subject") == subject]


def _lake_hits(lake: Lake, user_id: int) -> list[dict[str, Any]]:
    out = []
    for table in USER_TABLES:
        for b in lake.batches(table):
            n = _user_rows(b.path, user_id)
            if n:
                out.append({"table": table, "batch_id": b.batch_id, "rows": n,
                            "source": b.source, "created_at": b.created_at})
    return out


def _run_ids_in(settings: Settings, found: list[places.Place]) -> set[str]:
    runs = settings.paths.runs
    return {Path(p.path).relative_to(runs).parts[0] for p in found
            if runs in Path(p.path).parents}


def _trained_on(settings: Settings, versions: set[str], run_hits: set[str]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """(runs, models, run ids) built from a dataset version in ``versions`` or a run whose
    files held the user."""
    from recops.release import registry

    runs, run_ids = [], set()
    for rid, _, info in _runs(settings):
        if rid in run_hits or info.get("dataset_version") in versions:
            run_ids.add(rid)
            runs.append({"run_id": rid, "dataset_version": info.get("dataset_version"),
                         "mode": info.get("mode"), "in_files": rid in run_hits})
    marks = retrain_required(settings)
    models = []
    for m in registry.list_models(settings):
        meta = m.metadata
        if meta.get("run_id") in run_ids or meta.get("data_version") in versions:
            run_ids.add(str(meta.get("run_id")))
            models.append({"tag": m.tag, "run_id": meta.get("run_id"),
                           "data_version": meta.get("data_version"), "champion": m.champion,
                           "retrain_required": m.tag in marks})
    return runs, models, run_ids


def show(settings: Settings, user_id: int) -> SubjectView:
    """Datasets/batches, copies, runs, model versions and privacy spends that involved the user."""
    from recops.core.lake import Lake
    from recops.training.privacy import PrivacyLedger

    lake = Lake(settings.paths.lake)
    view = SubjectView(user_id, subject_hash(user_id))
    view.batches = _lake_hits(lake, user_id)
    view.events = sum(b["rows"] for b in view.batches if b["table"] == schema.INTERACTIONS)
    hit_ids = {b["batch_id"] for b in view.batches}
    # Past erasures of this subject: the versions that held the superseded batches still count.
    view.erasures = erasures_of(settings, view.subject)
    for r in view.erasures:
        hit_ids |= set(r.get("inputs", {}).get("superseded", []))
    found = places.find(settings, user_id)
    for table in USER_TABLES:
        for f in lake.orphans(table):
            if _user_rows(f, user_id):
                found.append(places.Place("orphan", "orphaned lake file", str(f), 0))
    view.copies = [p.to_dict() for p in found]
    view.feedback_events = sum(p.rows for p in found if p.where.startswith("feedback log"))
    view.impressions = sum(p.rows for p in found if p.where.startswith("impression log"))
    view.online_rows = online_store.count_user_rows(settings, user_id)
    versions = versions_containing(lake, hit_ids) if hit_ids else set()
    view.runs, view.models, run_ids = _trained_on(settings, versions,
                                                  _run_ids_in(settings, found))
    view.privacy_spends = [s.to_dict() for s in
                           PrivacyLedger(settings.paths.privacy_ledger).entries()
                           if s.run_id in run_ids]
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
    places: list[dict[str, Any]] = field(default_factory=list)  # every place rewritten
    online_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What erasure leaves, on purpose, for the operator to know.
REMAINING = [
    {"where": "model weights", "path": "registry",
     "what": "models trained on the user are marked (retrain_required.json) and replaced by the "
             "next training, which no longer sees the user"},
    {"where": "item aggregates", "path": "features",
     "what": "item popularity counts in the feature sources and online store include the "
             "user's events (no user id) until the next `features` stage rebuilds them"},
]


def erase(settings: Settings, user_id: int, *, reason: str = "data subject erasure request",
          run_id: str | None = None) -> ErasureResult:
    """Remove the user's rows from every place recops holds them; mark models; tombstone.

    A user held nowhere and never erased is refused (DataError) with nothing changed. A repeat
    is idempotent: it finds nothing left to remove and records that it found nothing.
    """
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    subject = subject_hash(user_id)
    hits = _lake_hits(lake, user_id)
    orphans = [f for t in USER_TABLES for f in lake.orphans(t) if _user_rows(f, user_id)]
    found = places.find(settings, user_id)
    online = online_store.count_user_rows(settings, user_id)
    before = erasures_of(settings, subject)
    if not (hits or orphans or found or online or before):
        raise DataError(f"user {user_id} is held nowhere under {settings.paths.home} (lake, "
                        "files, feedback and impression logs, online store) and was never "
                        "erased: nothing to erase, nothing changed. Check the id with "
                        f"`recops subject show {user_id}`")
    erasure_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    # First, so an ingestion running meanwhile already refuses the user's rows.
    tombstones.add(settings.paths.lake, subject, erasure_id)
    superseded: list[dict[str, Any]] = []
    for h in hits:
        df = lake.read(h["table"], [h["batch_id"]])
        new = lake.supersede(h["table"], h["batch_id"], df[df[schema.USER_ID] != user_id],
                             source=h["source"], reason=f"erasure {erasure_id}")
        superseded.append({"table": h["table"], "old": h["batch_id"], "rows_removed": h["rows"],
                           "new": new.batch_id if new else None})
    removed = sum(h["rows"] for h in hits)
    for f in orphans:  # left by an erasure interrupted between log and delete
        f.unlink()
    run_hits = _run_ids_in(settings, found)
    done = []
    for place in found:  # files and logs; the feature sources before the online store
        removed += places.erase(settings, place, user_id)
        done.append(place.to_dict())
    online = online_store.delete_user_rows(settings, user_id) if online else 0
    from recops.core.idmap import IdMap

    mapped = IdMap(settings.paths.lake, "users").forget(user_id)  # the team's id goes too
    if mapped:
        done.append({"kind": "idmap", "where": "id map", "path": str(IdMap(
            settings.paths.lake, "users").root), "rows": mapped})
    if online:
        done.append({"kind": "online", "where": "online store",
                     "path": online_store.where(settings), "rows": online})
    rewritten = [str(f) for f in orphans] + [p.path for p in found if p.kind != "log"]
    old_ids: set[str] = {str(s["old"]) for s in superseded}
    # Earlier erasures of this subject count too, so a rerun after a crash still marks.
    for r in before:
        old_ids |= set(r.get("inputs", {}).get("superseded", []))
    versions = versions_containing(lake, old_ids) if old_ids else set()
    runs, models, _ = _trained_on(settings, versions, run_hits)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    why = {"reason": f"trained on data that held erased rows ({reason})",
           "erasure_id": erasure_id, "time": now}
    marks: dict[str, dict[str, Any]] = {f"run:{r['run_id']}": {**why, "run_id": r["run_id"]}
                                        for r in runs}
    marks.update({m["tag"]: {**why, "run_id": m["run_id"], "champion": m["champion"]}
                  for m in models})
    if marks:
        _mark(settings, marks)
    runs_marked = [r["run_id"] for r in runs]
    models_marked = [m["tag"] for m in models]
    try:
        version = lake.dataset_version()
    except DataError:
        version = None  # the erased user was the whole lake
    AuditLog(settings.paths.audit_log).append(
        "erase", run_id=run_id, inputs={"superseded": sorted(s["old"] for s in superseded)},
        outputs={"new_batches": [s["new"] for s in superseded if s["new"]],
                 "dataset_version": version, "files_rewritten": rewritten,
                 "places": [{k: p[k] for k in ("where", "path", "rows")} for p in done]},
        result="ok" if superseded or orphans or done else "nothing-found",
        details={"subject": subject, "erasure_id": erasure_id, "reason": reason,
                 "rows_removed": removed, "online_rows": online,
                 "models_marked": models_marked, "runs_marked": runs_marked,
                 "remaining": REMAINING})
    return ErasureResult(erasure_id, user_id, subject, superseded, removed, rewritten,
                         models_marked, runs_marked, REMAINING, version, done, online)
