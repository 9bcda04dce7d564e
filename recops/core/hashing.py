"""Content hashes and the code version: what names a data version, an audit record, a model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from recops.paths import CHECKOUT


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_frame(df: pd.DataFrame) -> str:
    """Order-sensitive hash of a frame's columns, dtypes and values (not of its file encoding)."""
    h = hashlib.sha256()
    h.update(json.dumps([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()


class FrameHash:
    """:func:`sha256_frame` of a frame fed in row chunks: the same digest as the whole frame's."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._dtypes: bytes | None = None

    def update(self, df: pd.DataFrame) -> None:
        dtypes = json.dumps([(c, str(t)) for c, t in df.dtypes.items()]).encode()
        if self._dtypes is None:
            self._dtypes = dtypes
            self._h.update(dtypes)
        elif dtypes != self._dtypes:
            raise ValueError(f"a chunk's columns/dtypes {dtypes!r} differ from the first's")
        self._h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def code_version() -> str:
    """The checkout's git commit (``+dirty`` with uncommitted changes), else 'unknown'."""
    import subprocess

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=CHECKOUT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
