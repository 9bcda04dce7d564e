"""Chronological leave-last-out labels and the point-in-time history before each label.

Protocol (docs/architecture.md, "Evaluation protocol"): order each user's events by
(event_timestamp, item_id); the last is ``test``, the one before ``valid``, the rest train.
Users with fewer than 3 events get one ``train`` row (their last event) so that they are kept
for training only. The history before a label at time t is every event of the user strictly
before t (what Feast returns when queried at t - 1 microsecond), most recent last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recops.errors import DataError
from recops.schema import EVENT_TIMESTAMP, ITEM_ID, USER_ID

SPLIT = "split"
RECENT_ITEMS = "recent_items"
SPLITS = ("train", "valid", "test")
MIN_EVAL_EVENTS = 3


def order_events(interactions: pd.DataFrame) -> pd.DataFrame:
    """Interactions sorted by (user_id, event_timestamp, item_id): the protocol's one order."""
    missing = [c for c in (USER_ID, ITEM_ID, EVENT_TIMESTAMP) if c not in interactions.columns]
    if missing:
        raise DataError(f"interactions: missing column(s) {missing}; "
                        f"have {list(interactions.columns)}")
    if interactions.empty:
        raise DataError("interactions: the table is empty; nothing to split or train on")
    ts = pd.to_datetime(interactions[EVENT_TIMESTAMP], utc=True)
    out = interactions.assign(**{EVENT_TIMESTAMP: ts})
    out = out.sort_values([USER_ID, EVENT_TIMESTAMP, ITEM_ID], kind="stable")
    return out.reset_index(drop=True)


def leave_last_out_labels(interactions: pd.DataFrame, *,
                          train_only_rows: bool = True) -> pd.DataFrame:
    """One row per (user, split) with the label ``item_id`` and ``event_timestamp``.

    ``split`` is ``valid``/``test`` for users with >= 3 events, and ``train`` (their last event,
    kept for training only) for the others unless ``train_only_rows`` is False.
    """
    ev = order_events(interactions)
    pos_from_end = ev.groupby(USER_ID, sort=False).cumcount(ascending=False)
    n_events = ev.groupby(USER_ID, sort=False)[ITEM_ID].transform("size")
    evalable = n_events >= MIN_EVAL_EVENTS
    test = ev[evalable & (pos_from_end == 0)].assign(**{SPLIT: "test"})
    valid = ev[evalable & (pos_from_end == 1)].assign(**{SPLIT: "valid"})
    parts = [valid, test]
    if train_only_rows:
        parts.append(ev[~evalable & (pos_from_end == 0)].assign(**{SPLIT: "train"}))
    labels = pd.concat(parts, ignore_index=True)[[USER_ID, ITEM_ID, EVENT_TIMESTAMP, SPLIT]]
    labels = labels.sort_values([USER_ID, EVENT_TIMESTAMP, ITEM_ID], kind="stable")
    return labels.reset_index(drop=True)


def history_before(interactions: pd.DataFrame, labels: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """``labels`` plus ``recent_items``: the user's last ``n`` items strictly before the label time.

    The pandas twin of Feast's point-in-time retrieval at ``t_label - 1us`` (same-second siblings
    of the label excluded); ``n=None`` keeps the whole history (used to mask every seen item).
    """
    ev = order_events(interactions)
    users = ev[USER_ID].to_numpy()
    items = ev[ITEM_ID].to_numpy()
    ts = ev[EVENT_TIMESTAMP].to_numpy()
    starts = np.searchsorted(users, labels[USER_ID].to_numpy(), side="left")
    ends_user = np.searchsorted(users, labels[USER_ID].to_numpy(), side="right")
    label_ts = pd.to_datetime(labels[EVENT_TIMESTAMP], utc=True).to_numpy()
    out = []
    for s, e, t in zip(starts, ends_user, label_ts, strict=True):
        cut = s + int(np.searchsorted(ts[s:e], t, side="left"))
        lo = s if n is None else max(s, cut - n)
        out.append(items[lo:cut].tolist())
    return labels.assign(**{RECENT_ITEMS: out})


def labelled_frame(interactions: pd.DataFrame, n: int,
                   users: pd.DataFrame | None = None) -> pd.DataFrame:
    """Leave-last-out labels with their point-in-time ``recent_items`` (and user attributes).

    The frame ``SequenceData.from_labelled`` takes; the pipeline builds the same one with Feast.
    """
    labelled = history_before(interactions, leave_last_out_labels(interactions), n)
    if users is not None:
        extra = [c for c in users.columns if c != USER_ID and c not in labelled.columns]
        if extra:
            labelled = labelled.merge(users[[USER_ID, *extra]], on=USER_ID, how="left")
    return labelled
