"""Training samples: the (input, next-item target) pairs a recommender learns from.

One sample is one user's last ``model.max_len`` items (``train.samples`` "last", and always
under DP-SGD, where a user is the privacy unit), or one window of a user's whole training
history (``train.samples`` "windows"), so long histories train on every event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from recops.errors import TrainingError
from recops.training.sequences import SequenceData, left_pad

if TYPE_CHECKING:
    from recops.config import Settings


def training_pairs(seqs: Iterable[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded inputs and next-item targets [U, max_len] from sequences of >= 2 items."""
    xs, ys = [], []
    for s in seqs:
        if len(s) >= 2:
            xs.append(s[:-1])
            ys.append(s[1:])
    return left_pad(xs, max_len), left_pad(ys, max_len)


def history_windows(histories: Iterable[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Each history cut into windows of ``max_len + 1`` items from its most recent end, one
    item shared by neighbours, so every item but the first is a next-item target exactly once."""
    return [w for _, w in _windows(histories, max_len)]


def _windows(histories: Iterable[np.ndarray], max_len: int) -> list[tuple[int, np.ndarray]]:
    """(row of the history, window) of :func:`history_windows`."""
    out = []
    for r, h in enumerate(histories):
        for end in range(len(h), 1, -max_len):
            out.append((r, h[max(0, end - max_len - 1):end]))
    return out


def negatives_matrix(negs: list[np.ndarray], most: int) -> torch.Tensor:
    """LongTensor [S, D]: each sample's last ``most`` negative items, left-padded with 0
    (D: the longest, at least 1)."""
    width = max(1, min(most, max((len(n) for n in negs), default=0)))
    return left_pad(negs, width)


def weighted_samples(data: SequenceData, settings: Settings, length: int,
                     windows: bool) -> tuple[torch.Tensor, ...]:
    """(x, y) and, as the settings ask (never under DP), the targets' weights [S, L] (float,
    data.event_roles) and each sample's user negatives [S, D] (train.feedback_negatives)."""
    t = settings.train
    weigh = t.event_weights and data.history_weights is not None
    negs = t.feedback_negatives and data.negatives is not None
    if windows:
        cut = _windows(data.train_histories, length)
        rows = [r for r, _ in cut]
        seqs = [w for _, w in cut]
        wts = ([w for _, w in _windows(data.history_weights, length)]
               if weigh and data.history_weights is not None else None)
    else:
        rows = list(range(len(data.train_seqs)))
        seqs = data.train_seqs
        wts = data.train_seq_weights() if weigh else None
    keep = [i for i, sq in enumerate(seqs) if len(sq) >= 2]
    x, y = training_pairs([seqs[i] for i in keep], length)
    out: list[torch.Tensor] = [x, y]
    if wts is not None or negs:
        w = (left_pad([wts[i][1:] for i in keep], length, np.float32) if wts is not None
             else (y > 0).float())
        out.append(w)
    if negs and data.negatives is not None:
        out.append(negatives_matrix([data.negatives[rows[i]] for i in keep],
                                    t.max_feedback_negatives))
    return tuple(out)


def make_train_loader(data: SequenceData, settings: Settings, seed: int,
                      max_len: int | None = None) -> DataLoader[tuple[torch.Tensor, ...]]:
    """(x, y) left-padded [max_len], shuffled: one sample per user with >= 2 training items, or
    with ``train.samples`` "windows" (never under DP) every window of their whole history.
    Without DP, the targets' weights (``train.event_weights``) and the users' negatives
    (``train.feedback_negatives``) follow as a third and fourth tensor when asked for."""
    length = max_len or settings.model.max_len
    if settings.privacy.enabled:
        tensors: tuple[torch.Tensor, ...] = training_pairs(data.train_seqs, length)
    else:
        tensors = weighted_samples(data, settings, length, settings.train.samples == "windows")
    if not len(tensors[0]):
        raise TrainingError(f"no user has 2 or more training events ({data.n_users} users): "
                            "nothing to learn a next item from")
    return DataLoader(TensorDataset(*tensors), batch_size=settings.train.batch_size,
                      shuffle=True, generator=torch.Generator().manual_seed(seed))
