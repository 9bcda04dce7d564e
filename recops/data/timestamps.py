"""A team's timestamps: seconds or milliseconds since 1970, or ISO-8601 text, to UTC, with the
unit checked (docs/data.md, "Timestamps")."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from recops.errors import DataError

_LATEST = datetime(2100, 1, 1, tzinfo=UTC)  # a time past this is a unit mistake


def parse_timestamps(raw: pd.Series, unit: str, where: str, floor: datetime) -> pd.Series:
    """Seconds or milliseconds since 1970 (numbers) or ISO-8601 text, to UTC; a unit that
    cannot be right (a year past 2100, or before ``floor``) is one line naming the fix."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    n = len(raw)
    num = pd.to_numeric(raw, errors="coerce")
    is_num = num.notna().to_numpy()
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if is_num.any():
        if unit == "iso":
            first = raw[is_num].iloc[0]
            raise DataError(f"{where}: {int(is_num.sum())} of {n} row(s) are numbers ({first!r} "
                            "first) but data.timestamp_unit is 'iso': set it to s, ms or auto")
        values = num[is_num].astype("float64")
        ms = unit == "ms" or (unit == "auto" and float(values.abs().median()) > 1e11)
        secs = values / 1000.0 if ms else values
        _check_unit(values, secs, ms, where, n, floor)
        out[is_num] = pd.to_datetime(values, unit="ms" if ms else "s", utc=True).astype(
            "datetime64[us, UTC]")
    text = ~is_num & raw.notna().to_numpy()
    if text.any():
        parsed = pd.to_datetime(raw[text], utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna().to_numpy()
        if bad.any():
            first = raw[text][bad].iloc[0]
            raise DataError(f"{where}: {int(bad.sum())} of {n} row(s) are not a time ({first!r} "
                            "first): expected ISO-8601 with a zone, or seconds or milliseconds "
                            "since 1970")
        out[text] = parsed.astype("datetime64[us, UTC]")
        late = (out[text] > _LATEST) | (out[text] < floor)
        if late.any():
            raise DataError(f"{where}: {int(late.sum())} of {n} row(s) are outside "
                            f"[{floor.date()}, {_LATEST.date()}] ({raw[text][late].iloc[0]!r} "
                            "first)")
    return out


def _check_unit(values: pd.Series, secs: pd.Series, ms: bool, where: str, n: int,
                floor: datetime) -> None:
    unit = "milliseconds" if ms else "seconds"
    high = (secs > _LATEST.timestamp()).to_numpy()
    low = (secs < floor.timestamp()).to_numpy()
    for bad, edge in ((high, "after 2100"), (low, f"before {floor.date()}")):
        if not bad.any():
            continue
        first = values[bad].iloc[0]
        year = 1970 + float(secs[bad].iloc[0]) / 31_557_600
        if not ms and bad is high and floor.timestamp() <= first / 1000 <= _LATEST.timestamp():
            hint = "they look like milliseconds: set data.timestamp_unit to ms (or auto)"
        elif ms and bad is low and floor.timestamp() <= first <= _LATEST.timestamp():
            hint = "they look like seconds: set data.timestamp_unit to s (or auto)"
        else:
            hint = "check the column and data.timestamp_unit"
        raise DataError(f"{where}: {int(bad.sum())} of {n} row(s) read as {unit} fall "
                        f"{edge} ({first:.0f} first, year {year:.0f}): {hint}")
