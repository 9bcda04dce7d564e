"""Feast's online store: users' and items' current features, and pushing one event into them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from recops import schema
from recops.core.roles import IGNORED, NEGATIVE, POSITIVE, resolve_one
from recops.errors import DataError, FeatureError
from recops.features import featurize as f
from recops.features.feast_store import ONE_US, USER_FEATURES, as_int_list, get_store

if TYPE_CHECKING:
    from feast import FeatureStore

    from recops.config import Settings
    from recops.features.online_rows import UserRows

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
    if type(raw_ts) is datetime:  # what the service sends: already to the microsecond
        aware = raw_ts.astimezone(UTC) if raw_ts.tzinfo else raw_ts.replace(tzinfo=UTC)
        return uid, iid, pd.Timestamp(aware), _rating(event.get(schema.RATING))
    try:
        ts = (pd.Timestamp(raw_ts, unit="s", tz=UTC) if isinstance(raw_ts, (int, float))
              else pd.Timestamp(raw_ts))
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"event_timestamp {raw_ts!r} is not a timestamp: {exc}") from exc
    if pd.isna(ts):
        raise FeatureError(f"event_timestamp {raw_ts!r} is not a timestamp")
    ts = (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).floor("us")
    return uid, iid, ts, _rating(event.get(schema.RATING))


def _rating(rating: Any) -> float | None:
    if rating is None:
        return None
    try:
        value = float(rating)
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"event rating {rating!r} is not a number") from exc
    return None if math.isnan(value) else value


def updated_user_row(current: Mapping[str, Any], item_id: int, ts: pd.Timestamp,
                     rating: float | None, max_len: int, role: int = POSITIVE,
                     max_blocked: int = 200) -> dict[str, Any]:
    """The user's features after one more event: the batch definition applied to one event.

    ``role`` (:mod:`recops.core.roles`): a positive enters the recent items; a negative enters
    the blocked items (the last ``max_blocked``) and never the sequence; both count in the
    statistics; an ignored event changes nothing. Exact for events that arrive in time order;
    an event older than the user's latest one is inserted by (second, item id), and counts a
    new active day unless its day is in the window.
    """
    if role == IGNORED:
        return dict(current)
    items = as_int_list(current.get(f.RECENT_ITEMS))
    times = as_int_list(current.get(f.RECENT_TIMESTAMPS))
    blocked = as_int_list(current.get(f.BLOCKED_ITEMS))
    sec = int(ts.value // 1_000_000_000)
    if role == NEGATIVE:
        blocked.append(item_id)
        other_days = {t // 86_400 for t in times}
    else:
        pos = len(items)
        while pos > 0 and (times[pos - 1], items[pos - 1]) > (sec, item_id):
            pos -= 1
        items.insert(pos, item_id)
        times.insert(pos, sec)
        other_days = {t // 86_400 for t in times[:pos] + times[pos + 1:]}
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
    if last is None or day > int(last) // 86_400 or (
            day not in other_days and day != int(last) // 86_400):
        days += 1
    return {
        f.RECENT_ITEMS: items[-max_len:], f.RECENT_TIMESTAMPS: times[-max_len:],
        f.BLOCKED_ITEMS: blocked[-max_blocked:],
        f.INTERACTION_COUNT: count + 1, f.RATING_COUNT: r_count,
        f.MEAN_RATING: None if mean is None else float(np.float32(mean)),
        f.DAYS_ACTIVE: days, f.LAST_EVENT_TS: max(sec, int(last)) if last is not None else sec,
    }


def _role(event: Mapping[str, Any], rating: float | None, rows_io: UserRows) -> int:
    """The event's role by ``data.event_roles`` (an event without a type is a positive)."""
    kind = event.get(schema.EVENT_TYPE)
    if kind is None:
        return POSITIVE
    try:
        return resolve_one(str(kind), rating, rows_io.events)[0]
    except DataError as exc:
        raise FeatureError(str(exc)) from exc


def push_event(target: Settings | FeatureStore, event: Mapping[str, Any]) -> dict[str, Any] | None:
    """Fold one feedback event into the user's online features (:func:`push_events` of one);
    None when its role is ``ignored`` (nothing written)."""
    rows = push_events(target, [event])
    return rows[0] if rows else None


def push_events(target: Settings | FeatureStore | UserRows,
                events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold a batch of feedback events into their users' online features: one read, one write.

    Reads the current rows of the batch's users in one online read, applies each user's events
    in order by their roles (``data.event_roles``: ignored events are skipped, negatives go to the
    blocked items; :func:`updated_user_row`) and writes one new row per user to the views the user
    push source feeds, so the next online read reflects them all. Returns the rows written, one
    per user in first-seen order. A long-lived caller (the service) passes its
    :class:`~recops.features.online_rows.UserRows`, which has the views resolved already.

    Writers in different processes that fold events of the same user at the same moment can
    lose one of the two updates in the online store (the feedback log keeps both; the next
    materialisation restores them): a process serialises its own batches.
    """
    from recops.features.online_rows import UserRows

    if isinstance(target, UserRows):
        rows_io = target
    else:
        from recops.config import Settings

        rows_io = UserRows(_resolve(target)[0], target.data.event_roles
                           if isinstance(target, Settings) else None)
    parsed = []
    for e in events:
        uid, iid, ts, rating = _parse_event(e)
        role = _role(e, rating, rows_io)
        if role != IGNORED:
            parsed.append((uid, iid, ts, rating, role))
    if not parsed:
        return []
    uids = list(dict.fromkeys(p[0] for p in parsed))
    current_rows = rows_io.read(uids)
    rows = []
    for uid, (held_ts, held) in zip(uids, current_rows, strict=True):
        current: dict[str, Any] = dict(held or {})
        newest = None
        for u, iid, ts, rating, role in parsed:
            if u == uid:
                current = {**current, **updated_user_row(
                    current, iid, ts, rating, rows_io.max_len, role,
                    rows_io.events.max_blocked)}
                newest = ts if newest is None or ts > newest else newest
        assert newest is not None  # every user in uids has an event
        # Redis keeps a value only if its time is newer than the stored one: stamp the row
        # after whatever the store holds, or a late (out-of-order) event would be dropped.
        h = None if held_ts is None else pd.Timestamp(held_ts)
        stamp = newest if h is None or newest > h else (h + ONE_US).floor("us")
        row = {c: current.get(c) for c in USER_FEATURES}
        rows.append({schema.USER_ID: uid, schema.EVENT_TIMESTAMP: stamp, **row})
    rows_io.write(rows)
    return rows


def online_item_features(target: Settings | FeatureStore, item_ids: Sequence[int]) -> pd.DataFrame:
    """Item statistics and content (items_v1) from the online store, one row per id, in order."""
    store, _ = _resolve(target)
    ids = _user_ids(item_ids)
    service = store.get_feature_service(f.ITEMS_SERVICE)
    d = store.get_online_features(features=service,
                                  entity_rows=[{schema.ITEM_ID: i} for i in ids]).to_dict()
    return pd.DataFrame(d)
