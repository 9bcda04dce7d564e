"""The gate to the lake: validate every table of a batch, then land it or quarantine it whole.

``accept_or_quarantine`` is what ingestion and the pipeline call for a staged batch;
``validate_feedback`` checks serving's feedback events before retraining folds them in;
``submit_files`` is ``recops validate PATH``; ``release`` resubmits a quarantined batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyarrow import ArrowException

from recops import schema
from recops.config import Settings
from recops.core.audit import AuditLog
from recops.core.lake import Lake
from recops.data.files import read_frame
from recops.errors import DataError, ValidationFailed
from validation import quarantine
from validation.batches import LAND_ROWS, batches, row_count, run_table_in_batches
from validation.history import history_for
from validation.names import FEEDBACK
from validation.readers import prepare, read_file
from validation.results import AcceptedBatch, BatchValidation, TableResult, manifest_dict
from validation.runner import docs_index, run_table

# Items before users before interactions: an interaction's item must be in the lake first.
LAND_ORDER = (schema.ITEMS, schema.USERS, schema.INTERACTIONS)
ACCEPTED = "ACCEPTED.json"


@dataclass
class FeedbackValidation:
    """The result of validating a batch of feedback events."""

    result: TableResult
    data_docs: Path | None
    quarantine_path: Path | None = None

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def failed(self) -> list[str]:
        return [c.describe() for c in self.result.failed]

    @property
    def warnings(self) -> list[str]:
        warnings: list[str] = self.result.summary()["warnings"]
        return warnings


def validate_frames(settings: Settings, frames: dict[str, pd.DataFrame], *, source: str,
                    progress: Callable[[str], None] | None = None, row_index: bool = False,
                    large: Mapping[str, Path] | None = None,
                    ) -> tuple[BatchValidation, dict[str, pd.DataFrame]]:
    """Validate each non-empty table; returns the result and the prepared frames (to land).

    ``row_index``: failing row-wise checks name their rows (see :func:`run_table`).
    ``large``: tables given as Parquet files too big for memory, validated batch by batch
    (:mod:`validation.batches`); they land from their file (``_land(..., large=...)``).
    """
    lake = Lake(settings.paths.lake)
    results: dict[str, TableResult] = {}
    prepared: dict[str, pd.DataFrame] = {}
    for table, path in (large or {}).items():
        if progress:
            progress(table)
        history = history_for(settings, lake, table, source=source, rows=row_count(path),
                              batch_items=frames.get(schema.ITEMS))
        results[table] = run_table_in_batches(settings, table, path, history,
                                              settings.validation.batch_rows)
    for table in sorted(frames, key=lambda t: LAND_ORDER.index(t) if t in LAND_ORDER else 9):
        raw = frames[table]
        if len(raw) == 0:
            continue  # an incremental batch may leave a table out: nothing to check or land
        if progress:
            progress(table)
        df, notes = prepare(raw, table)
        history = history_for(settings, lake, table, source=source, rows=len(df),
                              batch_items=frames.get(schema.ITEMS))
        results[table] = run_table(settings, table, df, history, notes, row_index=row_index)
        prepared[table] = df
    problems = [] if results else ["the batch holds no rows in any table"]
    docs = docs_index(settings)
    return BatchValidation(results, docs if docs.exists() else None, problems), prepared


def _audit_validate(settings: Settings, v: BatchValidation, *, batch: str, source: str,
                    run_id: str | None, outputs: dict[str, Any] | None = None) -> None:
    warn = "warn" if v.warnings else "ok"
    AuditLog(settings.paths.audit_log).append(
        "validate", run_id=run_id, inputs={"batch": batch, "source": source},
        outputs=outputs or {}, config=settings.validation.model_dump(mode="json"),
        result=warn if v.passed else "failed", details=v.summary())


def _failure_message(what: str, v: BatchValidation, qpath: Path) -> str:
    shown = v.failed[:8]
    more = f" (+{len(v.failed) - 8} more)" if len(v.failed) > 8 else ""
    return (f"{what} failed validation: " + "; ".join(shown) + more
            + f". The batch is quarantined whole at {qpath} (see REASON.txt; "
            f"`recops quarantine show {qpath.name}`)"
            + ("" if not v.notes else " Notes: " + "; ".join(v.notes[:4])))


def _land(settings: Settings, prepared: dict[str, pd.DataFrame], source: str,
          large: Mapping[str, Path] | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    lake = Lake(settings.paths.lake)
    landed = {}
    for table in LAND_ORDER:
        if table in prepared:
            landed[table] = manifest_dict(lake.append(table, prepared[table], source))
        elif table in (large or {}):  # streamed from its file, a batch of rows at a time
            chunks = batches((large or {})[table], LAND_ROWS)
            landed[table] = manifest_dict(lake.append_chunks(table, chunks, source))
    return lake.dataset_version(), landed


def _staged_tables(d: Path) -> dict[str, Path]:
    return {t: d / f"{t}.parquet" for t in schema.TABLES if (d / f"{t}.parquet").exists()}


def accept_or_quarantine(settings: Settings, staged_id: str, run_id: str | None = None,
                         ) -> AcceptedBatch:
    """Validate a staged batch; land every table in the lake, or quarantine the batch whole.

    Raises :class:`ValidationFailed` (with ``quarantine_path`` and ``failed``) on a blocking
    failure and :class:`DataError` when a staged file cannot be read (also quarantined).
    """
    d = settings.paths.staging / staged_id
    manifest = d / "manifest.json"
    if not manifest.exists():
        q = settings.paths.quarantine / staged_id
        hint = f"; it was quarantined: {q}" if q.exists() else ": run `recops ingest` first"
        raise DataError(f"no staged batch '{staged_id}' under {settings.paths.staging}{hint}")
    meta = json.loads(manifest.read_text())
    source = meta.get("source", "unknown")
    files = _staged_tables(d)
    rows = meta.get("rows", {})
    frames: dict[str, pd.DataFrame] = {}
    large: dict[str, Path] = {}
    for table, path in files.items():
        try:
            if table == schema.INTERACTIONS and \
                    rows.get(table, 0) > settings.validation.batch_rows:
                large[table] = path  # events: the table that grows; validated batch-wise
                continue
            frames[table] = read_frame(path, empty_ok=True)  # a batch may leave a table out
        except DataError as exc:
            qpath = quarantine.put(
                settings, staged_id, kind="staged", source=source, move_dir=d, run_id=run_id,
                tables={t: p.name for t, p in files.items()}, rows=rows, failed=[str(exc)],
                reason="A file of the batch cannot be read.", result=None, origin=str(d))
            raise DataError(f"{exc}; the batch is quarantined whole at {qpath}") from exc
    v, prepared = validate_frames(settings, frames, source=source, large=large)
    if not v.passed:
        _audit_validate(settings, v, batch=staged_id, source=source, run_id=run_id)
        qpath = quarantine.put(
            settings, staged_id, kind="staged", source=source, move_dir=d, run_id=run_id,
            tables={t: p.name for t, p in files.items()},
            rows={**{t: len(f) for t, f in frames.items()},
                  **{t: v.tables[t].rows for t in large}}, failed=v.failed,
            reason="Blocking expectations failed.", result=v.gx_results(), origin=str(d))
        raise ValidationFailed(_failure_message(f"staged batch {staged_id}", v, qpath),
                               quarantine_path=str(qpath), failed=v.failed)
    version, landed = _land(settings, prepared, source, large)
    _audit_validate(settings, v, batch=staged_id, source=source, run_id=run_id,
                    outputs={"dataset_version": version,
                             "batches": {t: m["batch_id"] for t, m in landed.items()}})
    accepted = AcceptedBatch(version, staged_id, v.tables, v.data_docs, v.warnings, landed)
    (d / ACCEPTED).write_text(json.dumps(accepted.summary(), indent=1, default=str))
    return accepted


def validate_feedback(settings: Settings, df: pd.DataFrame, *, run_id: str | None = None,
                      quarantine_failed: bool = True, row_index: bool = False,
                      ) -> FeedbackValidation:
    """Check a batch of feedback events (the feedback suite: types, values, known items).

    A failing batch is written whole to quarantine (unless ``quarantine_failed`` is False);
    the caller decides what to do with the result: retraining must not fold it in.
    ``row_index``: failing row-wise checks name their rows (for :mod:`validation.rows`).
    """
    v, _ = validate_frames(settings, {FEEDBACK: df}, source="feedback", row_index=row_index)
    if not v.tables:
        raise DataError("feedback batch holds no events: nothing to validate")
    result = v.tables[FEEDBACK]
    out = FeedbackValidation(result, v.data_docs)
    _audit_validate(settings, v, batch=f"feedback:{len(df)} events", source="feedback",
                    run_id=run_id)
    if not out.passed and quarantine_failed:
        out.quarantine_path = quarantine_feedback(
            settings, df, failed=out.failed, reason="Blocking expectations failed.",
            result=v.gx_results(), run_id=run_id)
    return out


def quarantine_feedback(settings: Settings, df: pd.DataFrame, *, failed: list[str], reason: str,
                        result: dict[str, Any] | None, run_id: str | None = None) -> Path:
    """Put feedback rows (a whole batch, or the rows of one that failed) in quarantine."""
    from recops.core.hashing import sha256_frame

    qid = "feedback-" + sha256_frame(df)[:12]
    tmp = settings.paths.quarantine / ".incoming" / qid
    tmp.mkdir(parents=True, exist_ok=True)
    name = "feedback.parquet"
    try:
        df.to_parquet(tmp / name, index=False)  # every row, as given
    except (ValueError, TypeError, ArrowException):
        name = "feedback.csv"  # mixed-type columns Parquet cannot hold: keep them as text
        (tmp / "feedback.parquet").unlink(missing_ok=True)
        df.to_csv(tmp / name, index=False)
    return quarantine.put(
        settings, qid, kind="feedback", source="feedback", move_dir=tmp, run_id=run_id,
        tables={FEEDBACK: name}, rows={FEEDBACK: len(df)}, failed=failed, reason=reason,
        result=result)


def read_submitted(path: Path, table: str | None) -> dict[str, tuple[Path, pd.DataFrame]]:
    """A file (one table) or a folder of <table>.csv|.parquet files: table -> (file, rows)."""
    path = Path(path)
    if path.is_dir():
        found = {}
        for f in sorted(path.iterdir()):
            if f.is_file() and f.stem.lower() in (*schema.TABLES, FEEDBACK):
                df, t = read_file(f, f.stem.lower())
                found[t] = (f, df)
        if not found:
            raise DataError(f"{path}: no interactions/items/users/feedback .csv, .tsv, .parquet "
                            "or .jsonl file")
        return found
    df, t = read_file(path, table)
    return {t: (path, df)}


def submit_files(settings: Settings, path: Path, *, table: str | None = None,
                 land: bool = False, quarantine_failed: bool = True, source: str | None = None,
                 run_id: str | None = None, progress: Callable[[str], None] | None = None,
                 ) -> tuple[BatchValidation, AcceptedBatch | None, Path | None]:
    """``recops validate PATH``: validate a submitted file/folder; optionally land it.

    Unreadable input raises :class:`DataError` naming the file (copied to quarantine first).
    Returns (validation, accepted batch if landed, quarantine path if quarantined).
    """
    from recops.core.hashing import sha256_file

    path = Path(path)
    src = source or f"file:{path.name}"
    qid = "file-" + (sha256_file(path)[:12] if path.is_file() else path.name)
    try:
        submitted = read_submitted(path, table)
    except DataError as exc:
        if quarantine_failed and path.is_file():
            copied = quarantine.put(
                settings, qid, kind="file", source=src, copy_files=[path], origin=str(path),
                tables={table or "unknown": path.name}, rows={table or "unknown": None},
                failed=[str(exc)], reason="The file cannot be read.", result=None,
                run_id=run_id)
            raise DataError(f"{exc} (copied untouched to quarantine: {copied})") from exc
        raise
    frames = {t: df for t, (_, df) in submitted.items()}
    if FEEDBACK in frames and len(frames) > 1:
        raise DataError(f"{path}: a feedback file is validated on its own, not with tables")
    v, prepared = validate_frames(settings, frames, source=src, progress=progress)
    names = {t: f.name for t, (f, _) in submitted.items()}
    if not v.passed:
        _audit_validate(settings, v, batch=str(path), source=src, run_id=run_id)
        qpath: Path | None = None
        if quarantine_failed:
            qpath = quarantine.put(
                settings, qid, kind="file", source=src, origin=str(path), tables=names,
                copy_files=[f for f, _ in submitted.values()],
                rows={t: len(df) for t, df in frames.items()}, failed=v.failed,
                reason="Blocking expectations failed.", result=v.gx_results(), run_id=run_id)
        return v, None, qpath
    if not land or FEEDBACK in frames:
        _audit_validate(settings, v, batch=str(path), source=src, run_id=run_id)
        return v, None, None
    version, landed = _land(settings, prepared, src)
    _audit_validate(settings, v, batch=str(path), source=src, run_id=run_id,
                    outputs={"dataset_version": version})
    return v, AcceptedBatch(version, qid, v.tables, v.data_docs, v.warnings, landed), None


def release(settings: Settings, qid: str, *, fixed: Path | None = None, table: str | None = None,
            run_id: str | None = None) -> AcceptedBatch:
    """Re-validate a quarantined batch (with a fixed file for one table) and land it if it passes.

    On failure the batch stays in quarantine, the attempt is recorded, and
    :class:`ValidationFailed` is raised. The quarantined originals are never changed.
    """
    import shutil

    qdir = quarantine.path_of(settings, qid)
    meta = quarantine.read_meta(settings, qid)
    if meta["status"] == "released":
        raise DataError(f"quarantined batch {qid} was already released on "
                        f"{meta.get('released', {}).get('time')}")
    if meta["kind"] == FEEDBACK:
        raise DataError(f"{qid} holds feedback events: they are folded in by retraining, not "
                        "landed directly; fix the events at their source")
    files = {t: qdir / name for t, name in meta["tables"].items()}
    if fixed is not None:
        only = next(iter(files)) if len(files) == 1 and "unknown" not in files else None
        _, ftable = read_file(fixed, table or only)  # refuses unreadable fixes up front
        (qdir / "fixed").mkdir(exist_ok=True)
        shutil.copy2(fixed, qdir / "fixed" / Path(fixed).name)
        files.pop("unknown", None)
        files[ftable] = qdir / "fixed" / Path(fixed).name
    frames = {}
    for t, p in files.items():
        try:
            # A staged table may be empty; a submitted file may not.
            frames[t] = read_frame(p, empty_ok=p.suffix == ".parquet")
        except DataError as exc:
            raise DataError(f"{exc}: quarantined batch {qid} still cannot be read; supply a "
                            "fixed file with --file") from exc
    v, prepared = validate_frames(settings, frames, source=meta["source"])
    if not v.passed:
        _audit_validate(settings, v, batch=qid, source=meta["source"], run_id=run_id)
        quarantine.record_attempt(settings, qid, v.summary())
        raise ValidationFailed(_failure_message(f"release of {qid}", v, qdir),
                               quarantine_path=str(qdir), failed=v.failed)
    version, landed = _land(settings, prepared, meta["source"])
    _audit_validate(settings, v, batch=qid, source=meta["source"], run_id=run_id,
                    outputs={"dataset_version": version})
    from datetime import UTC, datetime

    meta["status"] = "released"
    meta["released"] = {"time": datetime.now(UTC).isoformat(), "dataset_version": version,
                        "fixed": str(fixed) if fixed else None,
                        "rows": {t: len(df) for t, df in prepared.items()}}
    quarantine.write_meta(settings, meta)
    AuditLog(settings.paths.audit_log).append(
        "release", run_id=run_id, inputs={"batch": qid, "fixed": str(fixed) if fixed else None},
        outputs={"dataset_version": version, "batches": {t: m["batch_id"]
                                                        for t, m in landed.items()}},
        details={"rows": meta["released"]["rows"]})
    return AcceptedBatch(version, qid, v.tables, v.data_docs, v.warnings, landed)
