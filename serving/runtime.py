"""Process-level tuning of a serving worker: the heap frozen once a model is loaded."""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect once, then move every object alive now out of the cyclic collector's reach;
    returns how many objects are frozen.

    A worker holds ~300-400k long-lived objects (torch, Feast, BentoML, pandas, the model).
    Every full (generation-2) collection walked them all: 280-440 ms of CPU every few seconds
    under load on a busy 2-core machine, stalling every request queued on the worker, and
    freeing next to nothing. Frozen objects are still freed by reference counting; garbage
    cycles among them wait for the next call (after a model swap), which unfreezes first.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
