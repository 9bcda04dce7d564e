"""The canonical tables a data source yields, and the staging area where they await validation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recops import schema
from recops.core.atomic import atomic_file, write_atomic
from recops.core.hashing import sha256_json
from recops.core.lake import conform
from recops.errors import DataError

QUARANTINE_DIR = "quarantine"  # in a staged batch: rows set aside with their reasons


@dataclass
class Tables:
    """interactions, items and users, conformed to :mod:`recops.schema`."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source: str
    # Event rows set aside by row, each with its ``quarantine_reason`` (events whose item is in
    # no catalogue): staged next to the batch, never landed.
    quarantined: pd.DataFrame | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        self.interactions = conform(self.interactions, schema.INTERACTIONS)
        self.items = conform(self.items, schema.ITEMS)
        self.users = conform(self.users, schema.USERS)

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {schema.INTERACTIONS: self.interactions, schema.ITEMS: self.items,
                schema.USERS: self.users}


def stage(staging_root: Path, tables: Tables) -> str:
    """Write tables to ``<staging>/<id>/`` (id = content hash) for validation; returns the id."""
    from recops.core.hashing import sha256_frame

    hashes = {name: sha256_frame(df) for name, df in tables.as_dict().items()}
    staged_id = sha256_json(hashes)[:16]
    d = Path(staging_root) / staged_id
    if (d / "manifest.json").exists():
        return staged_id
    d.mkdir(parents=True, exist_ok=True)
    for name, df in tables.as_dict().items():
        with atomic_file(d / f"{name}.parquet") as f:
            df.to_parquet(f, index=False)
    manifest = {
        "id": staged_id, "source": tables.source, "created_at": datetime.now(UTC).isoformat(),
        "rows": {n: len(df) for n, df in tables.as_dict().items()}, "hashes": hashes,
    }
    if tables.quarantined is not None and len(tables.quarantined):
        (d / QUARANTINE_DIR).mkdir(exist_ok=True)
        with atomic_file(d / QUARANTINE_DIR / f"{schema.INTERACTIONS}.csv") as f:
            tables.quarantined.to_csv(f, index=False)
        manifest["quarantined_rows"] = {schema.INTERACTIONS: len(tables.quarantined)}
    write_atomic(d / "manifest.json", json.dumps(manifest, indent=2))  # written last: the marker
    return staged_id


def read_staged(staging_root: Path, staged_id: str) -> Tables:
    d = Path(staging_root) / staged_id
    manifest = d / "manifest.json"
    if not manifest.exists():
        raise DataError(f"no staged batch '{staged_id}' under {staging_root}: "
                        "run `recops ingest` first")
    meta = json.loads(manifest.read_text())
    frames = {n: pd.read_parquet(d / f"{n}.parquet") for n in schema.TABLES}
    return Tables(frames[schema.INTERACTIONS], frames[schema.ITEMS], frames[schema.USERS],
                  source=meta["source"])
