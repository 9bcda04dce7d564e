"""One entry point for data: the configured dataset, or an incremental file of interactions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recops import schema
from recops.data import movielens, movielens_fetch
from recops.data.tables import Tables
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings
    from recops.core.lake import Lake

SYNTHETIC = "synthetic"
SUPPORTED = (*movielens_fetch.FORMATS, SYNTHETIC)


def load_dataset(settings: Settings, *, base_url: str = movielens_fetch.BASE_URL,
                 progress: movielens_fetch.ProgressFn | None = None) -> Tables:
    """The dataset named by ``settings.data.dataset`` as canonical tables."""
    name = settings.data.dataset
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

REQUIRED_FILE_COLUMNS = (schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIMESTAMP)


def read_interactions_file(path: Path) -> pd.DataFrame:
    """A batch of interactions from CSV or Parquet with the canonical column names.

    ``rating`` may be absent (implicit events), ``event_type`` defaults to "rating" when a
    rating is given and "view" otherwise; ``event_timestamp`` is ISO-8601 (naive means UTC) or
    epoch seconds.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            df = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}): truncated or "
                            "corrupt?") from None
    elif suffix == ".csv":
        try:
            df = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[""])
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start}): "
                            "bad encoding?") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: file is empty") from None
        except pd.errors.ParserError as exc:
            raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv or .parquet")
    missing = [c for c in REQUIRED_FILE_COLUMNS if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(s in str(df.columns[0]) for s in ";\t|"):
            hint = " (wrong delimiter? expected ',')"
        raise DataError(f"{path}: missing column(s) {missing}; have {list(df.columns)}{hint}")
    if df.empty:
        raise DataError(f"{path}: holds no rows")
    return _conform_batch(df, path)


def _first_bad(mask: pd.Series) -> int:
    return int(np.argmax(mask.to_numpy()))


def _conform_batch(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for col in (schema.USER_ID, schema.ITEM_ID):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v != v.round())
        if bad.any():
            i = _first_bad(bad)
            raise DataError(f"{path}: row {i + 1}: '{col}' is {df[col].iloc[i]!r}, expected an "
                            "integer id")
        out[col] = v.astype("int64")
    if schema.RATING in df.columns:
        raw = df[schema.RATING]
        v = pd.to_numeric(raw, errors="coerce")
        bad = v.isna() & raw.notna()
        if bad.any():
            i = _first_bad(bad)
            raise DataError(f"{path}: row {i + 1}: 'rating' is {raw.iloc[i]!r}, expected a number")
        out[schema.RATING] = v.astype("float32")
    else:
        out[schema.RATING] = np.float32("nan")
    if schema.EVENT_TYPE in df.columns:
        et = df[schema.EVENT_TYPE]
        if et.isna().any():
            raise DataError(f"{path}: row {_first_bad(et.isna()) + 1}: 'event_type' is empty")
        out[schema.EVENT_TYPE] = et.astype(str)
    else:
        out[schema.EVENT_TYPE] = np.where(out[schema.RATING].notna(), "rating", "view")
    out[schema.EVENT_TIMESTAMP] = _timestamps(df[schema.EVENT_TIMESTAMP], path)
    return out.reset_index(drop=True)


def _timestamps(raw: pd.Series, path: Path) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw):
        ts = pd.to_datetime(raw, utc=True)
    else:
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().all():
            ts = pd.to_datetime(numeric.astype("int64"), unit="s", utc=True)
        else:
            ts = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    if ts.isna().any():
        i = _first_bad(ts.isna())
        raise DataError(f"{path}: row {i + 1}: 'event_timestamp' is {raw.iloc[i]!r}, expected "
                        "ISO-8601 or epoch seconds")
    return ts.astype("datetime64[us, UTC]")


def incremental_tables(path: Path, lake: Lake) -> Tables:
    """A file of new interactions plus the lake's latest items and users (new user ids added).

    Items are not invented: interactions with unknown items are left for validation to flag.
    """
    interactions = read_interactions_file(path)
    items = lake.read_latest(schema.ITEMS)
    users = lake.read_latest(schema.USERS)
    if items.empty:
        raise DataError(f"the lake at {lake.root} holds no items yet: ingest a dataset first "
                        "(`recops ingest`, then `recops validate`) before adding a file of events")
    new = np.setdiff1d(interactions[schema.USER_ID].unique(), users[schema.USER_ID].to_numpy())
    if len(new):
        users = pd.concat([users, pd.DataFrame({schema.USER_ID: new})], ignore_index=True)
    return Tables(interactions, items, users, source=f"file:{Path(path).resolve()}")
