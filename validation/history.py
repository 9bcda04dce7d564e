"""What a batch is compared with: the last accepted batch, current items, reference shares."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, timedelta

import numpy as np
import pandas as pd

from recops import schema
from recops.config import Settings
from recops.core.atomic import atomic_file, write_atomic
from recops.core.lake import Lake
from validation import suites
from validation.drift import shares
from validation.names import FEEDBACK
from validation.suites import History, Reference

# Clocks of the hosts that log events differ a little; a few minutes ahead is not "the future".
CLOCK_SKEW = timedelta(minutes=5)
# Item popularity drift compares the shares of the reference's most popular items (+ the rest).
TOP_ITEMS = 20
# Below this many rows a batch's shares are mostly sampling noise (PSI ~ buckets / rows).
DRIFT_MIN_ROWS = 200


def _utc(ts: object) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize(UTC) if t.tzinfo is None else t.tz_convert(UTC)


def current_item_ids(lake: Lake, batch_items: pd.DataFrame | None) -> np.ndarray:
    """Items an interaction may point at: the lake's current items plus those in this batch."""
    ids = [lake.read_latest(schema.ITEMS)[schema.ITEM_ID].to_numpy(dtype="int64")]
    if batch_items is not None and schema.ITEM_ID in batch_items.columns:
        batch = pd.to_numeric(batch_items[schema.ITEM_ID], errors="coerce").dropna()
        ids.append(batch.to_numpy(dtype="int64"))
    return np.unique(np.concatenate(ids))


def item_reference(settings: Settings, ids: np.ndarray) -> str:
    """Write the item ids to a content-addressed .npy file (the referential check reads it)."""
    digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
    path = settings.paths.gx / "references" / f"item_ids-{digest}.npy"
    if not path.exists():
        with atomic_file(path) as f:
            np.save(f, ids, allow_pickle=False)
    return str(path)


def references(settings: Settings, lake: Lake) -> list[Reference]:
    """Rating and item-popularity shares of all accepted interactions (cached per lake version)."""
    version = lake.version(schema.INTERACTIONS)
    if version is None:
        return []
    v = settings.validation
    cache = settings.paths.gx / "references" / f"{version}-{v.rating_min}-{v.rating_max}.json"
    if cache.exists():
        return [Reference(**r) for r in json.loads(cache.read_text())]
    cols = [schema.RATING, schema.ITEM_ID]
    frames = [pd.read_parquet(b.path, columns=cols) for b in lake.batches(schema.INTERACTIONS)]
    hist = pd.concat(frames, ignore_index=True)
    refs = []
    ratings = hist[schema.RATING].dropna()
    if len(ratings):
        cats = [float(x) for x in np.arange(v.rating_min, v.rating_max + 0.25, 0.5)]
        refs.append(Reference(schema.RATING, cats, shares(ratings, cats).tolist(),
                              "the rating distribution"))
    top = hist[schema.ITEM_ID].value_counts().head(TOP_ITEMS).index
    cats = [int(i) for i in top]
    refs.append(Reference(schema.ITEM_ID, cats, shares(hist[schema.ITEM_ID], cats).tolist(),
                          f"item popularity (top {len(cats)} items + the rest)"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps([r.__dict__ for r in refs]))
    return refs


def history_for(settings: Settings, lake: Lake, table: str, *, source: str, rows: int,
                batch_items: pd.DataFrame | None = None) -> History:
    """Suite parameters and drift references for validating ``table`` of a batch from ``source``."""
    v = settings.validation
    h = History()
    if table in schema.TABLES:
        same = [b for b in lake.batches(table) if b.source == source]
        if same:
            last = same[-1].rows
            h.parameters[suites.P_MIN_ROWS] = max(1, int(np.ceil(last * v.volume_low)))
            h.parameters[suites.P_MAX_ROWS] = int(np.floor(last * v.volume_high))
        else:
            h.notes.append(f"{table}: no earlier accepted batch from source '{source}': volume "
                           "is only checked to be non-empty")
            h.parameters[suites.P_MIN_ROWS] = 1
            h.parameters[suites.P_MAX_ROWS] = None
    if table in (schema.INTERACTIONS, FEEDBACK):
        h.parameters[suites.P_NOW] = pd.Timestamp.now(tz=UTC) + CLOCK_SKEW
        h.parameters[suites.P_FLOOR] = _utc(v.timestamp_floor)
        h.parameters[suites.P_ITEM_IDS] = item_reference(
            settings, current_item_ids(lake, batch_items))
    if table == schema.INTERACTIONS:
        if rows >= DRIFT_MIN_ROWS:
            h.references = references(settings, lake)
        else:
            h.notes.append(f"{table}: {rows} rows are too few to measure drift "
                           f"(needs {DRIFT_MIN_ROWS})")
    return h
