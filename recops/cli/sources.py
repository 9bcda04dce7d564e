"""The flags that name a team's own files (`recops run`, `recops pipeline`, `recops ingest`):
each a ``data.*`` setting, its help the setting's description."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from recops.config import DataSettings
from recops.errors import ConfigError


def _help(name: str, extra: str = "") -> str:
    field = DataSettings.model_fields[name]
    return f"{field.description}{extra} (data.{name})"


Events = Annotated[str | None, typer.Option("--events", help=_help("events"))]
Items = Annotated[str | None, typer.Option("--items", help=_help("items"))]
Users = Annotated[str | None, typer.Option("--users", help=_help("users"))]
Columns = Annotated[list[str] | None, typer.Option(
    "--columns", "--map", help=_help("columns", ": YOURS=CANONICAL pairs, comma-separated or "
                                     "repeated, e.g. --columns customer=user_id,sku=item_id"))]
ItemAttributes = Annotated[str | None, typer.Option(
    "--item-attributes", help=_help("item_attributes", ", comma-separated"))]
TimestampUnit = Annotated[str | None, typer.Option(
    "--timestamp-unit", metavar="[auto|s|ms|iso]", help=_help("timestamp_unit"))]


def parse_column_map(pairs: list[str], flag: str = "--columns") -> dict[str, str]:
    """``["customer=user_id,sku=item_id", ...]`` as ``{"customer": "user_id", ...}``."""
    out: dict[str, str] = {}
    for group in pairs:
        for pair in group.split(","):
            yours, sep, canonical = pair.partition("=")
            if not sep or not yours.strip() or not canonical.strip():
                raise ConfigError(f"{flag} {pair!r}: expected YOURS=CANONICAL, e.g. "
                                  "customer=user_id")
            if yours.strip() in out and out[yours.strip()] != canonical.strip():
                raise ConfigError(f"{flag}: column {yours.strip()!r} is mapped twice")
            out[yours.strip()] = canonical.strip()
    return out


def source_overrides(events: str | None, items: str | None, users: str | None,
                     columns: list[str] | None, item_attributes: str | None,
                     timestamp_unit: str | None) -> dict[str, Any]:
    """The ``data.*`` settings these flags set (None: not given, as configured)."""
    attrs = None if item_attributes is None else [
        a.strip() for a in item_attributes.split(",") if a.strip()]
    return {"data.events": events, "data.items": items, "data.users": users,
            "data.columns": parse_column_map(columns) if columns else None,
            "data.item_attributes": attrs, "data.timestamp_unit": timestamp_unit}


def source_conf(overrides: dict[str, Any]) -> dict[str, Any]:
    """The same as a recops_pipeline run's conf (its Params)."""
    return {k.removeprefix("data."): v for k, v in overrides.items() if v is not None}
