"""A file's data contract: each canonical column's type, and a tally of the rows breaking it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recops import schema
from recops.errors import DataError

Dtype = Literal["int64", "float32", "float64", "string", "timestamp"]
ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
    "string": pa.string(), "timestamp": schema.TIMESTAMP_TYPE,
}
EXPECTED = {"int64": "an integer", "float32": "a number", "float64": "a number",
            "string": "text", "timestamp": "an ISO-8601 time or epoch seconds"}
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass(frozen=True)
class Column:
    """One canonical column: its type, whether a file must have it, whether a value may be empty."""

    dtype: Dtype
    required: bool = True
    nullable: bool = False


Contract = Mapping[str, Column]


@dataclass
class Tally:
    """Rows that break the contract: per problem, its first place, its text and how many rows."""

    unit: str  # "line" for text, "row" for Parquet
    first: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    count: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: int = 0

    @property
    def problems(self) -> bool:
        return bool(self.first)

    def add(self, key: tuple[str, str], where: int, text: str, n: int = 1) -> None:
        if key not in self.first or where < self.first[key][0]:
            self.first[key] = (where, text)
        self.count[key] = self.count.get(key, 0) + n

    def bad_line(self, row: Any, names: list[str], sep: str) -> str:
        """pyarrow's handler of a line with the wrong number of fields: count it, skip it."""
        self.rows += 1
        if row.actual_columns < row.expected_columns:
            self.add(("fields", "short"), row.number, f"missing value for "
                     f"'{names[row.actual_columns]}' (the line has {row.actual_columns} of "
                     f"{row.expected_columns} fields: truncated file or short line?)")
        else:
            self.add(("fields", "long"), row.number, f"malformed line: {row.actual_columns} "
                     f"fields, expected {row.expected_columns} separated by {sep!r}")
        return "skip"

    def raise_any(self, name: str) -> None:
        """Raise the first problem (by place) as one line: file, place, column, rows."""
        if not self.first:
            return
        key = min(self.first, key=lambda k: self.first[k][0])
        where, text = self.first[key]
        more = len(self.first) - 1
        also = f"; {more} other problem(s) too" if more else ""
        raise DataError(f"{name}: {self.unit} {where}: {text} ({self.count[key]} of {self.rows} "
                        f"row(s){also})")


def conform_chunk(table: pa.Table, contract: Contract, lines: np.ndarray, tally: Tally,
                  rename: Mapping[str, str], *, fill_missing: bool = False) -> pa.Table:
    """``table`` with each contract column converted to its type; broken rows go to ``tally``.

    ``lines`` holds each row's line (or row) number. ``fill_missing``: a required column
    absent from this chunk (JSON lines leave keys out) is all missing values here.
    """
    tally.rows += table.num_rows
    back = {v: k for k, v in rename.items()}
    for name, spec in contract.items():
        label = f"'{back[name]}' (mapped to '{name}')" if name in back else f"'{name}'"
        if name not in table.column_names:
            if not (fill_missing and spec.required):
                continue
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
        i = table.column_names.index(name)
        raw = table.column(i)
        missing = raw.is_null().to_numpy()
        if missing.any() and not spec.nullable:
            tally.add((name, "missing"), int(lines[int(np.argmax(missing))]),
                      f"missing value for {label}", int(missing.sum()))
        converted, bad = _convert(raw, spec.dtype)
        if bad is not None and bad.any():
            j = int(np.argmax(bad))
            tally.add((name, "type"), int(lines[j]), f"column {label} has "
                      f"{raw[j].as_py()!r}, expected {EXPECTED[spec.dtype]}", int(bad.sum()))
        table = table.set_column(i, name, converted)
    return table


def _convert(arr: pa.ChunkedArray, dtype: str) -> tuple[pa.ChunkedArray | pa.Array,
                                                        np.ndarray | None]:
    """Cast ``arr`` to ``dtype``; where it will not cast, parse it and mark the bad values."""
    target = ARROW_TYPES[dtype]
    if dtype != "timestamp" or pa.types.is_timestamp(arr.type):
        try:
            return pc.cast(arr, target), None
        except _CAST_ERRORS:
            pass
    s = arr.to_pandas()
    if dtype == "timestamp":
        values, bad = _timestamps(s)
    elif dtype == "string":
        values = s.map(lambda v: v if v is None or isinstance(v, str) else str(v),
                       na_action="ignore")
        bad = np.zeros(len(s), dtype=bool)
    else:
        num = pd.to_numeric(s, errors="coerce")
        bad = (num.isna() & s.notna()).to_numpy()
        if dtype == "int64":
            bad |= (num.notna() & (num != num.round())).to_numpy()
        values = num.where(~bad)
    return pa.array(values, type=target, from_pandas=True), bad


def _timestamps(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Each value is epoch seconds (a number) or ISO-8601 text (naive means UTC)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = pd.to_datetime(s, utc=True)
    else:
        num = pd.to_numeric(s, errors="coerce")
        text = s.where(num.isna())
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        # Only the numbers: pandas' unit cast reads uninitialised slots behind NaNs.
        epoch = pd.to_datetime(num[num.notna()], unit="s", utc=True).reindex(s.index)
        ts = ts.where(num.isna(), epoch)
    bad = (ts.isna() & s.notna()).to_numpy()
    return ts.astype("datetime64[us, UTC]"), bad


def infer_text_columns(table: pa.Table, contract: Contract) -> pa.Table:
    """Columns outside the contract read from text: integers or numbers where all values are."""
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if name in contract or not pa.types.is_string(col.type):
            continue
        for target in (pa.int64(), pa.float64()):
            try:
                table = table.set_column(i, name, pc.cast(col, target))
                break
            except _CAST_ERRORS:
                continue
    return table
