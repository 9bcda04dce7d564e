"""One entry point for data: the configured dataset, or an incremental file of interactions."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recops import schema
from recops.data import files, movielens, movielens_fetch, postgres
from recops.data.files import read_frame
from recops.data.tables import Tables, stage_chunks
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake

SYNTHETIC = "synthetic"
FILES = "files"  # a team's own events, items and users (data.events, data.items, data.users)
SUPPORTED = (*movielens_fetch.FORMATS, SYNTHETIC, FILES)


def load_dataset(settings: Settings, *, base_url: str = movielens_fetch.BASE_URL,
                 progress: movielens_fetch.ProgressFn | None = None) -> Tables:
    """The dataset named by ``settings.data.dataset`` as canonical tables."""
    name = settings.data.dataset
    if name == FILES:
        from recops.data.team import load_files

        return load_files(settings)
    if name == SYNTHETIC:
        from recops.data.synthetic import generate_from_settings

        return generate_from_settings(settings)
    if name not in movielens_fetch.FORMATS:
        raise DataError(f"unknown dataset '{name}'; supported: {', '.join(SUPPORTED)}")
    return movielens.load_movielens(name, settings.data.root, settings.paths.datasets,
                                    download=settings.data.download, base_url=base_url,
                                    progress=progress)


@dataclass(frozen=True)
class DatasetStatus:
    name: str
    present: bool
    path: str  # where it is, or where a download would put it
    note: str


def dataset_status(settings: Settings) -> list[DatasetStatus]:
    """Each supported dataset and whether it is available without a download."""
    out = []
    for name, spec in movielens_fetch.FORMATS.items():
        try:
            found = movielens_fetch.find_local(name, settings.data.root, settings.paths.datasets)
        except DataError:
            found = None
        if found is not None:
            out.append(DatasetStatus(name, True, str(found), "local"))
        else:
            how = (f"downloads on first use (~{spec.approx_mb:g} MB)" if settings.data.download
                   else "absent; download is off")
            out.append(DatasetStatus(name, False, str(settings.paths.datasets / name), how))
    s = settings.data.synthetic
    out.append(DatasetStatus(SYNTHETIC, True, "(generated)",
                             f"{s.n_interactions:,} interactions, {s.n_users:,} users, "
                             f"{s.n_items:,} items, seed {settings.seed}"))
    return out


# ----------------------------------------------------------------------------- incremental files

def read_interactions_file(source: str | Path, rename: Mapping[str, str] | None = None,
                           ) -> pd.DataFrame:
    """A batch of interactions (CSV, Parquet, JSON lines or a PostgreSQL table/query), canonical.

    ``rename`` maps the file's column names to the canonical ones. ``rating`` may be absent
    (implicit events), ``event_type`` defaults to "rating" when a rating is given and "view"
    otherwise; ``event_timestamp`` is ISO-8601 (naive means UTC) or epoch seconds.
    """
    return _with_defaults(read_frame(source, files.INTERACTIONS, rename=rename, others=False))


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    if schema.RATING not in df.columns:
        df[schema.RATING] = np.float32("nan")
    if schema.EVENT_TYPE not in df.columns:
        df[schema.EVENT_TYPE] = np.where(df[schema.RATING].notna(), "rating", "view")
    return df[list(files.INTERACTIONS)]


def incremental_tables(path: str | Path, lake: Lake,
                       rename: Mapping[str, str] | None = None) -> Tables:
    """A file of new interactions plus the lake's latest items and users (new user ids added).

    Items are not invented: interactions with unknown items are left for validation to flag.
    """
    interactions = read_interactions_file(path, rename)
    items = lake.read_latest(schema.ITEMS)
    users = lake.read_latest(schema.USERS)
    if items.empty:
        raise DataError(f"the lake at {lake.root} holds no items yet: ingest a dataset first "
                        "(`recops ingest`, then `recops validate`) before adding a file of events")
    new = np.setdiff1d(interactions[schema.USER_ID].unique(), users[schema.USER_ID].to_numpy())
    if len(new):
        users = pd.concat([users, pd.DataFrame({schema.USER_ID: new})], ignore_index=True)
    return Tables(interactions, items, users, source=source_name(path))


def stage_incremental(source: str | Path, lake: Lake, staging_root: Path,
                      rename: Mapping[str, str] | None = None, *,
                      chunk_bytes: int = files.CHUNK_BYTES) -> tuple[str, dict[str, int]]:
    """:func:`incremental_tables` staged for validation in bounded memory: (id, rows per table).

    The interactions are read, checked and written one chunk at a time (see
    :func:`recops.data.files.iter_chunks`); only the set of user ids grows with the source.
    The staged batch is the one ``stage(incremental_tables(...))`` writes, same id.
    """
    chunks = files.iter_chunks(source, files.INTERACTIONS, rename=rename,
                               chunk_bytes=chunk_bytes)
    first = next(chunks, None)  # opens the source: a missing file or a bad URL is said first
    items = lake.read_latest(schema.ITEMS)
    users = lake.read_latest(schema.USERS)
    if items.empty:
        chunks.close()
        raise DataError(f"the lake at {lake.root} holds no items yet: ingest a dataset first "
                        "(`recops ingest`, then `recops validate`) before adding a file of events")
    seen: list[np.ndarray] = [np.empty(0, dtype="int64")]

    def interactions() -> Iterator[pd.DataFrame]:
        for chunk in itertools.chain([] if first is None else [first], chunks):
            df = _with_defaults(chunk.to_pandas())
            seen[0] = np.union1d(seen[0], df[schema.USER_ID].to_numpy())
            yield df

    def all_users() -> Iterator[pd.DataFrame]:  # staged after the interactions: all ids seen
        new = np.setdiff1d(seen[0], users[schema.USER_ID].to_numpy())
        yield (pd.concat([users, pd.DataFrame({schema.USER_ID: new})], ignore_index=True)
               if len(new) else users)

    return stage_chunks(staging_root, source_name(source), {
        schema.INTERACTIONS: interactions(), schema.ITEMS: [items], schema.USERS: all_users()})


def source_name(source: str | Path) -> str:
    """How a source is recorded (manifest, lake, audit): ``file:<absolute path or URL>``, or the
    PostgreSQL URL with its password masked."""
    if postgres.is_postgres(str(source)):
        return postgres.redact(str(source))
    where = str(source) if "://" in str(source) else Path(source).resolve()
    return f"file:{where}"
