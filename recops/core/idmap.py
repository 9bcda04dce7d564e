"""String ids at the edges, int64 inside: the versioned id map kept in the lake.

An id that reads as a plain non-negative integer below 2**53 (MovieLens' ids, a team's numeric
ids) is its own internal id and is not stored. Any other id (an SKU, a UUID, a slug) gets an
internal id in [2**61, 2**62) from a hash of its text: the same id always gets the same number,
in any batch, in serving as in ingestion, so no id is ever renumbered and the two ranges never
meet. The map records each such pair, append-only, so that internal ids turn back into the
team's ids (serving's answers, exports) and so that an erasure can remove a user's entry.

Layout under ``<lake>/idmap/<kind>/`` (kind ``users`` or ``items``)::

    <n>.parquet        one batch of new pairs (external_id, internal_id), never renumbered
    log.jsonl          the batch files in the order they were added

The map's version is the hash of its batches' content hashes in order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recops.core.atomic import atomic_file, file_lock, write_atomic
from recops.core.hashing import sha256_frame, sha256_json
from recops.errors import DataError

KINDS = ("users", "items")
PLAIN_MAX = (1 << 53) - 1  # integers a JSON client keeps exact
HASHED_FLOOR = 1 << 61
HASHED_SPAN = 1 << 61
EXTERNAL, INTERNAL = "external_id", "internal_id"
_PLAIN = re.compile(r"^(0|[1-9][0-9]{0,15})$")
MAX_ID_CHARS = 256


def is_plain(external: str) -> bool:
    """Whether ``external`` is its own internal id (a plain integer below 2**53)."""
    return bool(_PLAIN.match(external)) and int(external) <= PLAIN_MAX


def internal_id(external: str | int) -> int:
    """The internal int64 of a team's id (the same number every time, anywhere)."""
    if isinstance(external, bool):
        raise DataError(f"id {external!r} is a boolean, not an id")
    if isinstance(external, int | np.integer):
        if 0 <= int(external) <= PLAIN_MAX:
            return int(external)
        external = str(int(external))
    text = str(external)
    if is_plain(text):
        return int(text)
    if not text or len(text) > MAX_ID_CHARS:
        raise DataError(f"id {text[:40]!r} is not usable: ids are 1-{MAX_ID_CHARS} characters")
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"recops-id").digest()
    return HASHED_FLOOR + int.from_bytes(digest, "big") % HASHED_SPAN


def internal_ids(values: pd.Series) -> tuple[np.ndarray, pd.DataFrame]:
    """Internal ids of a column of team ids (each distinct value hashed once), and the pairs of
    its non-plain ids (to add to the map)."""
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    if (codes < 0).any():
        raise DataError("an id is missing")  # callers check for missing values first
    mapped = np.fromiter((internal_id(str(u)) for u in uniques), dtype=np.int64,
                         count=len(uniques))
    hashed = mapped >= HASHED_FLOOR
    pairs = pd.DataFrame({EXTERNAL: pd.array(np.asarray(uniques, dtype=object)[hashed],
                                             dtype="string"),
                          INTERNAL: mapped[hashed]})
    return mapped[codes], pairs


class IdMap:
    """The id map of one kind (``users`` or ``items``) under a lake root."""

    def __init__(self, lake_root: Path, kind: str) -> None:
        if kind not in KINDS:
            raise DataError(f"unknown id map '{kind}'; expected one of {KINDS}")
        self.kind = kind
        self.root = Path(lake_root) / "idmap" / kind

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    def _entries(self) -> list[dict[str, str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def read(self) -> pd.DataFrame:
        """Every recorded pair (external_id, internal_id)."""
        frames = [pd.read_parquet(self.root / e["file"]) for e in self._entries()]
        if not frames:
            return pd.DataFrame({EXTERNAL: pd.array([], dtype="string"),
                                 INTERNAL: np.array([], dtype=np.int64)})
        return pd.concat(frames, ignore_index=True)

    def version(self) -> str | None:
        entries = self._entries()
        return sha256_json([e["hash"] for e in entries])[:16] if entries else None

    def add(self, pairs: pd.DataFrame) -> int:
        """Append the pairs not yet recorded; returns how many were new. A hash collision (two
        ids, one number) is refused before anything is written."""
        if pairs.empty:
            return 0
        with file_lock(self.root.parent / f"{self.kind}.lock"):
            known = self.read()
            new = pairs.drop_duplicates(EXTERNAL)
            new = new[~new[EXTERNAL].isin(known[EXTERNAL])]
            both = pd.concat([known, new], ignore_index=True)
            clash = both[both[INTERNAL].duplicated(keep=False)]
            if len(clash):
                raise DataError(f"id map {self.kind}: ids {sorted(clash[EXTERNAL])[:4]} hash "
                                "to the same internal id; rename one of them")
            if new.empty:
                return 0
            self._write(new.reset_index(drop=True))
            return len(new)

    def _write(self, frame: pd.DataFrame) -> None:
        entries = self._entries()
        n = 1 + max((int(e["file"].split(".")[0]) for e in entries), default=0)
        name = f"{n:06d}.parquet"
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.root / name) as f:
            frame.to_parquet(f, index=False)
        entries.append({"file": name, "hash": sha256_frame(frame), "rows": str(len(frame))})
        write_atomic(self.log, "".join(json.dumps(e) + "\n" for e in entries))

    def external_ids(self, internal: Iterable[int]) -> list[str | int]:
        """The team's id of each internal id: recorded text, else the plain integer itself."""
        table = self.read()
        back = dict(zip(table[INTERNAL].astype(int), table[EXTERNAL].astype(str), strict=True))
        return [back.get(int(i), int(i)) for i in internal]

    def forget(self, internal: int) -> int:
        """Remove an internal id's pair from every batch holding it (an erasure); returns how
        many pairs were removed. Its number is never given to another id."""
        removed = 0
        with file_lock(self.root.parent / f"{self.kind}.lock"):
            entries = self._entries()
            for e in entries:
                path = self.root / e["file"]
                frame = pd.read_parquet(path)
                keep = frame[INTERNAL] != int(internal)
                if keep.all():
                    continue
                removed += int((~keep).sum())
                frame = frame[keep].reset_index(drop=True)
                with atomic_file(path) as f:
                    frame.to_parquet(f, index=False)
                e["hash"], e["rows"] = sha256_frame(frame), str(len(frame))
            if removed:
                write_atomic(self.log, "".join(json.dumps(e) + "\n" for e in entries))
        return removed
