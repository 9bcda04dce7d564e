"""A team's files staged for validation in bounded memory: the events file one chunk at a time
(docs/data.md, "Bounded memory")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recops import schema
from recops.data.tables import Tables
from recops.data.team import (
    EVENTS,
    EventsReader,
    Sources,
    add_ids,
    catalogue,
    check_mapping,
    load_files,
    set_aside_reasons,
    source_of,
    users_of,
)
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake


@dataclass(frozen=True)
class Staged:
    """A team's files staged for validation (:func:`stage_files`)."""

    staged_id: str
    rows: dict[str, int]
    source: str
    set_aside: int


def stage_files(settings: Settings, lake: Lake | None = None,
                sources: Sources | None = None, *, chunk_bytes: int | None = None) -> Staged:
    """:func:`load_files` staged in bounded memory: the events file is read, checked, mapped
    and written one chunk at a time (the catalogue and the users file are read whole: they
    are small beside the events). The staged batch is the one ``stage(load_files(...))`` writes,
    same id; a problem anywhere in the file stages nothing and adds no id to the map."""
    from recops.data.files import CHUNK_BYTES, iter_chunks
    from recops.data.tables import stage_chunks

    src = sources or Sources.of(settings)
    if src.events is None:  # a catalogue or users batch: small, read whole
        tables = load_files(settings, lake, src)
        return _staged(settings, tables)
    check_mapping(src.columns)
    pairs: list[pd.DataFrame] = []
    items = catalogue(src, lake, pairs)
    base_users = lake.read_latest(schema.USERS) if lake is not None else None
    events = EventsReader(src.events, src)
    known_items = items[schema.ITEM_ID].to_numpy()
    seen_users = [np.empty(0, dtype="int64")]
    set_aside: list[pd.DataFrame] = []
    kept = [0]

    def interactions() -> Iterator[pd.DataFrame]:
        for chunk in iter_chunks(src.events, EVENTS, rename=events.rename,
                                 chunk_bytes=chunk_bytes or CHUNK_BYTES):
            out = events.canonical(chunk.to_pandas())
            external = out.pop("_item_external")
            known = np.isin(out[schema.ITEM_ID].to_numpy(), known_items)
            if not known.all():
                set_aside.append(set_aside_reasons(out[~known], external[~known]))
            out = out[known].reset_index(drop=True)
            kept[0] += len(out)
            seen_users[0] = np.union1d(seen_users[0], out[schema.USER_ID].to_numpy())
            yield out
        events.raise_unknown_types()  # before the batch is whole: nothing is staged
        if not kept[0]:
            raise DataError(f"{src.events}: column 'item_id': none of the {events.rows} row(s) "
                            "names an item of the catalogue: is the items file the right one?")

    def users() -> Iterator[pd.DataFrame]:  # staged after the events: every user seen
        yield users_of(src, pd.DataFrame({schema.USER_ID: seen_users[0]}), base_users, pairs)

    def quarantined() -> pd.DataFrame | None:  # known once every chunk is read
        return pd.concat(set_aside, ignore_index=True) if set_aside else None

    source = source_of(src)
    staged_id, rows = stage_chunks(settings.paths.staging, source, {
        schema.INTERACTIONS: interactions(), schema.ITEMS: [items], schema.USERS: users()},
        quarantined=quarantined)
    add_ids(settings, [*pairs, events.pairs()])
    n_aside = sum(len(q) for q in set_aside)
    return Staged(staged_id, rows, source, n_aside)


def _staged(settings: Settings, tables: Tables) -> Staged:
    from recops.data.tables import stage

    staged_id = stage(settings.paths.staging, tables)
    rows = {name: len(df) for name, df in tables.as_dict().items()}
    n = 0 if tables.quarantined is None else len(tables.quarantined)
    return Staged(staged_id, rows, tables.source, n)
