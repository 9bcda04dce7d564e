"""Where one user's rows sit outside the lake's live batches, and how each place loses them.

Every place is found read-only first (:func:`find`), so an access request (export) and an
erasure see the same list, and an erasure of a user held nowhere changes nothing. Places:

* Parquet files anywhere under the home but the lake's own batches (staged and quarantined
  batches, the feature sources Feast reads, run files: labels, feedback batches, ...), found by
  their ``user_id`` column. Run files are rewritten through :class:`recops.core.runs.RunDir`, the
  others atomically (temporary file, fsync, rename), the Parquet schema kept;
* the user lists of run directories (``eval_users.json``, ``window.json``);
* downloaded dataset files (``<home>/datasets``: CSV with a ``userId``/``user_id`` header);
* the event logs (:data:`USER_LOGS`): the feedback log and the impression log (file or
  PostgreSQL backend).

The online store is in :mod:`recops.features.online_store`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recops import schema
from recops.core.atomic import atomic_file, write_atomic
from recops.core.runs import RunDir
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.events import EventLog

CSV_USER_COLUMNS = ("userId", "user_id")


@dataclass(frozen=True)
class Place:
    """One place that holds (or held) the user's rows."""

    kind: str  # parquet | run-list | csv | log | online
    where: str  # what it is, in words: "run file", "feature source", "feedback log", ...
    path: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _where(settings: Settings, path: Path) -> str:
    p = settings.paths
    for root, name in ((p.runs, "run file"), (p.features, "feature source"),
                       (p.staging, "staging"), (p.quarantine, "quarantine"),
                       (p.datasets, "dataset download")):
        if root in path.parents:
            return name
    return "other file"


def _run_of(settings: Settings, path: Path) -> tuple[RunDir, str] | None:
    """(the run directory, the file's name inside it) for a file of a run."""
    runs = settings.paths.runs
    if runs not in path.parents:
        return None
    rel = path.relative_to(runs)
    if len(rel.parts) < 2:
        return None
    return RunDir.of(settings, rel.parts[0]), str(Path(*rel.parts[1:]))


# ---------------------------------------------------------------------------------------------
# Parquet files


def _parquet_files(settings: Settings) -> list[Path]:
    home, lake = settings.paths.home, settings.paths.lake
    if not home.is_dir():
        return []
    return sorted(p for p in home.rglob("*.parquet") if lake not in p.parents and p.is_file())


def _user_mask(table: pa.Table, user_id: int) -> pa.ChunkedArray:
    col = table.column(schema.USER_ID)
    return pc.fill_null(pc.equal(col, pa.scalar(user_id, col.type)), False)


def _read_user_table(path: Path) -> pa.Table | None:
    try:
        if schema.USER_ID not in pq.read_schema(path).names:
            return None
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {path} to look for the user's rows: {exc}") from exc


def _parquet_rows(path: Path, user_id: int) -> pd.DataFrame | None:
    table = _read_user_table(path)
    if table is None:
        return None
    rows = table.filter(_user_mask(table, user_id))
    return rows.to_pandas() if rows.num_rows else None


def _rewrite_parquet(settings: Settings, path: Path, user_id: int) -> None:
    table = _read_user_table(path)
    if table is None:
        return
    keep = table.filter(pc.invert(_user_mask(table, user_id)))
    run = _run_of(settings, path)
    if run is not None:
        run[0].write_frame(run[1], keep.to_pandas())
        return
    with atomic_file(path) as f:
        pq.write_table(keep, f)


# ---------------------------------------------------------------------------------------------
# Run directories' user lists


def _run_lists(settings: Settings) -> list[tuple[RunDir, str, list[int]]]:
    root = settings.paths.runs
    out = []
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            run = RunDir.of(settings, d.name)
            for name in (RunDir.EVAL_USERS, RunDir.WINDOW):
                if run.has(name):
                    obj = run.read_json(name)
                    users = obj if name == RunDir.EVAL_USERS else obj.get("users", [])
                    out.append((run, name, [int(u) for u in users]))
    return out


def _rewrite_run_list(run: RunDir, name: str, user_id: int) -> None:
    obj = run.read_json(name)
    if name == RunDir.EVAL_USERS:
        run.write_json(name, [u for u in obj if int(u) != user_id])
    else:
        run.write_json(name, {**obj, "users": [u for u in obj["users"] if int(u) != user_id]})


# ---------------------------------------------------------------------------------------------
# Downloaded datasets (CSV)


def _csv_files(settings: Settings) -> list[tuple[Path, int]]:
    root = settings.paths.datasets
    out = []
    if root.is_dir():
        for p in sorted(root.rglob("*.csv")):
            with open(p, newline="", encoding="utf-8", errors="replace") as f:
                header = next(csv.reader(f), [])
            col = next((i for i, c in enumerate(header) if c in CSV_USER_COLUMNS), None)
            if col is not None:
                out.append((p, col))
    return out


def _csv_split(path: Path, col: int, user_id: int) -> tuple[list[str], list[str]]:
    """(lines kept, lines of the user), the header kept; lines are kept byte for byte."""
    kept: list[str] = []
    theirs: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n == 0:
                kept.append(line)
                continue
            fields = next(csv.reader(io.StringIO(line)), [])
            is_theirs = len(fields) > col and fields[col].strip() == str(user_id)
            (theirs if is_theirs else kept).append(line)
    return kept, theirs


def _rewrite_csv(path: Path, kept: list[str]) -> None:
    write_atomic(path, "".join(kept))


# ---------------------------------------------------------------------------------------------
# Event logs


def _feedback_log(settings: Settings) -> EventLog | None:
    from recops.core.feedback import open_log

    return open_log(settings)


def _left_behind(settings: Settings, filename: str,
                 log: Callable[[Path], EventLog]) -> EventLog | None:
    """A file log left behind when the backend became PostgreSQL (it still holds records)."""
    if settings.feedback.backend == "file" or not (settings.paths.feedback / filename).exists():
        return None
    return log(settings.paths.feedback)


def _old_file_log(settings: Settings) -> EventLog | None:
    from recops.core.feedback import FILENAME, FeedbackLog

    return _left_behind(settings, FILENAME, FeedbackLog)


def _impression_log(settings: Settings) -> EventLog | None:
    from recops.policy.impressions import open_impressions

    return open_impressions(settings)


def _old_impression_file(settings: Settings) -> EventLog | None:
    from recops.policy.impressions import FILENAME, ImpressionLog

    return _left_behind(settings, FILENAME, ImpressionLog)


# Every log of user events: the feedback log and the impression log (the lists /recommend
# served), read by `subject export` and rewritten by `subject erase`. An opener returns None
# where its log does not apply.
USER_LOGS: dict[str, Callable[[Settings], EventLog | None]] = {
    "feedback log": _feedback_log, "feedback log (file, before postgres)": _old_file_log,
    "impression log": _impression_log,
    "impression log (file, before postgres)": _old_impression_file}


def _open(name: str, settings: Settings) -> EventLog:
    log = USER_LOGS[name](settings)
    if log is None:
        raise DataError(f"the {name} does not apply to these settings")
    return log


def _log_rows(log: EventLog, user_id: int) -> pd.DataFrame:
    df, _ = log.read(0)
    return df[df[schema.USER_ID] == user_id] if len(df) else df


# ---------------------------------------------------------------------------------------------
# Find, read, erase


def find(settings: Settings, user_id: int) -> list[Place]:
    """Every place outside the lake's live batches and the online store holding the user."""
    places = []
    for path in _parquet_files(settings):
        rows = _parquet_rows(path, user_id)
        if rows is not None:
            places.append(Place("parquet", _where(settings, path), str(path), len(rows)))
    for run, name, users in _run_lists(settings):
        if user_id in users:
            places.append(Place("run-list", "run file", str(run.file(name)), 1))
    for path, col in _csv_files(settings):
        theirs = _csv_split(path, col, user_id)[1]
        if theirs:
            places.append(Place("csv", "dataset download", str(path), len(theirs)))
    for name, opener in USER_LOGS.items():
        log = opener(settings)
        if log is None:
            continue
        n = len(_log_rows(log, user_id))
        if n:
            places.append(Place("log", name, str(getattr(log, "path", log.name)), n))
    return places


def read(settings: Settings, place: Place, user_id: int) -> list[dict[str, Any]]:
    """The user's rows at ``place``, as JSON-able records (for an access request)."""
    if place.kind == "parquet":
        df = _parquet_rows(Path(place.path), user_id)
        return [] if df is None else records(df)
    if place.kind == "run-list":
        return [{"file": place.path, "listed": True}]
    if place.kind == "csv":
        path = Path(place.path)
        col = dict(_csv_files(settings))[path]
        kept, theirs = _csv_split(path, col, user_id)
        header = next(csv.reader(io.StringIO(kept[0])))
        return [dict(zip(header, next(csv.reader(io.StringIO(ln))), strict=False))
                for ln in theirs]
    if place.kind == "log":
        return records(_log_rows(_open(place.where, settings), user_id))
    raise DataError(f"unknown kind of place {place.kind!r}")


def erase(settings: Settings, place: Place, user_id: int) -> int:
    """Remove the user's rows at ``place``; returns how many went."""
    if place.kind == "parquet":
        _rewrite_parquet(settings, Path(place.path), user_id)
        return place.rows
    if place.kind == "run-list":
        run = _run_of(settings, Path(place.path))
        assert run is not None  # found under the runs folder
        _rewrite_run_list(run[0], run[1], user_id)
        return 1
    if place.kind == "csv":
        path = Path(place.path)
        kept, theirs = _csv_split(path, dict(_csv_files(settings))[path], user_id)
        _rewrite_csv(path, kept)
        return len(theirs)
    if place.kind == "log":
        log = _open(place.where, settings)
        erased = log.erase_user(user_id)
        if erased.spans:  # byte offsets moved: consumers' watermarks move with them
            from recops.core.watermark import shift_watermark

            shift_watermark(settings, log.name, erased.shift)
        return erased.removed
    raise DataError(f"unknown kind of place {place.kind!r}")


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-able records (times as ISO text, arrays as lists)."""
    import json

    out: list[dict[str, Any]] = json.loads(df.to_json(orient="records", date_format="iso",
                                                      default_handler=str))
    return out
