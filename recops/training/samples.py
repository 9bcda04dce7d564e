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
    out = []
    for h in histories:
        for end in range(len(h), 1, -max_len):
            out.append(h[max(0, end - max_len - 1):end])
    return out


def make_train_loader(data: SequenceData, settings: Settings, seed: int,
                      max_len: int | None = None) -> DataLoader[tuple[torch.Tensor, ...]]:
    """(x, y) left-padded [max_len], shuffled: one sample per user with >= 2 training items, or
    with ``train.samples`` "windows" (never under DP) every window of their whole history."""
    length = max_len or settings.model.max_len
    if settings.train.samples == "windows" and not settings.privacy.enabled:
        x, y = training_pairs(history_windows(data.train_histories, length), length)
    else:
        x, y = training_pairs(data.train_seqs, length)
    if not len(x):
        raise TrainingError(f"no user has 2 or more training events ({data.n_users} users): "
                            "nothing to learn a next item from")
    return DataLoader(TensorDataset(x, y), batch_size=settings.train.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))
