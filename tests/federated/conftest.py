"""Tiny synthetic data and settings for the federated tests (kept small: 2 shared CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_overrides(**extra: object) -> dict:
    base = {"data.dataset": "synthetic", "model.d_model": 16, "model.n_layers": 1,
            "model.n_heads": 1, "model.max_len": 20, "model.dropout": 0.1,
            "train.batch_size": 32, "train.lr": 0.005, "train.num_threads": 1,
            "federated.rounds": 2, "federated.num_cpus_per_client": 1.0}
    base.update(extra)
    return base


@pytest.fixture(scope="session")
def tiny_data():
    from recops.data.synthetic import generate
    from recops.training.sequences import SequenceData

    t = generate(n_users=200, n_items=100, n_interactions=6000, n_clusters=4, days=10, seed=1)
    return SequenceData.from_interactions(t.interactions, t.items, 20)


@pytest.fixture
def make_settings(home: Path):
    from recops.config import load_settings

    def make(**extra: object):
        return load_settings(overrides=tiny_overrides(**extra))

    return make
