"""Hashed tombstones of erased subjects: the lake refuses their rows from then on.

``<lake>/tombstones.json`` maps a subject hash (:func:`subject_hash`, never the raw id) to the
erasure that made it. :meth:`recops.core.lake.Lake.append` drops the rows of a tombstoned user, so
re-ingesting a dataset, or feedback replayed by a retraining cycle, cannot bring an erased user
back into training data. Kept beside the lake (it is the lake's rule); light to import.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recops import schema
from recops.core.atomic import file_lock, write_json
from recops.errors import DataError

FILENAME = "tombstones.json"


def subject_hash(user_id: int) -> str:
    """How records name a subject. User ids are small integers, so this is pseudonymous, not
    anonymous: it keeps the raw id out of the audit trail, not out of reach of a guesser."""
    return hashlib.sha256(f"recops-subject:{int(user_id)}".encode()).hexdigest()[:24]


def path(lake_root: Path) -> Path:
    return Path(lake_root) / FILENAME


def read(lake_root: Path) -> dict[str, dict[str, Any]]:
    """Subject hash -> {erasure_id, time} for every erased subject (empty when none)."""
    p = path(lake_root)
    if not p.exists():
        return {}
    try:
        data: dict[str, dict[str, Any]] = json.loads(p.read_text(encoding="utf-8"))["subjects"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"tombstone list {p} is unreadable ({exc}); restore it from the "
                        "`erase` records of the audit log (details.subject)") from exc
    return data


def add(lake_root: Path, subject: str, erasure_id: str) -> None:
    """Record ``subject`` as erased (kept from its first erasure), durably, under a lock."""
    p = path(lake_root)
    with file_lock(p.with_suffix(".lock")):
        current = read(lake_root)
        current.setdefault(subject, {"erasure_id": erasure_id,
                                     "time": datetime.now(UTC).isoformat(timespec="seconds")})
        write_json(p, {"subjects": current}, sync_dir=True)


def drop_erased(df: pd.DataFrame, lake_root: Path) -> tuple[pd.DataFrame, int]:
    """``df`` without the rows of tombstoned users, and how many rows were dropped."""
    if schema.USER_ID not in df.columns or df.empty:
        return df, 0
    dead = read(lake_root)
    if not dead:
        return df, 0
    users = pd.unique(df[schema.USER_ID].dropna())
    erased = [u for u in users if subject_hash(int(u)) in dead]
    if not erased:
        return df, 0
    keep = ~df[schema.USER_ID].isin(erased)
    return df[keep].reset_index(drop=True), int((~keep).sum())
