"""The RecBole peer's export (benchmarks/peer_recbole.py) without RecBole: the atomic file's row
order, the split RecBole derives from it, and recops' ranking of precomputed scores."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_recbole",
                                                  REPO / "benchmarks" / "peer_recbole.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _events() -> pd.DataFrame:
    # (user, item, second). User 1's last two events tie at t=30 (items 10 and 9: numeric
    # order 9 < 10, string order "10" < "9"); user 2's valid ties with a training event; user 3
    # has 2 events (train only); user 4's three events all share one second. Real-size epoch
    # seconds, which float32 (RecBole's float fields) cannot tell apart.
    t0 = 1_500_000_000
    rows = [(1, 5, 10), (1, 10, 30), (1, 7, 20), (1, 9, 30),
            (2, 4, 5), (2, 3, 5), (2, 8, 6), (2, 1, 7),
            (3, 2, 1), (3, 6, 2),
            (4, 12, 9), (4, 11, 9), (4, 13, 9)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "t"]).sample(frac=1.0, random_state=3)
    df["event_timestamp"] = pd.to_datetime(df.pop("t") + t0, unit="s", utc=True)
    return df.reset_index(drop=True)


def _items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": np.arange(1, 16), "title": [f"m{i}" for i in range(1, 16)]})


def test_atomic_rows_in_protocol_order(peer: ModuleType, tmp_path: Path) -> None:
    inter = peer.write_atomic(_events(), _items(), tmp_path, "toy")
    df = pd.read_csv(inter, sep="\t")
    assert list(df.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert df["user_id:token"].tolist() == [1] * 4 + [2] * 4 + [3] * 2 + [4] * 3
    assert df["item_id:token"].tolist() == [5, 7, 9, 10, 3, 4, 8, 1, 2, 6, 11, 12, 13]
    assert df["timestamp:float"].iloc[0] == 1_500_000_010.0
    items = pd.read_csv(tmp_path / "toy" / "toy.item", sep="\t")
    assert items["item_id:token"].tolist() == list(range(1, 16))  # unrated items too


def test_recbole_split_equals_recops(peer: ModuleType, tmp_path: Path) -> None:
    from recops.training.sequences import SequenceData

    ev = _events()
    data = SequenceData.from_interactions(ev, _items(), 50)
    theirs = peer.read_split(peer.write_atomic(ev, _items(), tmp_path, "toy"))
    ours = peer.expected_split(data)
    pd.testing.assert_frame_equal(theirs.reset_index(drop=True), ours.reset_index(drop=True),
                                  check_dtype=False)
    assert ours.set_index("user_id").loc[1].tolist() == [9, 10]
    assert ours.set_index("user_id").loc[4].tolist() == [12, 13]
    assert 3 not in set(ours.user_id)  # < 3 events: trained on, not evaluated, by both
    # The same file in any other row order would not give recops' split.
    shuffled = tmp_path / "shuffled.inter"
    pd.read_csv(tmp_path / "toy" / "toy.inter", sep="\t").iloc[::-1].to_csv(
        shuffled, sep="\t", index=False)
    assert not peer.read_split(shuffled).equals(theirs)


def test_precomputed_scores_rank_as_recops_ranks(peer: ModuleType) -> None:
    from recops.training.evaluation import rank_targets
    from recops.training.models.baselines import Pop
    from recops.training.sequences import SequenceData

    data = SequenceData.from_interactions(_events(), _items(), 50)
    model = Pop(data.n_items)
    model.fit_sequences(data.train_seqs)
    # The runner's output: users and item columns in another order than recops'.
    users = data.eval_users[::-1]
    item_ids = data.index.item_ids[::-1]
    scores = model.score(torch.zeros((len(users), 1), dtype=torch.long)).numpy()[:, 1:][:, ::-1]
    out = {"users": users, "item_ids": item_ids, "test_scores": scores,
           "test_targets": data.index.to_ids(data.test_targets)[::-1]}
    table = peer.recops_order(data, out, "test")
    got, ranks = peer.metrics(data, table, "test")
    want, _ = rank_targets(model, data, "test")
    np.testing.assert_array_equal(ranks, want)
    bad = {**out, "test_targets": out["test_targets"][::-1]}
    with pytest.raises(SystemExit, match="targets differ"):
        peer.recops_order(data, bad, "test")
