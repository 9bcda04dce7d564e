"""Items the catalogue has withdrawn (``available`` false, an ``available_until`` past, an
``available_from`` still ahead): never listed, from the first request after their batch lands.

The lake's items log is looked at (one ``stat``) on every call; the catalogue is re-read only
when it changed, so a batch that lands is seen by the very next request, with no retraining.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recops import schema

AVAILABLE_FROM, AVAILABLE_UNTIL, AVAILABLE = "available_from", "available_until", "available"


class Availability:
    """The withdrawn items of the lake's newest catalogue, as internal ids."""

    def __init__(self, lake_root: Path) -> None:
        self.root = Path(lake_root)
        self.log = self.root / schema.ITEMS / "log.jsonl"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._never = np.zeros(0, dtype=np.int64)  # marked unavailable
        self._ids = np.zeros(0, dtype=np.int64)  # items with a window, and the window (ns)
        self._start = np.zeros(0, dtype=np.int64)
        self._end = np.zeros(0, dtype=np.int64)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.log)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino, st.st_size

    def _reload(self) -> None:
        from recops.core.lake import Lake

        items = Lake(self.root).read_latest(schema.ITEMS)
        ids = items[schema.ITEM_ID].to_numpy(np.int64) if len(items) else np.zeros(0, np.int64)
        never = np.zeros(len(ids), dtype=bool)
        if AVAILABLE in items.columns:
            never = (items[AVAILABLE].astype("boolean") == False).fillna(False).to_numpy(bool)  # noqa: E712
        lo = np.full(len(ids), np.iinfo(np.int64).min)
        hi = np.full(len(ids), np.iinfo(np.int64).max)
        for col, out in ((AVAILABLE_FROM, lo), (AVAILABLE_UNTIL, hi)):
            if col in items.columns:
                t = pd.to_datetime(items[col], utc=True)
                has = t.notna().to_numpy()
                out[has] = t[has].dt.as_unit("ns").astype("int64").to_numpy()
        windowed = (lo != np.iinfo(np.int64).min) | (hi != np.iinfo(np.int64).max)
        self._never = ids[never]
        self._ids, self._start, self._end = ids[windowed], lo[windowed], hi[windowed]

    def withdrawn(self, now: datetime | None = None) -> list[int]:
        """Internal ids of the items not to list at ``now`` (default: the clock)."""
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                if stamp is None:
                    self._never = self._ids = np.zeros(0, dtype=np.int64)
                else:
                    self._reload()
                self._stamp = stamp
            ns = int((now or datetime.now(UTC)).timestamp() * 1e9)
            out = self._ids[(ns < self._start) | (ns >= self._end)]
            return [int(i) for i in np.union1d(self._never, out)]
