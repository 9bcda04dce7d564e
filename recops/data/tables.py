"""The canonical tables a data source yields, and the staging area where they await validation."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recops import schema
from recops.core.atomic import atomic_file, write_atomic
from recops.core.hashing import sha256_json
from recops.core.lake import conform, write_frames
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
    staged_id, _ = stage_chunks(staging_root, tables.source,
                                {name: [df] for name, df in tables.as_dict().items()},
                                quarantined=tables.quarantined)
    return staged_id


def stage_chunks(staging_root: Path, source: str, tables: Mapping[str, Iterable[pd.DataFrame]],
                 quarantined: pd.DataFrame | Callable[[], pd.DataFrame | None] | None = None,
                 ) -> tuple[str, dict[str, int]]:
    """:func:`stage` of tables given as row chunks, one chunk in memory at a time.

    Each table is conformed and written chunk by chunk; the id is the same as staging the
    whole frames. Nothing appears under ``staging_root`` unless every chunk was written (an
    error raised by a chunk iterator leaves no trace). ``quarantined``: event rows set aside
    with their reasons, kept beside the batch (``QUARANTINE_DIR``), or a function giving them
    once every chunk is read. Returns (id, rows per table).
    """
    root = Path(staging_root)
    tmp = root / f".incoming-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        hashes, rows = {}, {}
        for name in schema.TABLES:
            with atomic_file(tmp / f"{name}.parquet") as f:
                hashes[name], rows[name] = write_frames(
                    f, (conform(chunk, name) for chunk in tables[name]), what=name)
        staged_id = sha256_json(hashes)[:16]
        d = root / staged_id
        if callable(quarantined):
            quarantined = quarantined()
        if not (d / "manifest.json").exists():
            manifest: dict[str, object] = {
                "id": staged_id, "source": source, "created_at": datetime.now(UTC).isoformat(),
                "rows": rows, "hashes": hashes}
            if quarantined is not None and len(quarantined):
                (tmp / QUARANTINE_DIR).mkdir()
                with atomic_file(tmp / QUARANTINE_DIR / f"{schema.INTERACTIONS}.csv") as f:
                    quarantined.to_csv(f, index=False)
                manifest["quarantined_rows"] = {schema.INTERACTIONS: len(quarantined)}
            # Written last: the marker that the batch is whole.
            write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2))
            shutil.rmtree(d, ignore_errors=True)  # an earlier attempt cut off before its marker
            os.replace(tmp, d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return staged_id, rows


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
