"""Feast's online store: users' and items' current features, and pushing one event into them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from recops import schema
from recops.errors import FeatureError
from recops.features import featurize as f
from recops.features.feast_store import ONE_US, USER_FEATURES, as_int_list, get_store

if TYPE_CHECKING:
    from feast import FeatureStore

    from recops.config import Settings

_VIEW_OF = {**{c: f.USER_RECENT_VIEW for c in f.USER_SEQUENCE_FEATURES},
            **{c: f.USER_STATS_VIEW for c in f.USER_STAT_FEATURES}}
USER_FEATURE_REFS = [f"{_VIEW_OF[c]}:{c}" for c in USER_FEATURES]


def _resolve(target: Settings | FeatureStore) -> tuple[FeatureStore, int]:
    """(store, max_len) from settings or an already open store (max_len from the view's tags)."""
    from feast import FeatureStore

    if isinstance(target, FeatureStore):
        try:
            view = target.get_feature_view(f.USER_RECENT_VIEW)
        except Exception as exc:
            raise FeatureError(f"feature view '{f.USER_RECENT_VIEW}' is not in project "
                               f"'{target.project}': run `recops features apply`") from exc
        return target, int(view.tags.get("max_len", 50))
    return get_store(target), target.model.max_len


def _user_ids(user_ids: Iterable[Any]) -> list[int]:
    ids = list(user_ids)
    bad = [u for u in ids if isinstance(u, bool) or not isinstance(u, (int, np.integer))]
    if bad:
        raise FeatureError(f"user ids must be integers; got {bad[:5]!r}")
    return [int(u) for u in ids]


def online_features(target: Settings | FeatureStore, user_ids: Iterable[int]) -> pd.DataFrame:
    """The users' current features from the online store, one row per id, in order.

    An unknown user gets ``found=False``, an empty sequence and null statistics.
    """
    store, _ = _resolve(target)
    ids = _user_ids(user_ids)
    cols = [schema.USER_ID, *USER_FEATURES, "found"]
    if not ids:
        return pd.DataFrame({c: [] for c in cols})
    try:
        d = store.get_online_features(features=USER_FEATURE_REFS,
                                      entity_rows=[{schema.USER_ID: u} for u in ids]).to_dict()
    except Exception as exc:
        raise FeatureError(f"online read from project '{store.project}' failed: {exc}") from exc
    found = [any(d[c][i] is not None for c in USER_FEATURES) for i in range(len(ids))]
    out = pd.DataFrame({schema.USER_ID: ids})
    for c in f.USER_SEQUENCE_FEATURES:
        out[c] = [as_int_list(v) for v in d[c]]
    for c in f.USER_STAT_FEATURES:
        dtype = "Float32" if c == f.MEAN_RATING else "Int64"
        out[c] = pd.array([np.nan if v is None else v for v in d[c]], dtype=dtype)
    out["found"] = found
    return out


def online_sequences(target: Settings | FeatureStore, user_ids: Iterable[int]) -> list[list[int]]:
    """Each user's recent item ids (most recent last; empty for an unknown user), in order."""
    seqs: list[list[int]] = online_features(target, user_ids)[f.RECENT_ITEMS].tolist()
    return seqs


def _parse_event(event: Mapping[str, Any]) -> tuple[int, int, pd.Timestamp, float | None]:
    if not isinstance(event, Mapping):
        raise FeatureError(f"an event must be a mapping, not {type(event).__name__}")
    missing = [c for c in (schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIMESTAMP)
               if event.get(c) is None]
    if missing:
        raise FeatureError(f"event lacks {missing}; got keys {sorted(event)}")
    try:
        uid, iid = _user_ids([event[schema.USER_ID], event[schema.ITEM_ID]])
    except FeatureError as exc:
        raise FeatureError(f"event user_id/item_id must be integers: got "
                           f"{event[schema.USER_ID]!r}, {event[schema.ITEM_ID]!r}") from exc
    raw_ts = event[schema.EVENT_TIMESTAMP]
    try:
        ts = (pd.Timestamp(raw_ts, unit="s", tz=UTC) if isinstance(raw_ts, (int, float))
              else pd.Timestamp(raw_ts))
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"event_timestamp {raw_ts!r} is not a timestamp: {exc}") from exc
    if pd.isna(ts):
        raise FeatureError(f"event_timestamp {raw_ts!r} is not a timestamp")
    ts = (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).floor("us")
    rating = event.get(schema.RATING)
    if rating is not None:
        try:
            rating = float(rating)
        except (TypeError, ValueError) as exc:
            raise FeatureError(f"event rating {rating!r} is not a number") from exc
        if np.isnan(rating):
            rating = None
    return uid, iid, ts, rating


def _row_timestamps(resp: Any, n: int) -> list[pd.Timestamp | None]:
    """Per entity row, the newest event time (to the nanosecond) Feast holds, or None."""
    newest: list[pd.Timestamp | None] = [None] * n
    for res in resp.proto.results:
        for i, ts in enumerate(res.event_timestamps):
            if ts.seconds or ts.nanos:
                t = pd.Timestamp(ts.seconds * 1_000_000_000 + ts.nanos, unit="ns", tz=UTC)
                held = newest[i]
                newest[i] = t if held is None or t > held else held
    return newest


def updated_user_row(current: Mapping[str, Any], item_id: int, ts: pd.Timestamp,
                     rating: float | None, max_len: int) -> dict[str, Any]:
    """The user's features after one more event: the batch definition applied to one event.

    Exact for events that arrive in time order; an event older than the user's latest one is
    inserted by (second, item id), and counts a new active day unless its day is in the window.
    """
    items = as_int_list(current.get(f.RECENT_ITEMS))
    times = as_int_list(current.get(f.RECENT_TIMESTAMPS))
    sec = int(ts.value // 1_000_000_000)
    pos = len(items)
    while pos > 0 and (times[pos - 1], items[pos - 1]) > (sec, item_id):
        pos -= 1
    items.insert(pos, item_id)
    times.insert(pos, sec)
    count = int(current.get(f.INTERACTION_COUNT) or 0)
    r_count = int(current.get(f.RATING_COUNT) or 0)
    mean = current.get(f.MEAN_RATING)
    if rating is not None:
        # A user with rated events has a mean (MEAN_RATING is None only while r_count is 0).
        mean = ((float(cast(float, mean)) * r_count if r_count else 0.0) + rating) / (r_count + 1)
        r_count += 1
    last = current.get(f.LAST_EVENT_TS)
    days = int(current.get(f.DAYS_ACTIVE) or 0)
    day = sec // 86_400
    # A new day unless another event in the window fell on it (exact for in-order events).
    other_days = {t // 86_400 for t in times[:pos] + times[pos + 1:]}
    if last is None or day > int(last) // 86_400 or day not in other_days:
        days += 1
    return {
        f.RECENT_ITEMS: items[-max_len:], f.RECENT_TIMESTAMPS: times[-max_len:],
        f.INTERACTION_COUNT: count + 1, f.RATING_COUNT: r_count,
        f.MEAN_RATING: None if mean is None else float(np.float32(mean)),
        f.DAYS_ACTIVE: days, f.LAST_EVENT_TS: max(sec, int(last)) if last is not None else sec,
    }


def push_event(target: Settings | FeatureStore, event: Mapping[str, Any]) -> dict[str, Any]:
    """Fold one feedback event into the user's online features (:func:`push_events` of one)."""
    return push_events(target, [event])[0]


def push_events(target: Settings | FeatureStore, events: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
    """Fold a batch of feedback events into their users' online features: one read, one push.

    Reads the current rows of the batch's users in one online read, applies each user's events
    in order (:func:`updated_user_row`) and pushes one new row per user, so the next online read
    reflects them all. Returns the rows pushed, one per user in first-seen order.

    Writers in different processes that fold events of the same user at the same moment can
    lose one of the two updates in the online store (the feedback log keeps both; the next
    materialisation restores them): a process serialises its own batches.
    """
    store, max_len = _resolve(target)
    parsed = [_parse_event(e) for e in events]
    if not parsed:
        return []
    uids = list(dict.fromkeys(p[0] for p in parsed))
    try:
        resp = store.get_online_features(features=USER_FEATURE_REFS,
                                         entity_rows=[{schema.USER_ID: u} for u in uids])
    except Exception as exc:
        raise FeatureError(f"online read before push failed for {len(uids)} user(s) "
                           f"({uids[:5]}...): {exc}") from exc
    got = resp.to_dict()
    held = _row_timestamps(resp, len(uids))
    rows = []
    for i, uid in enumerate(uids):
        current: dict[str, Any] = {k: v[i] for k, v in got.items()}
        newest = None
        for u, iid, ts, rating in parsed:
            if u == uid:
                current = {**current, **updated_user_row(current, iid, ts, rating, max_len)}
                newest = ts if newest is None or ts > newest else newest
        assert newest is not None  # every user in uids has an event
        # Redis keeps a value only if its time is newer than the stored one: stamp the row
        # after whatever the store holds, or a late (out-of-order) event would be dropped.
        h = held[i]
        stamp = newest if h is None or newest > h else (h + ONE_US).floor("us")
        row = {c: current[c] for c in USER_FEATURES}
        rows.append({schema.USER_ID: uid, schema.EVENT_TIMESTAMP: stamp, **row})
    df = pd.DataFrame(rows)
    for c in (f.INTERACTION_COUNT, f.RATING_COUNT, f.DAYS_ACTIVE, f.LAST_EVENT_TS):
        df[c] = df[c].astype("int64")
    df[f.MEAN_RATING] = df[f.MEAN_RATING].astype("float32")
    from feast.data_source import PushMode

    try:
        store.push(f.USER_PUSH_SOURCE, df, to=PushMode.ONLINE)
    except Exception as exc:
        raise FeatureError(f"push of {len(rows)} user row(s) to '{f.USER_PUSH_SOURCE}' failed: "
                           f"{exc}") from exc
    return rows


def online_item_features(target: Settings | FeatureStore, item_ids: Sequence[int]) -> pd.DataFrame:
    """Item statistics and content (items_v1) from the online store, one row per id, in order."""
    store, _ = _resolve(target)
    ids = _user_ids(item_ids)
    service = store.get_feature_service(f.ITEMS_SERVICE)
    d = store.get_online_features(features=service,
                                  entity_rows=[{schema.ITEM_ID: i} for i in ids]).to_dict()
    return pd.DataFrame(d)
