"""MovieLens' delimited text tables read strictly: every defect is a DataError naming the line."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.errors import DataError


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty")


def _check_complete(path: Path) -> None:
    size = path.stat().st_size
    # Every GroupLens file ends with a newline: a last line without one was cut off.
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":
            raise DataError(f"{path}: the last line is incomplete (no final newline): "
                            "truncated download or copy? Fetch the file again")


def checked_first_line(path: Path, encoding: str) -> str:
    """Line 1 of ``path``, once the file is known to exist, be non-empty and end complete."""
    _check_file(path)
    line = _first_line(path, encoding)
    _check_complete(path)
    return line


def check_field_count(path: Path, line: str, sep: str, n_fields: int) -> None:
    """Raise a DataError when ``line`` (line 1 of ``path``) does not hold ``n_fields`` fields."""
    got = len(line.split(sep))
    if got != n_fields:
        raise DataError(f"{path}: line 1 has {got} field(s), expected {n_fields} separated by "
                        f"{sep!r}{_delimiter_hint(line, sep)}")


def _first_line(path: Path, encoding: str) -> str:
    with open(path, "rb") as f:
        raw = f.readline(1 << 16)
    try:
        return raw.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line 1 is not valid {encoding} text ({exc.reason} at byte "
                        f"{exc.start}): bad encoding?") from None


def _delimiter_hint(line: str, sep: str) -> str:
    for cand in ("::", "\t", "|", ",", ";"):
        if cand != sep and cand in line:
            return f" (it looks {cand!r}-separated; expected {sep!r})"
    return ""


def locate_bad_value(df: pd.DataFrame, path: Path, numeric: list[str], first_line_no: int) -> None:
    """Raise a DataError naming the first missing or non-numeric value of ``numeric`` columns."""
    for col in df.columns:
        miss = df[col].isna().to_numpy()
        if miss.any():
            i = int(np.argmax(miss))
            raise DataError(f"{path}: line {i + first_line_no}: missing value for '{col}' "
                            "(truncated file or short line?)")
    for col in numeric:
        bad = pd.to_numeric(df[col], errors="coerce").isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}: line {i + first_line_no}: column '{col}' has "
                            f"{df[col].iloc[i]!r}, expected a number")


def read_delimited(path: Path, *, sep: str, columns: dict[str, str], header: bool,
                   encoding: str = "utf-8", n_fields: int | None = None) -> pd.DataFrame:
    """Read one MovieLens text table; every defect becomes a DataError naming the file.

    ``columns`` maps the names to keep to their dtypes ("int64", "float32", "str"). With
    ``header`` the file's header must hold them; without, they are the first fields in order
    and the file has ``n_fields`` fields a line.
    """
    path = Path(path)
    line = checked_first_line(path, encoding)
    names = list(columns)
    if header:
        fields = [f.strip() for f in line.split(sep)]
        missing = [c for c in names if c not in fields]
        if missing:
            raise DataError(f"{path}: header {fields} lacks column(s) {missing}; expected "
                            f"{names}{_delimiter_hint(line, sep)}")
    else:
        n_fields = n_fields or len(names)
        check_field_count(path, line, sep, n_fields)
    # pandas' fast C parser takes one-character separators only: map '::' to a control char.
    src: Any = path
    c_sep = sep
    if len(sep) > 1:
        src = io.BytesIO(path.read_bytes().replace(sep.encode(), b"\x1f"))
        c_sep = "\x1f"
    # Every field is read (no usecols, index_col=False) so a line with extra fields is an error,
    # not silently dropped or shifted into an index.
    kwargs: dict[str, Any] = dict(sep=c_sep, encoding=encoding, engine="c", index_col=False,
                                  quoting=0 if header else 3, keep_default_na=False,
                                  na_values=[""])
    if not header:
        all_names = names + [f"_f{i}" for i in range(len(names), n_fields or len(names))]
        kwargs.update(header=None, names=all_names)
    numeric = [c for c, t in columns.items() if t != "str"]
    first_line_no = 2 if header else 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(src, dtype={c: (t if t != "str" else object)
                                         for c, t in columns.items()}, **kwargs)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: line {first_line_no} has more fields than the header "
                        f"(separator {sep!r})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} text ({exc.reason} at byte {exc.start}): "
                        "bad encoding?") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed ({str(exc).strip()})") from None
    except (ValueError, OverflowError):
        # A non-numeric or missing value in a numeric column: read as text to name the line.
        if isinstance(src, io.BytesIO):
            src.seek(0)
        raw = pd.read_csv(src, dtype=object, **kwargs)
        locate_bad_value(raw, path, numeric, first_line_no)
        raise DataError(f"{path}: values cannot be read as {columns}") from None
    if df.empty:
        raise DataError(f"{path}: holds a header but no rows")
    if df[names].isna().any().any():
        locate_bad_value(df[names], path, numeric, first_line_no)
    return df[names]
