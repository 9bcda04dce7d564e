"""Durable small-file writes and inter-process locks (lake, audit log, registry, retrain state)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str, *, sync_dir: bool = False) -> None:
    """Write ``text`` so readers see the old file or the new one, never half; fsync'd.

    ``sync_dir`` also fsyncs the folder, so the rename itself survives a crash.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextmanager
def file_lock(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock`` (created if missing) for the ``with`` body."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(path: Path, obj: Any, *, sync_dir: bool = False) -> Path:
    """The one JSON writer for run and state files: sorted keys, indented, atomic and fsync'd.

    Numpy scalars become plain numbers; anything else JSON cannot hold becomes its ``str``.
    """
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n",
                 sync_dir=sync_dir)
    return path


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return str(value)
