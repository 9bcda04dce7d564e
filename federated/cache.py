"""Per-process cache of the run folder's files, for client processes that live across calls.

Flower's simulation engine runs the ClientApp for many virtual clients in the same few Ray
actors. Without a cache every call re-parsed the run's settings YAML and re-read the manifest,
the catalogue and the initial weights: with a user as a client that was most of a call's
time. An entry is keyed by the file's path, inode, size and modification time, so a file the
runner rewrites is read again; a missing file raises ``FileNotFoundError`` as ``open`` would.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# Enough for every partition a process serves in a 20,000-user federation (each a few KB).
MAX_ENTRIES = 32_768

_entries: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
_lock = threading.Lock()


def file_key(path: Path) -> tuple[str, int, int, int]:
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def cached(path: Path, load: Callable[[Path], T], *extra: Hashable) -> T:
    """``load(path)``, or what it returned before for the same file and ``extra`` key parts.

    Callers must not mutate what they get (it is shared with later calls): copy first.
    """
    key = (load.__module__, load.__qualname__, *file_key(path), *extra)
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]  # type: ignore[no-any-return]
    value = load(Path(path))
    with _lock:
        _entries[key] = value
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value
