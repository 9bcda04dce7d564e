"""A submitted file as it is (read by recops.data.files), the table it is for, its times parsed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recops import schema
from recops.data.files import read_frame
from recops.errors import DataError
from validation.names import FEEDBACK, SUITE_TABLES


def read_file(path: str | Path, table: str | None = None,
              rename: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """The file's rows as they are, and the table they are for (given, or told from the file)."""
    df = read_frame(path, rename=rename)
    return df, table or infer_table(path, list(df.columns))


def infer_table(path: str | Path, columns: list[str]) -> str:
    """The table a file is for: its name (interactions.csv, ...) or else its columns."""
    stem = Path(path).stem.lower()
    if stem in SUITE_TABLES:
        return stem
    cols = set(columns)
    if schema.TITLE in cols:
        return schema.ITEMS
    if cols & {schema.EVENT_TYPE, schema.RATING, schema.EVENT_TIMESTAMP}:
        return schema.INTERACTIONS
    if cols and cols <= {schema.USER_ID, *schema.USER_OPTIONAL_COLUMNS}:
        return schema.USERS
    raise DataError(f"{path}: cannot tell which table the columns {sorted(cols)} are for; "
                    f"pass --table (one of {', '.join(SUITE_TABLES)})")


def prepare(df: pd.DataFrame, table: str) -> tuple[pd.DataFrame, list[str]]:
    """Parse event timestamps (epoch seconds or ISO text) to UTC; every other value is untouched
    (categorical columns become the values they hold; narrow floats are widened, exactly).

    Returns the frame to validate (and to land, when it passes) and notes on what was parsed.
    Values that do not parse become missing, which the not-null check then reports.
    """
    notes: list[str] = []
    cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    # GX compares float64 columns vectorised but other floats one Python call per value
    # (10x slower); widening float32 is exact and landing casts back to the schema's float32.
    narrow = [c for c in df.columns if df[c].dtype in (np.float16, np.float32)]
    if cats or narrow:
        df = df.copy(deep=False)
        for c in cats:
            # GX's type check cannot name a categorical dtype: check the values it holds.
            kind = df[c].cat.categories.dtype
            df[c] = df[c].astype("string" if pd.api.types.is_object_dtype(kind) else kind)
        for c in narrow:
            df[c] = df[c].astype(np.float64)
    col = schema.EVENT_TIMESTAMP
    if table not in (schema.INTERACTIONS, FEEDBACK) or col not in df.columns:
        return df, notes
    raw = df[col]
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw):
        parsed = raw.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(raw):
        parsed = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = int((parsed.isna() & raw.notna()).sum())
    if bad:
        sample = raw[parsed.isna() & raw.notna()].head(3).tolist()
        notes.append(f"{table}.{col}: {bad} value(s) are not timestamps, e.g. {sample}")
    if parsed is raw:
        return df, notes
    out = df.copy(deep=False)  # shallow: only the timestamp column is replaced
    out[col] = parsed
    return out, notes
