"""Partitioning users across clients: disjoint, complete, non-IID when asked, files per client."""

from __future__ import annotations

import numpy as np
import pytest

from federated.partition import (
    client_file,
    load_partition,
    load_server_valid,
    partition_users,
    read_manifest,
    taste_clusters,
    write_partitions,
)
from recops.errors import ConfigError, DataError


def _skew(parts: list[np.ndarray], users: np.ndarray, clusters: np.ndarray) -> float:
    """Mean share of each client's dominant cluster (1.0 = every client holds one cluster)."""
    label = dict(zip(users.tolist(), clusters.tolist(), strict=True))
    shares = []
    for p in parts:
        _, counts = np.unique([label[u] for u in p.tolist()], return_counts=True)
        shares.append(counts.max() / counts.sum())
    return float(np.mean(shares))


def test_iid_split_is_disjoint_complete_and_balanced() -> None:
    users = np.arange(1000, 1103)
    parts = partition_users(users, 10, "iid", seed=3)
    flat = np.concatenate(parts)
    assert sorted(flat.tolist()) == users.tolist()  # every user exactly once
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = partition_users(users, 10, "iid", seed=3)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))  # seeded


def test_dirichlet_split_is_more_skewed_than_iid_and_leaves_no_client_empty() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(600)
    clusters = rng.integers(0, 6, size=600).astype(str).astype(object)
    iid = partition_users(users, 10, "iid", seed=1)
    skewed = partition_users(users, 10, "dirichlet", clusters=clusters, alpha=0.1, seed=1)
    assert sorted(np.concatenate(skewed).tolist()) == users.tolist()
    assert all(len(p) > 0 for p in skewed)
    assert _skew(skewed, users, clusters) > _skew(iid, users, clusters) + 0.2


def test_taste_clusters_follow_the_genres_of_the_history(tiny_data) -> None:
    labels = taste_clusters(tiny_data)
    assert len(labels) == tiny_data.n_users
    genres = set(tiny_data.items["genres"].str.split("|").str[0])
    assert set(labels) <= genres | {"<none>"}
    assert len(set(labels)) > 1


@pytest.mark.parametrize("kwargs, error, words", [
    ({"num_clients": 1}, ConfigError, "at least 2"),
    ({"num_clients": 500}, DataError, "every client needs at least one user"),
    ({"num_clients": 3, "scheme": "shards"}, ConfigError, "'iid' or 'dirichlet'"),
    ({"num_clients": 3, "scheme": "dirichlet"}, DataError, "cluster label"),
    ({"num_clients": 3, "scheme": "dirichlet", "clusters": np.zeros(100), "alpha": 0.0},
     ConfigError, "dirichlet_alpha"),
])
def test_bad_partition_requests_name_the_problem(kwargs, error, words) -> None:
    with pytest.raises(error, match=words):
        partition_users(np.arange(100), **kwargs)


def test_each_client_file_holds_only_its_users(tiny_data, tmp_path) -> None:
    parts = partition_users(tiny_data.train_users, 4, "iid", seed=0)
    write_partitions(tiny_data, parts, tmp_path, scheme="iid")
    manifest = read_manifest(tmp_path)
    assert manifest["num_partitions"] == 4 and manifest["n_users"] == tiny_data.n_users
    for pid, users in enumerate(parts):
        sub = load_partition(tmp_path, pid, 4)
        assert sorted(sub.train_users.tolist()) == users.tolist()
        assert set(sub.eval_users.tolist()) <= set(users.tolist())
        assert sub.n_items == tiny_data.n_items  # the catalogue is shared, users are not
    assert load_server_valid(tmp_path).n_users == tiny_data.n_users


def test_a_client_refuses_a_partition_that_does_not_match(tiny_data, tmp_path) -> None:
    parts = partition_users(tiny_data.train_users, 3, "iid", seed=0)
    folder = write_partitions(tiny_data, parts, tmp_path, scheme="iid")
    with pytest.raises(DataError, match="num-partitions=5"):
        load_partition(tmp_path, 0, 5)
    with pytest.raises(DataError, match="outside 0..2"):
        load_partition(tmp_path, 3, 3)
    (folder / client_file(1)).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="unreadable"):
        load_partition(tmp_path, 1, 3)
    (folder / client_file(2)).unlink()
    with pytest.raises(DataError, match="missing"):
        load_partition(tmp_path, 2, 3)
    with pytest.raises(DataError, match="no partition manifest"):
        load_partition(tmp_path / "elsewhere", 0, 3)
