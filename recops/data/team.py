"""A team's own data: events, a catalogue and users from their files, to the canonical tables.

The contract (docs/data.md, "Your own data"): canonical column names, each file's own names
mapped to them (``data.columns`` / ``--columns``), ids as text turned into internal integers by
the lake's id map (:mod:`recops.core.idmap`), timestamps in seconds, milliseconds or ISO-8601.
Every file goes through the one reader, :func:`recops.data.files.read_frame`. A problem is one
:class:`DataError` line naming the file, the column and how many rows; nothing is staged then.
Events whose item is in no catalogue are the exception: they are set aside by row, each with its
reason (``Tables.quarantined``), and the rest loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recops import schema
from recops.config_base import redact_url
from recops.core.idmap import IdMap, internal_ids
from recops.data.contract import Column, Contract
from recops.data.files import read_frame
from recops.data.tables import Tables
from recops.data.timestamps import parse_timestamps
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake

# Canonical names of a team's files (docs/data.md). ``timestamp`` lands as event_timestamp.
USER_ID, ITEM_ID, EVENT_TYPE = schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE
TIMESTAMP, VALUE, SESSION_ID = "timestamp", "value", "session_id"
AVAILABLE_FROM, AVAILABLE_UNTIL, AVAILABLE = "available_from", "available_until", "available"
AVAILABILITY = (AVAILABLE_FROM, AVAILABLE_UNTIL, AVAILABLE)
CANONICAL = (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP, VALUE, SESSION_ID, *AVAILABILITY)

EVENTS: Contract = {
    USER_ID: Column("string"), ITEM_ID: Column("string"), EVENT_TYPE: Column("string"),
    TIMESTAMP: Column("string"),  # parsed below, with its unit checked
    VALUE: Column("float64", required=False, nullable=True),
    SESSION_ID: Column("string", required=False, nullable=True),
}
ITEMS: Contract = {ITEM_ID: Column("string")}
USERS: Contract = {USER_ID: Column("string")}
_TITLE_NAMES = ("title", "name", "product_name")
QUARANTINE_REASON = "quarantine_reason"


@dataclass(frozen=True)
class Sources:
    """Where a team's data is and how to read it (``data.*`` settings, ``--events`` flags)."""

    events: str | None
    items: str | None = None
    users: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    item_attributes: tuple[str, ...] = ()
    timestamp_unit: str = "auto"
    floor: datetime = datetime(1995, 1, 1, tzinfo=UTC)
    # The types data.event_roles names (the source of truth), and those whose value is a rating.
    event_types: tuple[str, ...] = schema.EVENT_TYPES
    rated_types: tuple[str, ...] = ("rating",)

    @classmethod
    def of(cls, settings: Settings) -> Sources:
        d = settings.data
        floor = settings.validation.timestamp_floor
        return cls(d.events, d.items, d.users, dict(d.columns), tuple(d.item_attributes),
                   d.timestamp_unit, floor if floor.tzinfo else floor.replace(tzinfo=UTC),
                   tuple(d.event_roles.types()), tuple(d.event_roles.rated_types()))


def _label(name: str, rename: Mapping[str, str]) -> str:
    back = {v: k for k, v in rename.items()}
    return f"'{back[name]}' (mapped to '{name}')" if name in back else f"'{name}'"


def check_mapping(columns: Mapping[str, str]) -> None:
    bad = {k: v for k, v in columns.items() if v not in CANONICAL}
    if bad:
        raise DataError(f"column mapping {bad}: the canonical names are {list(CANONICAL)}, "
                        "plus any other column name of an items or users file")


# ----------------------------------------------------------------------------- files

def read_events(path: str, src: Sources) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A team's events as the canonical interactions (internal ids), and the user id pairs
    and item id pairs of their non-integer ids (for the id map). The whole file in memory:
    :func:`stage_files` streams it instead."""
    rename = dict(src.columns)
    df = read_frame(path, EVENTS, rename=rename, others=False)
    events = EventsReader(path, src)
    out = events.canonical(df)
    events.raise_unknown_types()
    return out, events.pairs()


class EventsReader:
    """A team's events file turned canonical one frame (or chunk) at a time: event types are
    tallied over every frame (one error for the whole file), ids collected for the id map."""

    def __init__(self, path: str, src: Sources) -> None:
        self.path, self.src, self.rename = path, src, dict(src.columns)
        self.rows = 0
        self.unknown: dict[str, int] = {}
        self._pairs = pd.DataFrame()  # distinct (kind, external, internal) seen so far

    def canonical(self, df: pd.DataFrame) -> pd.DataFrame:
        src, rename, start = self.src, self.rename, self.rows
        self.rows += len(df)
        unknown = ~df[EVENT_TYPE].isin(src.event_types)
        if unknown.any():
            for t, k in df.loc[unknown, EVENT_TYPE].value_counts(sort=False).items():
                self.unknown[str(t)] = self.unknown.get(str(t), 0) + int(k)
        where = f"{self.path}: column {_label(TIMESTAMP, rename)}"
        if start or len(df) < self.rows:  # a chunk of a streamed file: say which rows
            where += f" (rows {start + 1}-{self.rows})"
        ts = parse_timestamps(df[TIMESTAMP], src.timestamp_unit, where, src.floor)
        users, user_pairs = internal_ids(df[USER_ID])
        items, item_pairs = internal_ids(df[ITEM_ID])
        self._pairs = pd.concat([self._pairs, user_pairs.assign(kind="users"),
                                 item_pairs.assign(kind="items")],
                                ignore_index=True).drop_duplicates(ignore_index=True)
        value = df[VALUE].astype("float64") if VALUE in df else pd.Series(np.nan, index=df.index)
        rating = value.where(df[EVENT_TYPE].isin(src.rated_types)).astype("float32")
        # The lake's interactions hold the schema's columns only (its suite refuses others): a
        # rating event's value is its rating; other values and session ids are read and checked
        # here but not landed.
        out = pd.DataFrame({schema.USER_ID: users, schema.ITEM_ID: items, schema.RATING: rating,
                            schema.EVENT_TYPE: df[EVENT_TYPE].astype("string"),
                            schema.EVENT_TIMESTAMP: ts})
        out["_item_external"] = df[ITEM_ID].astype("string")
        return out

    def raise_unknown_types(self) -> None:
        if not self.unknown:
            return
        first = next(iter(self.unknown))
        raise DataError(f"{self.path}: column {_label(EVENT_TYPE, self.rename)}: "
                        f"{sum(self.unknown.values())} of {self.rows} row(s) have an unknown "
                        f"event type ({first!r} first); accepted: "
                        f"{', '.join(self.src.event_types)} (data.event_roles.roles)")

    def pairs(self) -> pd.DataFrame:
        return self._pairs


def read_items(path: str, src: Sources) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A team's catalogue as the canonical items table (title, genres, text from its text
    fields and attributes; availability as times), and its id pairs."""
    rename = dict(src.columns)
    df = read_frame(path, ITEMS, rename=rename)
    missing = [a for a in src.item_attributes if a not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} named in data.item_attributes; "
                        f"the file has {[c for c in df.columns]}")
    attrs = list(src.item_attributes)
    texts = [c for c in df.columns if c not in (ITEM_ID, *AVAILABILITY, *attrs)
             and (pd.api.types.is_string_dtype(df[c]) or pd.api.types.is_object_dtype(df[c]))]
    if not texts:
        raise DataError(f"{path}: no text column: a catalogue needs at least one text field "
                        f"(title, description, ...) besides {[ITEM_ID, *attrs]}")
    df = _dedupe_items(df, path, rename)
    for col in (*texts, *attrs):
        df[col] = df[col].astype("string")
    title_col = next((c for c in _TITLE_NAMES if c in texts), texts[0])
    title = df[title_col].fillna("")
    genres = df[attrs].apply(lambda r: schema.GENRE_SEPARATOR.join(
        str(v) for v in r if pd.notna(v) and str(v)), axis=1) if attrs else pd.Series(
        "", index=df.index)
    parts = [title] + [(c + ": " + df[c]).fillna("") for c in texts if c != title_col] + \
        [(c + ": " + df[c]).fillna("") for c in attrs]
    text = pd.Series([". ".join(p.rstrip(". ") for p in row if p)
                      for row in zip(*parts, strict=True)],
                     index=df.index, dtype="string")
    ids, pairs = internal_ids(df[ITEM_ID])
    out = pd.DataFrame({schema.ITEM_ID: ids, schema.TITLE: title.astype("string"),
                        schema.GENRES: genres.astype("string"), schema.TEXT: text})
    for col in attrs:
        out[col] = df[col]
    for col in df.columns:  # numbers (a price, a weight) come along as they are
        if col not in out and col not in AVAILABILITY and pd.api.types.is_numeric_dtype(df[col]):
            out[col] = df[col]
    for col in (AVAILABLE_FROM, AVAILABLE_UNTIL):
        if col in df:
            raw = df[col]
            stamps = parse_timestamps(raw[raw.notna()], src.timestamp_unit,
                                      f"{path}: column {_label(col, rename)}", src.floor)
            out[col] = stamps.reindex(df.index)
    if AVAILABLE in df:
        out[AVAILABLE] = _booleans(df[AVAILABLE], f"{path}: column {_label(AVAILABLE, rename)}")
    return out, pairs.assign(kind="items")


def _dedupe_items(df: pd.DataFrame, path: str, rename: Mapping[str, str]) -> pd.DataFrame:
    dup = df[ITEM_ID].duplicated(keep=False)
    if not dup.any():
        return df.reset_index(drop=True)
    rows = df[dup].astype("string").fillna("\x00")
    differing = rows.groupby(ITEM_ID).nunique().gt(1).any(axis=1)
    if differing.any():
        ids = list(differing[differing].index)
        n = int(df[ITEM_ID].isin(ids).sum())
        raise DataError(f"{path}: column {_label(ITEM_ID, rename)}: {len(ids)} item id(s) "
                        f"appear more than once with different text ({ids[0]!r} first; {n} "
                        "row(s)): keep one row per item")
    return df.drop_duplicates(ITEM_ID).reset_index(drop=True)


def _booleans(s: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    low = s.astype("string").str.strip().str.lower()
    bad = low.notna() & ~low.isin(list(words))
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} of {len(s)} row(s) are not true/false "
                        f"({s[bad].iloc[0]!r} first)")
    return low.map(words, na_action="ignore").astype("boolean")


def read_users(path: str, src: Sources) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A team's users (id and any attributes) with internal ids, and its id pairs."""
    df = read_frame(path, USERS, rename=dict(src.columns))
    dup = df[USER_ID].duplicated()
    if dup.any():
        raise DataError(f"{path}: column {_label(USER_ID, src.columns)}: {int(dup.sum())} "
                        f"row(s) repeat a user id ({df.loc[dup, USER_ID].iloc[0]!r} first)")
    ids, pairs = internal_ids(df[USER_ID])
    out = df.drop(columns=[USER_ID])
    out.insert(0, schema.USER_ID, ids)
    return out, pairs.assign(kind="users")


# ----------------------------------------------------------------------------- tables

def load_files(settings: Settings, lake: Lake | None = None,
               sources: Sources | None = None) -> Tables:
    """A team's files as canonical tables, their new ids added to the lake's id map.

    With ``lake`` (an incremental batch) the lake's latest catalogue and users are the base:
    the batch's items and users join them (a changed item replaces its row), and events may
    name any item of either. Events whose item is in neither are set aside by row.
    """
    src = sources or Sources.of(settings)
    check_mapping(src.columns)
    pairs: list[pd.DataFrame] = []
    base_users = lake.read_latest(schema.USERS) if lake is not None else None
    items = catalogue(src, lake, pairs)
    quarantined = None
    if src.events is not None:
        events, p = read_events(src.events, src)
        pairs.append(p)
        events, quarantined = _set_aside(events, items, src.events)
    else:
        events = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                               schema.PANDAS_DTYPES[schema.INTERACTIONS].items()})
    users = users_of(src, events, base_users, pairs)
    add_ids(settings, pairs)
    return Tables(events, items, users, source=source_of(src), quarantined=quarantined)


def catalogue(src: Sources, lake: Lake | None, pairs: list[pd.DataFrame]) -> pd.DataFrame:
    """The batch's catalogue: its items file over the lake's latest items (a changed item
    replaces its row), or the lake's items when the batch has none."""
    if src.events is None and src.items is None:
        raise DataError("no team files given: pass --events and/or --items "
                        "(or data.events / data.items)")
    base_items = lake.read_latest(schema.ITEMS) if lake is not None else None
    if src.items is not None:
        items, p = read_items(src.items, src)
        pairs.append(p)
        if base_items is not None and len(base_items):
            kept = base_items[~base_items[schema.ITEM_ID].isin(items[schema.ITEM_ID])]
            items = pd.concat([kept, items], ignore_index=True)
        return items
    if base_items is not None and len(base_items):
        return base_items
    raise DataError("no catalogue: give an items file (--items / data.items) for a first "
                    "batch; the lake holds no items yet")


def add_ids(settings: Settings, pairs: list[pd.DataFrame]) -> None:
    root = settings.paths.lake
    for kind in ("users", "items"):
        got = pd.concat([p[p["kind"] == kind] for p in pairs]) if pairs else pd.DataFrame()
        if len(got):
            IdMap(root, kind).add(got.drop(columns="kind"))


def source_of(src: Sources) -> str:
    names = [s for s in (src.events, src.items, src.users) if s]
    where = ", ".join(redact_url(s) if "://" in s else str(Path(s).resolve()) for s in names)
    return f"files:{where}"


def users_of(src: Sources, events: pd.DataFrame, base: pd.DataFrame | None,
           pairs: list[pd.DataFrame]) -> pd.DataFrame:
    if src.users is not None:
        users, p = read_users(src.users, src)
        pairs.append(p)
    else:
        users = pd.DataFrame({schema.USER_ID: pd.Series(dtype="int64")})
    if base is not None and len(base):
        users = pd.concat([base[~base[schema.USER_ID].isin(users[schema.USER_ID])], users],
                          ignore_index=True)
    new = np.setdiff1d(events[schema.USER_ID].unique(), users[schema.USER_ID].to_numpy())
    if len(new):
        users = pd.concat([users, pd.DataFrame({schema.USER_ID: new})], ignore_index=True)
    return users


def _set_aside(events: pd.DataFrame, items: pd.DataFrame, path: str
               ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Events whose item is in the catalogue, and the others with their reason."""
    external = events.pop("_item_external")
    known = events[schema.ITEM_ID].isin(items[schema.ITEM_ID]).to_numpy()
    if known.all():
        return events, None
    if not known.any():
        raise DataError(f"{path}: column 'item_id': none of the {len(events)} row(s) names an "
                        "item of the catalogue: is the items file the right one?")
    return (events[known].reset_index(drop=True),
            set_aside_reasons(events[~known], external[~known]))


def set_aside_reasons(bad: pd.DataFrame, external: pd.Series) -> pd.DataFrame:
    """Events set aside (their item is in no catalogue), each with its team item id and why."""
    bad = bad.copy()
    bad.insert(0, "external_item_id", external.to_numpy())
    bad[QUARANTINE_REASON] = "item_id " + bad["external_item_id"].astype(str) + \
        " is not in the catalogue"
    return bad.reset_index(drop=True)
