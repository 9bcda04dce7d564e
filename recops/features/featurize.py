"""Feature computation from the lake: the Parquet sources Feast reads, by our own batch code.

One definition of every feature lives here (vectorised numpy/pyarrow). Feast serves what these
files hold: historical retrieval for training, materialisation and pushes for serving.
:func:`history_asof` evaluates the sequence definition independently (a pandas as-of join) so
tests and benchmarks can hold Feast's answers against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recops import schema
from recops.core.atomic import atomic_file, write_atomic
from recops.core.roles import ensure_roles, with_roles
from recops.errors import FeatureError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake

# Names shared with feature_repo/ (views declare exactly these columns).
USER_EVENTS_FILE = "user_events.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
ITEM_CONTENT_FILE = "item_content.parquet"
MANIFEST_FILE = "manifest.json"
USER_PUSH_SOURCE = "user_events_push"
USER_RECENT_VIEW = "user_recent"
USER_STATS_VIEW = "user_stats"
ITEM_STATS_VIEW = "item_stats"
ITEM_CONTENT_VIEW = "item_content"
RECOMMENDER_SERVICE = schema.FEATURE_SERVICE  # "recommender_v1"
ITEMS_SERVICE = "items_v1"

RECENT_ITEMS = "recent_items"
RECENT_TIMESTAMPS = "recent_timestamps"
INTERACTION_COUNT = "interaction_count"
RATING_COUNT = "rating_count"
MEAN_RATING = "mean_rating"
DAYS_ACTIVE = "days_active"
LAST_EVENT_TS = "last_event_ts"  # epoch seconds of the user's latest event
# The items of the user's most recent negative events (data.event_roles): serving never lists them.
BLOCKED_ITEMS = "blocked_items"
USER_SEQUENCE_FEATURES = (RECENT_ITEMS, RECENT_TIMESTAMPS, BLOCKED_ITEMS)
USER_STAT_FEATURES = (INTERACTION_COUNT, RATING_COUNT, MEAN_RATING, DAYS_ACTIVE, LAST_EVENT_TS)

POPULARITY_WINDOWS_DAYS = {"pop_1d": 1, "pop_7d": 7, "pop_30d": 30}
POP_ALL = "pop_all"
POPULARITY_COLUMNS = (*POPULARITY_WINDOWS_DAYS, POP_ALL)
ITEM_RATING_COUNT = "item_rating_count"
ITEM_MEAN_RATING = "item_mean_rating"
TEXT_EMBEDDING = "text_embedding"

_US_PER_S = 1_000_000
_S_PER_DAY = 86_400
_CHUNK_ROWS = 250_000  # rows of the per-(user, time) table built at once: bounds peak memory

USER_EVENTS_SCHEMA = pa.schema([
    pa.field(schema.USER_ID, pa.int64(), nullable=False),
    pa.field(schema.EVENT_TIMESTAMP, schema.TIMESTAMP_TYPE, nullable=False),
    pa.field(RECENT_ITEMS, pa.list_(pa.int64())),
    pa.field(RECENT_TIMESTAMPS, pa.list_(pa.int64())),
    pa.field(BLOCKED_ITEMS, pa.list_(pa.int64())),
    pa.field(INTERACTION_COUNT, pa.int64()),
    pa.field(RATING_COUNT, pa.int64()),
    pa.field(MEAN_RATING, pa.float32()),
    pa.field(DAYS_ACTIVE, pa.int64()),
    pa.field(LAST_EVENT_TS, pa.int64()),
])


def sources_dir(settings: Settings) -> Path:
    return settings.paths.features / "sources"


def _sorted_events(interactions: pd.DataFrame, key: str) -> dict[str, np.ndarray]:
    """Columns as arrays, ordered by (key, event time, the other id): the tie rule of the spec."""
    other = schema.ITEM_ID if key == schema.USER_ID else schema.USER_ID
    ts_us = interactions[schema.EVENT_TIMESTAMP].to_numpy(dtype="datetime64[us]").astype(np.int64)
    k = interactions[key].to_numpy(np.int64)
    o = interactions[other].to_numpy(np.int64)
    rating = interactions[schema.RATING].to_numpy(np.float64, na_value=np.nan)
    role = (interactions[schema.EVENT_ROLE].to_numpy(np.int8)
            if schema.EVENT_ROLE in interactions.columns else np.ones(len(k), np.int8))
    order = np.lexsort((o, ts_us, k))
    return {"key": k[order], "other": o[order], "ts_us": ts_us[order], "rating": rating[order],
            "role": role[order]}


def _group_starts(key: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row of its key group (rows sorted by key)."""
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64)
    first = np.ones(n, bool)
    first[1:] = key[1:] != key[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(n), 0))


def _last_of_time(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Rows that are the last of their (key, event time) group."""
    last = np.ones(len(key), bool)
    last[:-1] = (key[:-1] != key[1:]) | (ts[:-1] != ts[1:])
    return last


def _cum_within(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarted at every group start."""
    c = np.cumsum(values)
    before = np.concatenate([[0], c])[starts]
    out: np.ndarray = c - before
    return out


def _windows(rows: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and flat indices of the last ``n`` rows up to each row in ``rows`` (same group)."""
    lengths = np.minimum(n, rows - starts[rows] + 1)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    first = np.repeat(rows - lengths + 1, lengths)
    flat = first + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths))
    return offsets, flat


def _windows_of(mask: np.ndarray, rows: np.ndarray, starts: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_windows` over the rows where ``mask`` holds: offsets, and indices (into all rows)
    of the last ``n`` masked rows of the group up to each row in ``rows``."""
    if mask.all():
        return _windows(rows, starts, n)
    cm = np.cumsum(mask)
    end = cm[rows]
    begin = cm[starts[rows]] - mask[starts[rows]]
    lengths = np.minimum(n, end - begin)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    first = np.repeat(end - lengths, lengths)
    flat = first + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths))
    return offsets, np.flatnonzero(mask)[flat]


def _list_column(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    offs = pa.array(offsets, pa.int32() if offsets[-1] < 2**31 else pa.int64())
    list_t = pa.ListArray if offs.type == pa.int32() else pa.LargeListArray
    return list_t.from_arrays(offs, pa.array(values, pa.int64())).cast(pa.list_(pa.int64()))


def _user_event_batches(interactions: pd.DataFrame, n: int,
                        max_blocked: int = 200) -> Iterator[pa.RecordBatch]:
    """The user_events table, one row per (user, distinct event time), in chunks.

    Roles by :func:`recops.core.roles.ensure_roles`: ``recent_items`` holds the positives
    only, ``blocked_items`` the last ``max_blocked`` negatives.
    """
    ev = _sorted_events(ensure_roles(interactions), schema.USER_ID)
    u, it, ts_us, rating = ev["key"], ev["other"], ev["ts_us"], ev["rating"]
    positive, negative = ev["role"] > 0, ev["role"] < 0
    starts = _group_starts(u)
    has_rating = ~np.isnan(rating)
    rating_count = _cum_within(has_rating.astype(np.int64), starts)
    rating_sum = _cum_within(np.where(has_rating, rating, 0.0), starts)
    day = ts_us // (_US_PER_S * _S_PER_DAY)
    new_day = np.ones(len(u), np.int64)
    new_day[1:] = (day[1:] != day[:-1]) | (u[1:] != u[:-1])
    days_active = _cum_within(new_day, starts)
    ts_s = ts_us // _US_PER_S
    selected = np.flatnonzero(_last_of_time(u, ts_us))
    for lo in range(0, len(selected), _CHUNK_ROWS):
        rows = selected[lo:lo + _CHUNK_ROWS]
        offsets, flat = _windows_of(positive, rows, starts, n)
        b_offsets, b_flat = _windows_of(negative, rows, starts, max_blocked)
        rc = rating_count[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (rating_sum[rows] / rc).astype(np.float32)
        yield pa.record_batch([
            pa.array(u[rows]),
            pa.array(ts_us[rows].astype("datetime64[us]"), schema.TIMESTAMP_TYPE),
            _list_column(offsets, it[flat]),
            _list_column(offsets, ts_s[flat]),
            _list_column(b_offsets, it[b_flat]),
            pa.array(rows - starts[rows] + 1),
            pa.array(rc),
            pa.array(mean, mask=rc == 0),
            pa.array(days_active[rows]),
            pa.array(ts_s[rows]),
        ], schema=USER_EVENTS_SCHEMA)


def user_events_table(interactions: pd.DataFrame, n: int, max_blocked: int = 200) -> pa.Table:
    """The user sequence and statistics as of each (user, distinct event time), in memory."""
    return pa.Table.from_batches(list(_user_event_batches(interactions, n, max_blocked)),
                                 USER_EVENTS_SCHEMA)



def item_stats_table(interactions: pd.DataFrame) -> pa.Table:
    """Item popularity over windows ending at each distinct event time of the item, mean rating."""
    ev = _sorted_events(interactions, schema.ITEM_ID)
    item, ts_us, rating = ev["key"], ev["ts_us"], ev["rating"]
    starts = _group_starts(item)
    rows = np.flatnonzero(_last_of_time(item, ts_us))
    cols: dict[str, Any] = {
        schema.ITEM_ID: item[rows],
        schema.EVENT_TIMESTAMP: pd.to_datetime(ts_us[rows], unit="us", utc=True),
    }
    if len(item):
        # Windows (t - w, t] by binary search on one sorted key: dense item code then seconds.
        code = np.cumsum(np.r_[0, item[1:] != item[:-1]]).astype(np.int64)
        ts_s = ts_us // _US_PER_S
        rel = ts_s - ts_s.min()
        span = int(rel.max()) + 1 + max(POPULARITY_WINDOWS_DAYS.values()) * _S_PER_DAY
        skey = code * span + rel
        for col, days in POPULARITY_WINDOWS_DAYS.items():
            bound = code[rows] * span + rel[rows] - days * _S_PER_DAY
            first = np.maximum(np.searchsorted(skey, bound, side="right"), starts[rows])
            cols[col] = rows - first + 1
    else:
        for col in POPULARITY_WINDOWS_DAYS:
            cols[col] = np.zeros(0, np.int64)
    cols[POP_ALL] = rows - starts[rows] + 1
    has_rating = ~np.isnan(rating)
    rc = _cum_within(has_rating.astype(np.int64), starts)[rows]
    rsum = _cum_within(np.where(has_rating, rating, 0.0), starts)[rows]
    cols[ITEM_RATING_COUNT] = rc
    mean = np.full(len(rows), np.nan, np.float32)
    mean[rc > 0] = rsum[rc > 0] / rc[rc > 0]
    cols[ITEM_MEAN_RATING] = pd.array(mean, dtype="Float32")  # NaN -> null: no rating yet
    return pa.Table.from_pandas(pd.DataFrame(cols), preserve_index=False)


def item_content_table(items: pd.DataFrame, interactions: pd.DataFrame,
                       vectors: np.ndarray | None, built_at: datetime) -> pa.Table:
    """Genres and text embedding per item, stamped at its first interaction (else build time)."""
    first_seen = interactions.groupby(schema.ITEM_ID)[schema.EVENT_TIMESTAMP].min()
    ts = items[schema.ITEM_ID].map(first_seen)
    ts = ts.fillna(pd.Timestamp(built_at)).astype("datetime64[us, UTC]")
    emb_type = pa.list_(pa.float32())
    if vectors is None:
        emb = pa.nulls(len(items), emb_type)
    else:
        if len(vectors) != len(items):
            raise FeatureError(f"text vectors have {len(vectors)} rows for {len(items)} items")
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
        offs = pa.array(np.arange(len(items) + 1, dtype=np.int32) * vectors.shape[1])
        emb = pa.ListArray.from_arrays(offs, flat)
    return pa.table({
        schema.ITEM_ID: pa.array(items[schema.ITEM_ID].to_numpy(np.int64)),
        schema.EVENT_TIMESTAMP: pa.array(ts, schema.TIMESTAMP_TYPE),
        schema.GENRES: pa.array(items[schema.GENRES].astype(str).tolist(), pa.string()),
        TEXT_EMBEDDING: emb,
    })


def _text_vectors(settings: Settings, items: pd.DataFrame) -> tuple[np.ndarray, str]:
    from recops.features.text_encoder import (
        item_text_vectors,  # loads the sentence encoder: keep lazy
    )

    return item_text_vectors(settings, items), "all-MiniLM-L6-v2"


def _replace_parquet(path: Path, batches: Iterator[pa.RecordBatch] | pa.Table,
                     table_schema: pa.Schema) -> int:
    """Write atomically so a concurrent Feast read never sees half a file."""
    rows = 0
    with atomic_file(path) as f, pq.ParquetWriter(f, table_schema) as w:
        if isinstance(batches, pa.Table):
            w.write_table(batches)
            rows = batches.num_rows
        else:
            for b in batches:
                w.write_batch(b)
                rows += b.num_rows
    return rows


def build_sources(settings: Settings, lake: Lake, *, text_vectors: bool = True) -> dict[str, Any]:
    """Compute every feature table from the lake and write the Parquet sources Feast reads.

    Returns the manifest (also written to ``<features>/sources/manifest.json``): paths, row
    counts, the event-time range and the lake's dataset version. ``text_vectors=False`` leaves
    the item text embedding null (it needs the sentence encoder).
    """
    interactions = lake.read(schema.INTERACTIONS)
    if interactions.empty:
        raise FeatureError(f"the lake at {lake.root} holds no interactions: run `recops ingest` "
                           "before `recops features build`")
    items = lake.read_latest(schema.ITEMS)
    out = sources_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    built_at = datetime.now(UTC)
    n = settings.model.max_len
    # Every event with its role (data.event_roles), ignored events dropped.
    events = with_roles(interactions, settings.data.event_roles, where="the lake's interactions",
                        drop_ignored=True)
    user_rows = _replace_parquet(out / USER_EVENTS_FILE, _user_event_batches(
        events, n, settings.data.event_roles.max_blocked), USER_EVENTS_SCHEMA)
    # Popularity counts what users wanted: the positives.
    stats = item_stats_table(events[events[schema.EVENT_ROLE].to_numpy() > 0])
    item_rows = _replace_parquet(out / ITEM_STATS_FILE, stats, stats.schema)
    vectors, emb_note = _text_vectors(settings, items) if text_vectors else (None, "disabled")
    content = item_content_table(items, interactions, vectors, built_at)
    content_rows = _replace_parquet(out / ITEM_CONTENT_FILE, content, content.schema)
    ts = interactions[schema.EVENT_TIMESTAMP]
    manifest = {
        "dataset_version": lake.dataset_version(),
        "built_at": built_at.isoformat(),
        "max_len": n,
        "events": settings.data.event_roles.model_dump(mode="json"),
        "interactions": len(interactions),
        "min_event_timestamp": ts.min().isoformat(),
        "max_event_timestamp": ts.max().isoformat(),
        "min_source_timestamp": min(ts.min(), content.column(schema.EVENT_TIMESTAMP)
                                    .to_pandas().min()).isoformat(),
        "text_embedding": emb_note,
        "sources": {
            USER_EVENTS_FILE: {"rows": user_rows, "path": str(out / USER_EVENTS_FILE)},
            ITEM_STATS_FILE: {"rows": item_rows, "path": str(out / ITEM_STATS_FILE)},
            ITEM_CONTENT_FILE: {"rows": content_rows, "path": str(out / ITEM_CONTENT_FILE)},
        },
    }
    write_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2))
    return manifest


def read_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest of the last build; FeatureError when the sources were never built."""
    path = sources_dir(settings) / MANIFEST_FILE
    if not path.exists():
        raise FeatureError(f"no feature sources under {path.parent}: run `recops features build`")
    manifest: dict[str, Any] = json.loads(path.read_text())
    missing = [name for name, s in manifest["sources"].items() if not Path(s["path"]).exists()]
    if missing:
        raise FeatureError(f"feature source file(s) {missing} missing under {path.parent}: "
                           "run `recops features build` again")
    return manifest


def history_asof(interactions: pd.DataFrame, labels: pd.DataFrame, n: int, *,
                 strict: bool = True) -> pd.DataFrame:
    """The recent-items definition by a pandas as-of join, for tests and benchmarks.

    For each label row (user_id, event_timestamp): the user's last ``n`` item ids (positives
    only when ``interactions`` carries resolved roles) with event
    time before the label (``strict``; at or before it when ``strict=False``), ordered by
    (time, item id), most recent last. Returns ``labels`` plus ``recent_items`` and
    ``recent_timestamps`` (lists, empty when there is no history), in the labels' order.
    """
    interactions = ensure_roles(interactions)  # the positives only
    if schema.EVENT_ROLE in interactions.columns:
        interactions = interactions[interactions[schema.EVENT_ROLE].to_numpy() > 0]
    ev = (interactions[[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIMESTAMP]]
          .sort_values([schema.USER_ID, schema.EVENT_TIMESTAMP, schema.ITEM_ID], kind="stable")
          .reset_index(drop=True))
    ev["_pos"] = np.arange(len(ev))
    ev[schema.EVENT_TIMESTAMP] = ev[schema.EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    first_pos = ev.groupby(schema.USER_ID)["_pos"].min()
    q = labels[[schema.USER_ID, schema.EVENT_TIMESTAMP]].copy()
    q[schema.EVENT_TIMESTAMP] = pd.to_datetime(q[schema.EVENT_TIMESTAMP], utc=True).astype(
        "datetime64[us, UTC]")
    q["_row"] = np.arange(len(q))
    joined = pd.merge_asof(
        q.sort_values(schema.EVENT_TIMESTAMP), ev.sort_values(schema.EVENT_TIMESTAMP)[
            [schema.USER_ID, schema.EVENT_TIMESTAMP, "_pos"]],
        on=schema.EVENT_TIMESTAMP, by=schema.USER_ID, allow_exact_matches=not strict,
        direction="backward",
    ).sort_values("_row")
    # merge_asof picks *a* row at the last time; take the last row of that time (ties by item).
    last_pos_at = ev.groupby([schema.USER_ID, schema.EVENT_TIMESTAMP])["_pos"].max()
    t_hit = ev[schema.EVENT_TIMESTAMP].to_numpy()[joined["_pos"].fillna(0).astype(int)]
    key = pd.MultiIndex.from_arrays([joined[schema.USER_ID].to_numpy(), t_hit])
    end = np.where(joined["_pos"].isna(), -1, last_pos_at.reindex(key).to_numpy())
    start = joined[schema.USER_ID].map(first_pos).to_numpy()
    items = ev[schema.ITEM_ID].to_numpy()
    secs = ev[schema.EVENT_TIMESTAMP].to_numpy(dtype="datetime64[us]").astype(np.int64) // _US_PER_S
    seqs: list[list[int]] = []
    times: list[list[int]] = []
    for s, e in zip(start, end, strict=True):
        if e < 0:
            seqs.append([])
            times.append([])
            continue
        lo = max(int(s), int(e) - n + 1)
        seqs.append(items[lo:int(e) + 1].tolist())
        times.append(secs[lo:int(e) + 1].tolist())
    out = labels.copy()
    out[RECENT_ITEMS] = seqs
    out[RECENT_TIMESTAMPS] = times
    return out
