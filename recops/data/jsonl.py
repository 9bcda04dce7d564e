"""JSON lines read a chunk of whole lines at a time, each line one object of columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pyarrow as pa

from recops.errors import DataError


def looks_like(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.lstrip().startswith(b"{"):
        return "JSON"
    return "binary data" if b"\x00" in head else "text"


# ----------------------------------------------------------------------------- JSON lines

def jsonl_chunks(name: str, f: IO[bytes], chunk_bytes: int,
                  ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    line_no, tail, any_rows = 0, b"", False
    while True:
        block = f.read(chunk_bytes)
        data = tail + block
        cut = (data.rfind(b"\n") + 1) if block else len(data)
        if block and cut == 0:
            tail = data  # a line longer than a chunk: read on
            continue
        records: list[dict[str, Any]] = []
        lines: list[int] = []
        for raw in data[:cut].splitlines():
            line_no += 1
            if raw.strip():
                records.append(_json_object(name, raw, line_no))
                lines.append(line_no)
        tail = data[cut:]
        if records:
            any_rows = True
            yield _records_table(name, records, lines), np.asarray(lines)
        if not block:
            break
    if not any_rows:
        yield pa.table({}), np.arange(0)


def _json_object(name: str, raw: bytes, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{name}: not JSON lines: line {line_no} is not JSON ({exc}); it "
                        f"looks like {looks_like(raw[:64])}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not JSON lines: line {line_no} is a JSON "
                        f"{type(obj).__name__}, not an object of columns")
    return obj


def _records_table(name: str, records: list[dict[str, Any]], lines: list[int]) -> pa.Table:
    names = list(dict.fromkeys(k for r in records for k in r))
    arrays = []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed JSON types (1 and "1"): as text, for the contract's conversion to judge.
            arrays.append(pa.array([v if v is None or isinstance(v, str) else json.dumps(v)
                                    for v in values], pa.string()))
    return pa.table(arrays, names=names)
