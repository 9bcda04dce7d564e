"""Logs as serving writes them, from the simulator: served lists in the impression log and
clicks in the feedback log carrying their request ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from recops.policy.ope import Logged
from recops.policy.policies import Policy


def write_logs(settings: Any, logged: Logged, policy: Policy, *, users: np.ndarray | None = None,
               item_base: int = 1000) -> None:
    """Append ``logged`` (simulated lists) to the home's impression and feedback logs; item a
    is id ``item_base + a``; each click becomes a ``click`` event with the list's request id."""
    from recops.core.feedback import open_log
    from recops.policy.impressions import open_impressions

    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    impressions, clicks = [], []
    for i in range(logged.n):
        cands = [int(c) + item_base for c in logged.candidates[i] if c >= 0]
        slots = [int(p) for p in logged.shown[i] if p >= 0]
        rid = f"req-{i:06d}"
        user = int(users[i]) if users is not None else i % 50
        impressions.append({
            "request_id": rid, "user_id": user, "items": [cands[p] for p in slots],
            "propensities": [float(x) for x in logged.propensity[i, :len(slots)]],
            "candidates": cands, "k": len(slots), "policy": policy.name,
            "policy_params": policy.params(), "policy_tag": policy.tag, "model": "m:1",
            "fallback": None, "served_at": t0 + timedelta(seconds=i)})
        for j, p in enumerate(slots):
            if logged.clicks[i, j]:
                clicks.append({"user_id": user, "item_id": cands[p], "event_type": "click",
                               "event_timestamp": t0 + timedelta(seconds=i, milliseconds=j),
                               "request_id": rid})
    open_impressions(settings).append_many(impressions)
    open_log(settings).append_many(clicks)
