"""Read a submitted CSV or Parquet file, changing no value; unreadable input is a DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recops import schema
from recops.errors import DataError
from validation.names import FEEDBACK, SUITE_TABLES

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".tsv", ".txt")
_OTHER_DELIMITERS = (";", "\t", "|")


def read_file(path: Path, table: str | None = None) -> tuple[pd.DataFrame, str]:
    """The file's rows as they are, and the table they are for (given, or told from the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        df = read_parquet(path)
    elif suffix in CSV:
        df = _read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; give a .csv or .parquet file")
    if len(df) == 0:
        raise DataError(f"{path}: the file has a header ({len(df.columns)} column(s)) but no rows")
    return df, table or infer_table(path, list(df.columns))


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file (truncated or not Parquet): "
                        f"{exc}") from exc


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        # Strict UTF-8 so mis-encoded text is refused, not silently turned into other characters.
        df = pd.read_csv(path, sep=sep, encoding="utf-8", encoding_errors="strict",
                         low_memory=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                        f"at offset {exc.start}); re-save the file as UTF-8") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file holds no header and no rows") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from exc
    if len(df.columns) == 1:
        header = str(df.columns[0])
        for d in _OTHER_DELIMITERS:
            if d in header and d != sep:
                raise DataError(f"{path}: the header '{header[:80]}' is one column: the file "
                                f"seems to be separated by {d!r}; recops reads "
                                f"{'tab' if sep == chr(9) else 'comma'}-separated files")
    return df


def infer_table(path: Path, columns: list[str]) -> str:
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
