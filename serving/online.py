"""The service's view of Feast's online store: a user's recent items, and pushing an event."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from recops import schema

if TYPE_CHECKING:
    from recops.config import Settings

_STRIPES = 64


class OnlineFeatures:
    """One FeatureStore per process; pushes for the same user are serialised so the
    read-append-write of the sequence never loses an event to a concurrent one."""

    def __init__(self, settings: Settings) -> None:
        from recops import feast_store

        self._fs = feast_store
        self.store = feast_store.get_store(settings)
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def history(self, user_id: int) -> list[int] | None:
        """The user's recent item ids (most recent last); None for a user the store has no
        events for."""
        seq = self._fs.online_sequences(self.store, [user_id])[0]
        return [int(i) for i in seq] if seq else None

    def push(self, event: dict[str, Any]) -> None:
        with self._locks[hash(event[schema.USER_ID]) % _STRIPES]:
            self._fs.push_event(self.store, event)
