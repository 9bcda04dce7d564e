"""Search a home (and a Redis project) for one user id: as text in every file, and structurally
inside Parquet, SQLite, JSON and Feast's protobuf values, where an id is not text."""

from __future__ import annotations

import json
import re
import sqlite3
import struct
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _text_re(uid: int) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![0-9])" + str(uid).encode() + rb"(?![0-9])")


def _binary_hits(blob: bytes, uid: int) -> bool:
    """The id as Feast's entity keys and raw int64 columns hold it (8 bytes little-endian), or
    decoded from a protobuf Value (varints are not findable as bytes)."""
    if struct.pack("<q", uid) in blob or _text_re(uid).search(blob):
        return True
    return uid in _proto_ints(blob)


def _proto_ints(blob: bytes) -> set[int]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    out: set[int] = set()
    for cls in (Value, EntityKey):
        try:
            msg = cls.FromString(blob)
        except Exception:  # noqa: BLE001 - not this message type
            continue
        vals = list(msg.entity_values) if cls is EntityKey else [msg]
        for v in vals:
            kind = v.WhichOneof("val")
            if kind in ("int64_val", "int32_val"):
                out.add(int(getattr(v, kind)))
            elif kind in ("int64_list_val", "int32_list_val"):
                out.update(int(x) for x in getattr(v, kind).val)
    return out


def _walk_json(obj: Any, uid: int) -> bool:
    if isinstance(obj, bool):
        return False
    if isinstance(obj, int | float):
        return obj == uid
    if isinstance(obj, str):
        return bool(_text_re(uid).search(obj.encode()))
    if isinstance(obj, dict):
        return any(_walk_json(k, uid) or _walk_json(v, uid) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_walk_json(v, uid) for v in obj)
    return False


def _parquet_hits(path: Path, uid: int) -> list[str]:
    table = pq.read_table(path)
    hits = []
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        while pa.types.is_list(t) or pa.types.is_large_list(t):
            col = pc.list_flatten(col)
            t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            found = pc.any(pc.equal(col, uid)).as_py()
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            found = pc.any(pc.match_substring_regex(col, rf"(^|[^0-9]){uid}([^0-9]|$)")).as_py()
        else:
            found = False
        if found:
            hits.append(f"{path} column {name}")
    return hits


def _sqlite_hits(path: Path, uid: int) -> list[str]:
    hits = []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{t}"'):  # noqa: S608 - test's own read
                for v in row:
                    if (isinstance(v, int) and v == uid) or (
                            isinstance(v, str) and _text_re(uid).search(v.encode())) or (
                            isinstance(v, bytes) and _binary_hits(v, uid)):
                        hits.append(f"{path} table {t}")
                        break
    return hits


def scan_home(home: Path, uid: int) -> list[str]:
    """Every place under ``home`` where ``uid`` is found (empty: nowhere)."""
    hits: list[str] = []
    text = _text_re(uid)
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        if text.search(data) or struct.pack("<q", uid) in data:
            hits.append(f"{path} (bytes)")
        if path.suffix == ".parquet":
            hits += _parquet_hits(path, uid)
        elif data[:16] == b"SQLite format 3\x00":
            hits += _sqlite_hits(path, uid)
        elif path.suffix in (".json", ".jsonl"):
            for line in (data.splitlines() if path.suffix == ".jsonl" else [data]):
                if line.strip() and _walk_json(json.loads(line), uid):
                    hits.append(f"{path} (JSON)")
                    break
    return hits


def scan_redis(client: Any, project: str, uid: int) -> list[str]:
    """Every key (and value) of the Feast ``project`` in Redis that holds ``uid``."""
    hits = []
    for key in client.scan_iter(match=b"*" + project.encode()):
        if _binary_hits(key, uid) or uid in _proto_ints(key[: -len(project)]):
            hits.append(f"key {key!r}")
            continue
        for field, value in client.hgetall(key).items():
            if _binary_hits(value, uid) or _text_re(uid).search(field):
                hits.append(f"key {key!r} field {field!r}")
    return hits


def count_redis_keys(client: Any, project: str) -> int:
    return sum(1 for _ in client.scan_iter(match=b"*" + project.encode()))
