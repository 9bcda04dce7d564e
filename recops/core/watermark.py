"""The retraining watermark: how far each feedback log has been consumed, kept across cycles.

``<home>/runs/_continual/state.json`` holds ``{"offset", "cycles", "last_run", "log",
"offsets": {log name: offset}}``. A cycle moves it past the batch it took (landed or
quarantined); an erasure that rewrites a log shifts it so it still points at the same record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.core.atomic import file_lock, write_json
from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings


def state_path(settings: Settings) -> Path:
    return settings.paths.runs / "_continual" / "state.json"


def read_state(settings: Settings) -> dict[str, Any]:
    """``{"offset": feedback offset consumed so far, "cycles": n, "last_run": id,
    "log": the feedback log it is an offset of, "offsets": {log: offset}}``."""
    path = state_path(settings)
    if not path.exists():
        return {"offset": 0, "cycles": 0, "last_run": None}
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"continual state {path} is unreadable ({exc}); restore it or remove "
                        "it to re-read all feedback") from exc
    return state


def watermark(state: dict[str, Any], log_name: str) -> int:
    """The offset consumed so far in the feedback log ``log_name`` (0 for a log never read:
    offsets of the file log and of a PostgreSQL table are different counters)."""
    offsets: dict[str, int] = state.get("offsets", {})
    if log_name in offsets:
        return offsets[log_name]
    return int(state["offset"]) if state.get("log", "file") == log_name else 0


def advance(settings: Settings, run_id: str, from_offset: int, to_offset: int,
             log_name: str = "file") -> None:
    """Move the watermark past a batch (landed or quarantined: either way nothing is lost)."""
    with file_lock(state_path(settings).with_suffix(".lock")):
        state = read_state(settings)
        if watermark(state, log_name) == from_offset:  # a retry must not skip a newer batch
            state.update(offset=to_offset, cycles=state["cycles"] + 1, last_run=run_id,
                         log=log_name,
                         offsets={**state.get("offsets", {}), log_name: to_offset})
            write_json(state_path(settings), state)


def shift_watermark(settings: Settings, log_name: str, shift: Callable[[int], int]) -> None:
    """Move the watermark of ``log_name`` after the log was rewritten (an erasure cut records
    out of it, so byte offsets moved): ``shift`` maps an old offset to the new one."""
    path = state_path(settings)
    if not path.exists():
        return
    with file_lock(path.with_suffix(".lock")):
        state = read_state(settings)
        old = watermark(state, log_name)
        new = shift(old)
        if new != old:
            offsets = {**state.get("offsets", {}), log_name: new}
            if state.get("log", "file") == log_name:
                state["offset"] = new
            state["offsets"] = offsets
            write_json(path, state)
