"""The lake: canonical Parquet tables, append-only batches, versions named by content hash.

Layout under ``<home>/lake``::

    <table>/batches/<batch_id>.parquet      one accepted batch, never rewritten
    <table>/batches/<batch_id>.json         its manifest (rows, hash, source, time)
    <table>/log.jsonl                       the batch ids in the order they were accepted
    tombstones.json                         hashes of erased subjects, refused by ``append``

An erasure (``recops subject erase``) never edits the log: it appends a ``supersede`` entry that
puts a rewritten batch (or nothing) in the place of the old one, whose Parquet file is deleted.

A table's version is the hash of its batch ids in order (like a commit); a dataset version
is the hash of its tables' versions. Appending the same content twice is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recops import schema
from recops.core.atomic import atomic_file, write_atomic
from recops.core.hashing import FrameHash, sha256_frame, sha256_json
from recops.core.tombstones import drop_erased
from recops.errors import DataError

SUPERSEDE = "supersede"


@dataclass(frozen=True)
class BatchManifest:
    table: str
    batch_id: str
    rows: int
    content_hash: str
    source: str
    created_at: str
    path: str
    # Rows of erased subjects (recops.core.tombstones) refused when the batch landed.
    erased_rows_dropped: int = 0


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Cast a frame to the canonical dtypes of ``table`` (required columns first, extras kept)."""
    if table not in schema.PANDAS_DTYPES:
        raise DataError(f"unknown lake table '{table}'; expected one of {schema.TABLES}")
    dtypes = schema.PANDAS_DTYPES[table]
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise DataError(f"{table}: missing required column(s) {missing}; have {list(df.columns)}")
    out = df.copy()
    for col, dtype in dtypes.items():
        try:
            if dtype.startswith("datetime64"):
                out[col] = pd.to_datetime(out[col], utc=True).astype(dtype)
            else:
                out[col] = out[col].astype(dtype)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{table}: column '{col}' cannot be read as {dtype}: {exc}") from exc
    ordered = list(dtypes) + [c for c in out.columns if c not in dtypes]
    return out[ordered].reset_index(drop=True)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to hand back this way
    return trim


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc), between two chunks of a stream.

    A frame per chunk leaves glibc's heap fragmented: staging 10M CSV events crept from 400 to
    530 MB resident without this, and stayed at 460 MB with it.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def write_frames(f: BinaryIO, frames: Iterable[pd.DataFrame], what: str) -> tuple[str, int]:
    """Write frames of the same columns to ``f`` as one Parquet file, a row group or more each.

    Returns (the :func:`sha256_frame` of their concatenation, rows): one frame in memory at a
    time. An error from ``frames`` propagates; what was written to ``f`` is then not a file.
    """
    digest, rows = FrameHash(), 0
    writer: pq.ParquetWriter | None = None
    try:
        for df in frames:
            digest.update(df)
            rows += len(df)
            at = pa.Table.from_pandas(df, preserve_index=False)
            writer = writer or pq.ParquetWriter(f, at.schema)
            writer.write_table(at.cast(writer.schema))
            del df, at
            _trim_heap()
    finally:
        if writer is not None:
            writer.close()  # before ``f`` closes, also on an error
    if writer is None:
        raise DataError(f"{what}: no chunk of rows to write")
    return digest.hexdigest(), rows


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _table_dir(self, table: str) -> Path:
        if table not in schema.TABLES:
            raise DataError(f"unknown lake table '{table}'; expected one of {schema.TABLES}")
        return self.root / table

    def log_entries(self, table: str) -> list[dict[str, Any]]:
        """The table's log as written: batch manifests and ``supersede`` entries, in order."""
        log = self._table_dir(table) / "log.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()
                if line.strip()]

    def batches(self, table: str) -> list[BatchManifest]:
        """The live batches in order (a superseded batch is replaced in place, or dropped)."""
        out: list[BatchManifest] = []
        for entry in self.log_entries(table):
            if entry.get("op") == SUPERSEDE:
                pos = next((i for i, b in enumerate(out) if b.batch_id == entry["old"]), None)
                if pos is not None:
                    new = entry.get("new")
                    out[pos:pos + 1] = [self._here(table, new)] if new else []
            else:
                out.append(self._here(table, entry))
        return out

    def _here(self, table: str, entry: dict[str, Any]) -> BatchManifest:
        """A manifest whose path points into this lake, so a moved or copied home still reads."""
        name = Path(entry["path"]).name
        return BatchManifest(**{**entry, "path": str(self._table_dir(table) / "batches" / name)})

    def supersede(self, table: str, batch_id: str, df: pd.DataFrame, source: str,
                  reason: str) -> BatchManifest | None:
        """Replace a live batch by ``df`` (e.g. without an erased user's rows) in its place.

        Appends a ``supersede`` entry to the log and deletes the old batch's Parquet file, so
        its rows are gone while the log still says what was replaced, when and why. An empty
        ``df`` removes the batch. Returns the new batch's manifest (None when removed).
        """
        live = {b.batch_id: b for b in self.batches(table)}
        if batch_id not in live:
            raise DataError(f"{table}: no live batch '{batch_id}' in {self.root} to supersede")
        old = live[batch_id]
        new: BatchManifest | None = None
        if len(df):
            df = conform(df, table)
            content_hash = sha256_frame(df)
            if content_hash == old.content_hash:
                raise DataError(f"{table}: batch {batch_id} would be replaced by identical content")
            new_id = content_hash[:16]
            path = self._table_dir(table) / "batches" / f"{new_id}.parquet"
            with atomic_file(path) as f:
                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)
            new = BatchManifest(table=table, batch_id=new_id, rows=len(df),
                                content_hash=content_hash, source=source,
                                created_at=datetime.now(UTC).isoformat(), path=str(path))
            write_atomic(path.with_suffix(".json"), json.dumps(asdict(new), indent=2))
        entry = {"op": SUPERSEDE, "table": table, "old": batch_id,
                 "new": asdict(new) if new else None, "reason": reason,
                 "time": datetime.now(UTC).isoformat()}
        with open(self._table_dir(table) / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # The log points past the old file before it goes: a crash in between leaves an
        # unreferenced file, which `orphans` lists and a rerun of the erasure deletes.
        Path(old.path).unlink(missing_ok=True)
        return new

    def append(self, table: str, df: pd.DataFrame, source: str) -> BatchManifest:
        """Land an accepted batch; returns its manifest. Idempotent on identical content.

        Rows of an erased subject (listed in the lake's tombstones) are dropped first, so no
        ingestion path brings an erased user back; the manifest counts them.
        """
        return self.append_chunks(table, [df], source)

    def append_chunks(self, table: str, chunks: Iterable[pd.DataFrame],
                      source: str) -> BatchManifest:
        """:meth:`append` of a batch given as row chunks, holding one chunk in memory at a time.

        The batch is the chunks in order: same content hash, id and rows as appending their
        concatenation. Nothing is visible in the lake until every chunk is written.
        """
        tdir = self._table_dir(table) / "batches"
        incoming = tdir / f".incoming-{uuid.uuid4().hex}.parquet"
        dropped = [0]

        def kept() -> Iterator[pd.DataFrame]:
            for chunk in chunks:
                df, n = drop_erased(conform(chunk, table), self.root)
                dropped[0] += n
                yield df

        try:
            with atomic_file(incoming) as f:
                content_hash, rows = write_frames(f, kept(), what=table)
            for existing in self.batches(table):
                if existing.content_hash == content_hash:
                    return existing
            batch_id = content_hash[:16]
            path = tdir / f"{batch_id}.parquet"
            os.replace(incoming, path)
        finally:
            incoming.unlink(missing_ok=True)
        manifest = BatchManifest(
            table=table, batch_id=batch_id, rows=rows, content_hash=content_hash,
            source=source, created_at=datetime.now(UTC).isoformat(), path=str(path),
            erased_rows_dropped=dropped[0],
        )
        write_atomic(path.with_suffix(".json"), json.dumps(asdict(manifest), indent=2))
        with open(self._table_dir(table) / "log.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(asdict(manifest)) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return manifest

    def orphans(self, table: str) -> list[Path]:
        """Batch files no live batch refers to (left by an erasure interrupted mid-way)."""
        tdir = self._table_dir(table) / "batches"
        live = {Path(b.path).name for b in self.batches(table)}
        if not tdir.is_dir():
            return []
        return sorted(p for p in tdir.glob("*.parquet") if p.name not in live)

    def version(self, table: str) -> str | None:
        ids = [b.batch_id for b in self.batches(table)]
        return sha256_json(ids)[:16] if ids else None

    def dataset_version(self) -> str:
        versions = {t: self.version(t) for t in schema.TABLES}
        if versions[schema.INTERACTIONS] is None:
            raise DataError(f"the lake at {self.root} holds no interactions yet: "
                            "run `recops ingest`")
        return sha256_json(versions)[:16]

    def read(self, table: str, batch_ids: list[str] | None = None) -> pd.DataFrame:
        """All accepted batches of ``table`` in order (or only ``batch_ids``)."""
        batches = self.batches(table)
        if batch_ids is not None:
            wanted = set(batch_ids)
            batches = [b for b in batches if b.batch_id in wanted]
        if not batches:
            return conform(pd.DataFrame({c: [] for c in schema.PANDAS_DTYPES[table]}), table)
        frames = [pd.read_parquet(b.path) for b in batches]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return conform(df, table)

    def read_latest(self, table: str) -> pd.DataFrame:
        """Items and users are snapshots: the newest batch is the table (interactions append)."""
        batches = self.batches(table)
        if table == schema.INTERACTIONS or not batches:
            return self.read(table)
        return self.read(table, [batches[-1].batch_id])
