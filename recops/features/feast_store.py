"""Feast as the one source of features: apply, materialise, historical retrieval, teardown.

This module is a boundary: :func:`get_store` puts the ``${ENV}`` values of
:func:`recops.environment.feast_env` into this process's environment, because Feast expands them
when it reads ``feature_repo/feature_store*.yaml``. Online reads and pushes are in
:mod:`recops.features.feast_online`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recops import schema
from recops.environment import child_env, feast_env
from recops.errors import FeatureError
from recops.features import featurize as f
from recops.paths import CHECKOUT

if TYPE_CHECKING:
    from feast import FeatureStore

    from recops.config import Settings

REPO = CHECKOUT / "feature_repo"
ONE_US = pd.Timedelta(microseconds=1)
USER_FEATURES = (*f.USER_SEQUENCE_FEATURES, *f.USER_STAT_FEATURES)


def yaml_file(settings: Settings) -> Path:
    """The feature_store yaml for the configured stores (Feast cannot switch a type by env)."""
    name = {
        ("sqlite", "file"): "feature_store.yaml",
        ("redis", "file"): "feature_store.redis.yaml",
        ("sqlite", "postgres"): "feature_store.postgres.yaml",
        ("redis", "postgres"): "feature_store.production.yaml",
    }[(settings.stores.online, settings.stores.registry)]
    return REPO / name


def get_store(settings: Settings) -> FeatureStore:
    """A FeatureStore over feature_repo/ with this settings' project, paths and stores."""
    os.environ.update(feast_env(settings))  # read by Feast's yaml loader (${ENV} expansion)
    # ibis 12 (under Feast's DuckDB offline store) calls a DuckDB 2 method that warns on every
    # query; the call works, and the warning is for ibis's maintainers, not our users.
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated",
                            category=DeprecationWarning)
    settings.paths.features.mkdir(parents=True, exist_ok=True)
    from feast import FeatureStore

    try:
        return FeatureStore(repo_path=str(REPO), fs_yaml_file=yaml_file(settings))
    except Exception as exc:  # Feast raises many types for a bad yaml or unreachable registry
        raise FeatureError(f"cannot open the feature store ({yaml_file(settings).name}, project "
                           f"'{settings.stores.feast_project}'): {exc}") from exc


def _audit(settings: Settings, stage: str, run_id: str | None, **kw: Any) -> None:
    from recops.core.audit import AuditLog

    AuditLog(settings.paths.audit_log).append(stage, run_id=run_id,
                                              config=settings.public_dict(), **kw)


def _feast_cli() -> str:
    exe = Path(sys.executable).with_name("feast")
    found = str(exe) if exe.exists() else shutil.which("feast")
    if not found:
        raise FeatureError("the `feast` command is not installed next to this Python")
    return found


def apply(settings: Settings, *, run_id: str | None = None) -> dict[str, Any]:
    """Run the real `feast apply` on feature_repo/ for this settings' stores and project.

    Materialisation watermarks live in the registry and survive a later apply.
    """
    manifest = f.read_manifest(settings)  # FeatureError when the sources were never built
    if manifest["max_len"] != settings.model.max_len:
        raise FeatureError(f"the feature sources were built with max_len={manifest['max_len']} "
                           f"but model.max_len={settings.model.max_len}: run "
                           "`recops features build` again")
    cmd = [_feast_cli(), "-c", str(REPO), "-f", str(yaml_file(settings)), "apply"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=child_env(settings), capture_output=True, text=True,
                              timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        _audit(settings, "features.apply", run_id, result="failed", details={"error": "timeout"})
        raise FeatureError(f"`feast apply` for project '{settings.stores.feast_project}' did "
                           "not finish in 600 s (is the registry reachable?)") from exc
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        _audit(settings, "features.apply", run_id, result="failed", details={"error": tail})
        raise FeatureError(f"`feast apply` failed for project '{settings.stores.feast_project}' "
                           f"({yaml_file(settings).name}): {tail}")
    result = {"project": settings.stores.feast_project, "yaml": yaml_file(settings).name,
              "seconds": round(seconds, 2), "dataset_version": manifest["dataset_version"],
              "output": proc.stdout.strip().splitlines()[-10:]}
    _audit(settings, "features.apply", run_id, inputs={"dataset_version":
           manifest["dataset_version"]}, outputs={"project": result["project"]},
           details={"yaml": result["yaml"]})
    return result


def watermarks(store: FeatureStore) -> dict[str, datetime | None]:
    """Per feature view, the end of the last materialised interval (kept in the registry)."""
    return {v.name: v.most_recent_end_time for v in store.list_feature_views()}


def materialize(settings: Settings, end: datetime | None = None, *, full: bool = False,
                run_id: str | None = None) -> dict[str, Any]:
    """Load new feature rows into the online store, incrementally from each view's watermark.

    A view never materialised (or all views with ``full``) starts at the sources' oldest event,
    since MovieLens is years old and Feast's default start is ``now - ttl``; the others go through
    ``materialize_incremental``. Twice with the same ``end`` changes nothing. A run that stops
    half-way resumes: each view's watermark is written when it completes.
    """
    manifest = f.read_manifest(settings)
    store = get_store(settings)
    stamp = pd.Timestamp(end or datetime.now(UTC))
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    end = stamp.to_pydatetime()
    start = (pd.Timestamp(manifest["min_source_timestamp"]) - pd.Timedelta(seconds=1))
    try:
        marks = watermarks(store)
    except Exception as exc:
        raise FeatureError(f"cannot read the registry of project '{store.project}': {exc}") from exc
    if not marks:
        raise FeatureError(f"project '{store.project}' has no feature views: run "
                           "`recops features apply` first")
    views: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    sink = io.StringIO()  # Feast prints coloured progress lines; keep them out of our output
    with contextlib.redirect_stdout(sink):
        for name, mark in sorted(marks.items()):
            if mark is not None and not full and mark >= end:
                views[name] = {"action": "up to date", "from": mark.isoformat(),
                               "to": mark.isoformat()}
                continue
            try:
                if mark is None or full:
                    store.materialize(start_date=start.to_pydatetime(), end_date=end,
                                      feature_views=[name])
                    views[name] = {"action": "full", "from": start.isoformat()}
                else:
                    store.materialize_incremental(end_date=end, feature_views=[name])
                    views[name] = {"action": "incremental", "from": mark.isoformat()}
            except Exception as exc:
                _audit(settings, "features.materialize", run_id, result="failed",
                       details={"view": name, "error": str(exc)[:500]})
                raise FeatureError(f"materialising feature view '{name}' of project "
                                   f"'{store.project}' failed: {exc}") from exc
            views[name]["to"] = end.isoformat()
    result = {"project": store.project, "end": end.isoformat(), "views": views,
              "seconds": round(time.perf_counter() - t0, 3),
              "dataset_version": manifest["dataset_version"]}
    _audit(settings, "features.materialize", run_id,
           inputs={"dataset_version": manifest["dataset_version"]},
           outputs={"end": result["end"], "views": {k: v["action"] for k, v in views.items()}})
    return result


def _check_labels(labels: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(labels, pd.DataFrame):
        raise FeatureError(f"labels must be a pandas DataFrame, not {type(labels).__name__}")
    missing = [c for c in (schema.USER_ID, schema.EVENT_TIMESTAMP) if c not in labels.columns]
    if missing:
        raise FeatureError(f"labels lack column(s) {missing}; have {list(labels.columns)}")
    null_rows = labels.index[labels[[schema.USER_ID, schema.EVENT_TIMESTAMP]].isna().any(axis=1)]
    if len(null_rows):
        raise FeatureError(f"labels have null user_id or event_timestamp in {len(null_rows)} "
                           f"row(s), e.g. index {null_rows[:5].tolist()}")
    try:
        users = labels[schema.USER_ID].astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"labels.user_id must be integer ids: {exc}") from exc
    try:
        ts = pd.to_datetime(labels[schema.EVENT_TIMESTAMP], utc=True).astype("datetime64[us, UTC]")
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"labels.event_timestamp cannot be read as timestamps: {exc}") from exc
    return pd.DataFrame({schema.USER_ID: users.to_numpy(), schema.EVENT_TIMESTAMP: ts.to_numpy()})


def as_int_list(v: Any) -> list[int]:
    """A list-valued feature as a list of ints; null (None or NaN) is the empty list."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return [int(x) for x in v]


def _retrieve(store: FeatureStore, keys: pd.DataFrame) -> pd.DataFrame:
    """One get_historical_features call for distinct (user, label time) keys, in keys' order."""
    entity_df = keys.assign(**{schema.EVENT_TIMESTAMP: keys[schema.EVENT_TIMESTAMP] - ONE_US,
                               "_row": np.arange(len(keys))})
    try:
        service = store.get_feature_service(f.RECOMMENDER_SERVICE)
        got = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    except Exception as exc:
        raise FeatureError(f"historical retrieval of '{f.RECOMMENDER_SERVICE}' from project "
                           f"'{store.project}' failed: {exc} (run `recops features apply`?)"
                           ) from exc
    # Feast 0.67's file store drops an entity row whose user has rows only after its time
    # (no history yet) instead of returning nulls: the left merge below brings them back.
    if len(got) > len(keys) or got["_row"].duplicated().any():
        raise FeatureError(f"historical retrieval returned {len(got)} rows for {len(keys)} "
                           "distinct (user_id, event_timestamp) pairs")
    return keys.assign(_row=np.arange(len(keys))).merge(
        got.drop(columns=[schema.USER_ID, schema.EVENT_TIMESTAMP]), on="_row", how="left"
    ).drop(columns="_row")


def historical_sequences(settings: Settings, labels: pd.DataFrame, *,
                         chunk_rows: int = 100_000) -> pd.DataFrame:
    """``labels`` plus the user's features just before each label, via Feast historical retrieval.

    Queries ``recommender_v1`` at label time - 1 µs, so no event at or after the label's time
    (same-second siblings included) reaches its row. Adds ``recent_items``/``recent_timestamps``
    (lists, empty for no history) and the user statistics (null for no history), in row order.
    Labels go to Feast in chunks of about ``chunk_rows`` whole users: the file offline store
    joins every label with every source row of its user, so one huge call exhausts memory.
    """
    f.read_manifest(settings)
    q = _check_labels(labels)
    out = labels.copy()
    if q.empty:
        for c in USER_FEATURES:
            out[c] = pd.Series([], dtype=object)
        return out
    store = get_store(settings)
    # Feast's file offline store keeps one row per (entity, time): query each pair once.
    keys = q.drop_duplicates().sort_values(schema.USER_ID, kind="stable").reset_index(drop=True)
    users = keys[schema.USER_ID].to_numpy()
    cuts = [0]
    while cuts[-1] < len(keys):
        nxt = min(cuts[-1] + chunk_rows, len(keys))
        if nxt < len(keys):  # move the cut to the next user boundary
            nxt = int(np.searchsorted(users, users[nxt - 1], side="right"))
        cuts.append(nxt)
    got = pd.concat([_retrieve(store, keys.iloc[a:b].reset_index(drop=True))
                     for a, b in zip(cuts[:-1], cuts[1:], strict=True)], ignore_index=True)
    got = q.merge(got, on=[schema.USER_ID, schema.EVENT_TIMESTAMP], how="left", validate="m:1")
    for c in f.USER_SEQUENCE_FEATURES:
        out[c] = [as_int_list(v) for v in got[c]]
    for c in f.USER_STAT_FEATURES:
        dtype = "Float32" if c == f.MEAN_RATING else "Int64"
        out[c] = pd.array(got[c].to_numpy(dtype=float, na_value=np.nan), dtype=dtype)
    return out


def teardown(settings: Settings) -> None:
    """Remove this project's online tables/keys and its registry entries, and nothing else.

    Not ``FeatureStore.teardown()``: that deletes *every* project in the registry, which on a
    shared PostgreSQL registry would wipe other deployments.
    """
    store = get_store(settings)
    with contextlib.redirect_stdout(io.StringIO()):
        views = store.list_feature_views()
        store._get_provider().teardown_infra(store.project, views, store.list_entities())
        store.registry.delete_project(store.project, commit=True)
