"""Per-user item sequences in index space: what training and evaluation consume.

Built from the *labelled frame*: one row per (user_id, split) with the label ``item_id`` and
``recent_items`` (item ids strictly before the label, most recent last), as Feast's historical
retrieval or :func:`recops.training.splits.labelled_frame` return it. Splits: ``valid`` and
``test`` for evaluated users, ``train`` for users kept for training only (their last event is
the label).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from recops.errors import DataError
from recops.schema import EVENT_TIMESTAMP, EVENT_WEIGHT, ITEM_ID, USER_ID, USER_OPTIONAL_COLUMNS
from recops.training.splits import RECENT_ITEMS, SPLIT, SPLITS, labelled_frame, order_events

ACTIVITY_BUCKETS = ((0, 20, "<20"), (20, 50, "20-49"), (50, 200, "50-199"), (200, None, "200+"))
# Demographic columns used as segments when the data has them (zip codes are too fine-grained).
SEGMENT_COLUMNS = tuple(c for c in USER_OPTIONAL_COLUMNS if c != "zip_code")


def activity_bucket(n_train_events: int) -> str:
    for lo, hi, name in ACTIVITY_BUCKETS:
        if n_train_events >= lo and (hi is None or n_train_events < hi):
            return name
    return ACTIVITY_BUCKETS[0][2]


@dataclass(frozen=True)
class ItemIndex:
    """Item ids <-> contiguous indices 1..n_items; 0 is padding. ``item_ids[i-1]`` is index i."""

    item_ids: np.ndarray
    # Derived in __post_init__ (the ids sorted, and the argsort that sorts them); not part of
    # the constructor, repr or equality.
    _sorted: np.ndarray = field(init=False, repr=False, compare=False)
    _order: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise DataError("item index: item ids must be unique")
        object.__setattr__(self, "item_ids", ids)
        order = np.argsort(ids, kind="stable")
        object.__setattr__(self, "_sorted", ids[order])
        object.__setattr__(self, "_order", order)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_index(self, ids: Iterable[int] | np.ndarray, *, strict: bool = True) -> np.ndarray:
        """Indices of ``ids``; unknown ids raise (strict) or map to 0 (padding)."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if not len(self._sorted):
            found = np.zeros(len(ids), dtype=bool)
            pos = np.zeros(len(ids), dtype=np.int64)
        else:
            pos = np.clip(np.searchsorted(self._sorted, ids), 0, len(self._sorted) - 1)
            found = self._sorted[pos] == ids
        if strict and not found.all():
            unknown = sorted(set(ids[~found].tolist()))[:10]
            raise DataError(f"item ids {unknown} are not in the items table (item index of "
                            f"{self.n_items} items); check that items and interactions match")
        return np.where(found, self._order[pos] + 1, 0).astype(np.int64)

    def to_ids(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if ((idx < 1) | (idx > self.n_items)).any():
            raise DataError(f"item indices must lie in 1..{self.n_items}")
        return self.item_ids[idx - 1]

    def extend(self, ids: Iterable[int]) -> ItemIndex:
        """This index plus any new ids appended at the end (existing indices unchanged)."""
        new = [i for i in dict.fromkeys(int(x) for x in ids)
               if not self.to_index([i], strict=False)[0]]
        return ItemIndex(np.concatenate([self.item_ids, np.asarray(new, dtype=np.int64)]))


def _negatives_before(negatives: pd.DataFrame, users: np.ndarray, valid: pd.DataFrame,
                      index: ItemIndex) -> list[np.ndarray]:
    """Per user of ``users``: their negative items (index space, time order, items the model
    does not know dropped) before their valid label's time, so none comes from the future."""
    if negatives.empty:
        return [np.zeros(0, np.int64) for _ in users]
    ev = order_events(negatives)
    cut = pd.to_datetime(valid[EVENT_TIMESTAMP], utc=True) if EVENT_TIMESTAMP in valid else None
    out: dict[int, np.ndarray] = {}
    for u, g in ev.groupby(USER_ID, sort=False):
        if cut is not None and u in cut.index:
            g = g[g[EVENT_TIMESTAMP] < cut.loc[u]]
        idx = index.to_index(g[ITEM_ID].to_numpy(), strict=False)
        out[int(u)] = idx[idx > 0]
    return [out.get(int(u), np.zeros(0, np.int64)) for u in users]


def left_pad(seqs: Sequence[np.ndarray], length: int,
             dtype: type[np.generic] = np.int64) -> torch.Tensor:
    """Tensor [B, length] of ``dtype`` (items: int64; weights: float32): each sequence's last
    ``length`` values, left-padded with 0."""
    out = np.zeros((len(seqs), length), dtype=dtype)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=dtype)[-length:]
        if len(s):
            out[i, length - len(s):] = s
    return torch.from_numpy(out)


@dataclass
class SequenceData:
    """Everything a recommender trains and is evaluated on, in index space.

    ``train_users``/``train_seqs``: every user and the history training may see (before the
    valid label; the whole history for train-only users). ``eval_users`` with their
    ``valid_inputs``/``valid_targets``, ``test_inputs``/``test_targets``, the items to mask
    (``valid_seen``, ``test_seen``) and ``segments`` (name -> label per eval user).
    ``items`` holds the catalogue sorted by item id, row i = index i+1 (text vectors align to it).
    """

    index: ItemIndex
    items: pd.DataFrame
    train_users: np.ndarray
    train_seqs: list[np.ndarray]
    eval_users: np.ndarray
    valid_inputs: list[np.ndarray]
    valid_targets: np.ndarray
    test_inputs: list[np.ndarray]
    test_targets: np.ndarray
    valid_seen: list[np.ndarray]
    test_seen: list[np.ndarray]
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    # Each train user's whole training history in time order (aligned with ``train_users``;
    # ``train_seqs`` holds only its last max_len items). None: only ``train_seqs`` is known.
    histories: list[np.ndarray] | None = None
    # The positive weight of each event of ``histories`` (data.event_roles; aligned with them), and
    # each train user's negative items before their valid label (index space, most recent
    # last). None: unweighted / no negatives known.
    history_weights: list[np.ndarray] | None = None
    negatives: list[np.ndarray] | None = None

    @property
    def train_histories(self) -> list[np.ndarray]:
        """The whole training histories where known, else the sequences."""
        return self.histories if self.histories is not None else self.train_seqs

    def train_seq_weights(self) -> list[np.ndarray] | None:
        """The weights of ``train_seqs`` (each the tail of its history), where known."""
        if self.history_weights is None:
            return None
        return [w[len(w) - len(sq):] for w, sq in zip(self.history_weights, self.train_seqs,
                                                      strict=True)]

    @property
    def n_items(self) -> int:
        return self.index.n_items

    @property
    def n_users(self) -> int:
        return len(self.train_users)

    def __repr__(self) -> str:
        return (f"SequenceData(n_items={self.n_items}, n_users={self.n_users}, "
                f"n_eval_users={len(self.eval_users)})")

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame, items: pd.DataFrame, max_len: int,
                          users: pd.DataFrame | None = None,
                          negatives: pd.DataFrame | None = None) -> SequenceData:
        """Split ``interactions`` with the protocol and build the data (pandas path, no Feast).

        ``interactions`` are the positives (with ``event_weight`` when weighted) and
        ``negatives`` the negative events, as :func:`recops.core.roles.split_roles` gives them.
        """
        labelled = labelled_frame(interactions, max_len, users)
        return cls.from_labelled(labelled, items, interactions=interactions, negatives=negatives)

    @classmethod
    def from_labelled(cls, labelled: pd.DataFrame, items: pd.DataFrame, *,
                      interactions: pd.DataFrame | None = None,
                      negatives: pd.DataFrame | None = None) -> SequenceData:
        """Build from the labelled frame and the items table.

        Pass ``interactions`` to mask *every* seen item and bucket users by their true number of
        train events; without it both come from ``recent_items`` (at most max_len items). Its
        ``event_weight`` column, when present, gives the histories' weights; ``negatives`` (the
        users' negative events) gives each train user's negatives before their valid label.
        """
        need = [USER_ID, ITEM_ID, SPLIT, RECENT_ITEMS]
        missing = [c for c in need if c not in labelled.columns]
        if missing:
            raise DataError(f"labelled frame: missing column(s) {missing}; "
                            f"have {list(labelled.columns)}"
                            " (expected one row per user and split with recent_items)")
        if labelled.empty:
            raise DataError("labelled frame is empty: no users to train or evaluate on")
        if ITEM_ID not in items.columns or items.empty:
            raise DataError("items table: empty or without an item_id column")
        bad = sorted(set(labelled[SPLIT].astype(str)) - set(SPLITS))
        if bad:
            raise DataError(f"labelled frame: unknown split value(s) {bad}; expected {SPLITS}")
        if labelled.duplicated([USER_ID, SPLIT]).any():
            dup = labelled.loc[labelled.duplicated([USER_ID, SPLIT]), USER_ID].iloc[0]
            raise DataError(f"labelled frame: user {dup} has more than one row for the same split")
        items_sorted = items.sort_values(ITEM_ID, kind="stable").drop_duplicates(ITEM_ID)
        index = ItemIndex(items_sorted[ITEM_ID].to_numpy())

        def idx(seq: object) -> np.ndarray:
            if seq is None or (isinstance(seq, float) and np.isnan(seq)):
                return np.zeros(0, dtype=np.int64)
            return index.to_index(np.asarray(seq, dtype=np.int64))

        by_split = {s: g.set_index(USER_ID) for s, g in labelled.groupby(SPLIT, sort=False)}
        valid = by_split.get("valid", labelled.iloc[:0].set_index(USER_ID))
        test = by_split.get("test", labelled.iloc[:0].set_index(USER_ID))
        train_only = by_split.get("train", labelled.iloc[:0].set_index(USER_ID))
        lonely = sorted(set(valid.index) ^ set(test.index))
        if lonely:
            raise DataError(f"labelled frame: user(s) {lonely[:10]} have a valid row without a "
                            "test row or the reverse; each evaluated user needs both")
        both = sorted(set(train_only.index) & set(valid.index))
        if both:
            raise DataError(f"labelled frame: user(s) {both[:10]} have both a train-only row and "
                            "valid/test rows")
        eval_users = np.asarray(sorted(valid.index), dtype=np.int64)
        valid, test = valid.loc[eval_users], test.loc[eval_users]

        valid_inputs = [idx(s) for s in valid[RECENT_ITEMS]]
        valid_targets = index.to_index(valid[ITEM_ID].to_numpy())
        test_inputs = [idx(s) for s in test[RECENT_ITEMS]]
        test_targets = index.to_index(test[ITEM_ID].to_numpy())

        hist: dict[int, np.ndarray] | None = None
        hist_w: dict[int, np.ndarray] | None = None
        if interactions is not None:
            ev = order_events(interactions)
            hist = {int(u): g[ITEM_ID].to_numpy() for u, g in ev.groupby(USER_ID, sort=True)}
            if EVENT_WEIGHT in ev.columns:
                hist_w = {int(u): g.to_numpy(np.float32) for u, g in
                          ev.groupby(USER_ID, sort=True)[EVENT_WEIGHT]}
            missing_u = [u for u in eval_users if int(u) not in hist]
            if missing_u:
                raise DataError(f"interactions: no events for evaluated user(s) {missing_u[:10]}")
            train_hist = [index.to_index(hist[int(u)][:-2]) for u in eval_users]
        else:
            train_hist = valid_inputs
        valid_seen = [np.unique(h) for h in train_hist]
        test_seen = [np.unique(np.concatenate([h, t, [v]]))
                     for h, t, v in zip(train_hist, test_inputs, valid_targets, strict=True)]
        n_train = np.asarray([len(h) for h in train_hist], dtype=np.int64)

        buckets = [activity_bucket(int(n)) for n in n_train]
        segments = {"activity": np.asarray(buckets, dtype=object)}
        for col in SEGMENT_COLUMNS:
            if col in valid.columns:
                segments[col] = valid[col].astype("string").fillna("unknown").to_numpy(dtype=object)

        train_users_only = np.asarray(sorted(train_only.index), dtype=np.int64)
        tonly = train_only.loc[train_users_only] if len(train_users_only) else train_only
        train_only_seqs = [np.concatenate([idx(s), index.to_index([i])])
                           for s, i in zip(tonly[RECENT_ITEMS], tonly[ITEM_ID], strict=True)]
        train_users = np.concatenate([eval_users, train_users_only])
        order = np.argsort(train_users, kind="stable")
        train_seqs_all = [*valid_inputs, *train_only_seqs]
        histories = weights = None
        if hist is not None:
            whole = [*train_hist, *(index.to_index(hist[int(u)]) if int(u) in hist else s
                                    for u, s in zip(train_users_only, train_only_seqs,
                                                    strict=True))]
            histories = [whole[i] for i in order]
            if hist_w is not None:
                w_all = [*(hist_w[int(u)][:-2] for u in eval_users),
                         *(hist_w[int(u)] if int(u) in hist_w else np.ones(len(s), np.float32)
                           for u, s in zip(train_users_only, train_only_seqs, strict=True))]
                weights = [w_all[i] for i in order]
        negs = None
        if negatives is not None:
            negs = _negatives_before(negatives, train_users[order], valid, index)
        return cls(
            index=index, items=items_sorted.reset_index(drop=True),
            train_users=train_users[order], train_seqs=[train_seqs_all[i] for i in order],
            eval_users=eval_users, valid_inputs=valid_inputs, valid_targets=valid_targets,
            test_inputs=test_inputs, test_targets=test_targets,
            valid_seen=valid_seen, test_seen=test_seen, segments=segments,
            histories=histories, history_weights=weights, negatives=negs,
        )

    def subset(self, user_ids: Iterable[int]) -> SequenceData:
        """The same item index restricted to ``user_ids`` (a federated partition)."""
        keep = set(int(u) for u in user_ids)
        tr = [i for i, u in enumerate(self.train_users) if int(u) in keep]
        ev = [i for i, u in enumerate(self.eval_users) if int(u) in keep]
        return self.take(tr, ev)

    def take(self, train_rows: list[int], eval_rows: list[int]) -> SequenceData:
        """The same item index with the train users at ``train_rows`` and the evaluated users at
        ``eval_rows`` (positions in ``train_users`` and ``eval_users``)."""
        tr, ev = train_rows, eval_rows
        return replace(
            self,
            train_users=self.train_users[tr], train_seqs=[self.train_seqs[i] for i in tr],
            eval_users=self.eval_users[ev],
            valid_inputs=[self.valid_inputs[i] for i in ev], valid_targets=self.valid_targets[ev],
            test_inputs=[self.test_inputs[i] for i in ev], test_targets=self.test_targets[ev],
            valid_seen=[self.valid_seen[i] for i in ev], test_seen=[self.test_seen[i] for i in ev],
            segments={k: v[ev] for k, v in self.segments.items()},
            histories=(None if self.histories is None
                       else [self.histories[i] for i in tr]),
            history_weights=(None if self.history_weights is None
                             else [self.history_weights[i] for i in tr]),
            negatives=None if self.negatives is None else [self.negatives[i] for i in tr],
        )

    def reindexed(self, index: ItemIndex) -> SequenceData:
        """The same data in another item index that holds every item of this one.

        Used by warm starts: the new data is expressed in the champion's index extended by the
        new items, so the champion's rows keep their meaning. ``items`` follows the new order
        (ids only known to ``index`` get empty text).
        """
        new_pos = index.to_index(self.index.item_ids, strict=False)
        if (new_pos == 0).any():
            lost = self.index.item_ids[new_pos == 0][:10].tolist()
            raise DataError(f"reindex: item ids {lost} are missing from the target item index")
        remap = np.concatenate([[0], new_pos]).astype(np.int64)

        def m(seqs: list[np.ndarray]) -> list[np.ndarray]:
            return [remap[s] for s in seqs]

        items = self.items.set_index(ITEM_ID).reindex(index.item_ids)
        for col in items.columns:
            if items[col].dtype == object or str(items[col].dtype).startswith("string"):
                items[col] = items[col].fillna("")
        return replace(
            self, index=index, items=items.rename_axis(ITEM_ID).reset_index(),
            train_seqs=m(self.train_seqs), valid_inputs=m(self.valid_inputs),
            valid_targets=remap[self.valid_targets], test_inputs=m(self.test_inputs),
            test_targets=remap[self.test_targets], valid_seen=m(self.valid_seen),
            test_seen=m(self.test_seen),
            histories=None if self.histories is None else m(self.histories),
            negatives=None if self.negatives is None else m(self.negatives),
        )
