"""Atomic, durable file writes (text, bytes, JSON, anything written to a file object) and locks."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_file(path: Path, *, sync_dir: bool = False) -> Iterator[BinaryIO]:
    """A binary file to fill in the ``with`` body; it replaces ``path`` only if the body succeeds.

    Readers see the old file or the new one, never half; the new one is fsync'd before the
    rename, and ``sync_dir`` also fsyncs the folder so the rename itself survives a crash. A body
    that raises leaves ``path`` as it was and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer: two processes replacing the same file never share a temp.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: Path, data: str | bytes, *, sync_dir: bool = False) -> None:
    """Write ``data`` (text as UTF-8, or bytes) through :func:`atomic_file`."""
    with atomic_file(path, sync_dir=sync_dir) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


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
