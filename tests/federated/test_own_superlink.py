"""A deployment-engine run on a SuperLink recops did not start, with SuperNodes that each read only
their own folder; no client's rows reach the server side or the other client."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The federation harness of benchmarks/bench_own_superlink.py (one for the test and the
    figure)."""
    spec = importlib.util.spec_from_file_location(
        "bench_own_superlink", REPO / "benchmarks" / "bench_own_superlink.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _arrays(obj: Any, depth: int = 0) -> list[np.ndarray]:
    """Every integer array inside an unpickled object (dicts, lists, dataclasses, frames)."""
    if depth > 6:
        return []
    if isinstance(obj, np.ndarray):
        return [obj] if obj.dtype.kind in "iu" else []
    if isinstance(obj, pd.DataFrame):
        return [obj[c].to_numpy() for c in obj.columns if obj[c].dtype.kind in "iu"]
    if isinstance(obj, dict):
        values: Any = obj.values()
    elif isinstance(obj, list | tuple):
        values = obj
    elif hasattr(obj, "__dict__"):
        values = vars(obj).values()
    else:
        return []
    return [a for v in values for a in _arrays(v, depth + 1)]


def files_with_rows(root: Path, user_ids: set[int]) -> list[str]:
    """The files under ``root`` that hold any of ``user_ids``: as decimal text or int64 bytes
    anywhere, in a Parquet ``user_id`` column, or in an integer array of a pickle."""
    text = [str(u).encode() for u in user_ids]
    binary = [np.int64(u).tobytes() for u in user_ids]
    wanted = np.asarray(sorted(user_ids), dtype=np.int64)
    hits = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        raw = path.read_bytes()
        found = any(n in raw for n in text) or any(n in raw for n in binary)
        if not found and path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            found = "user_id" in frame and bool(np.isin(frame["user_id"], wanted).any())
        if not found and path.suffix == ".pkl":
            obj = pickle.loads(raw)  # noqa: S301 - files the run under test wrote
            found = any(np.isin(a, wanted).any() for a in _arrays(obj))
        if found:
            hits.append(str(path.relative_to(root)))
    return hits


def test_supernodes_with_their_own_folders_on_a_superlink_recops_did_not_start(
        bench, tmp_path) -> None:
    from federated.partition import partition_users, write_partitions
    from recops.training.sequences import SequenceData

    silos = bench.make_silos(n_users=240, n_items=120, n_clients=2)
    config = bench.write_config(tmp_path / "settings.yaml")
    server_home = tmp_path / "server-home"
    bench.land_server_data(config, server_home, silos)
    folders = [bench.write_silo(tmp_path / f"silo-{c}", ev)
               for c, ev in enumerate(silos.client_events)]
    ids = [set(ev["user_id"].tolist()) for ev in silos.client_events]

    # The check finds a client's rows where they are: its own folder (Parquet), and the
    # pickles the partition tool would write from them (what a server that read them keeps).
    assert files_with_rows(folders[0], ids[0]) == ["interactions.parquet"]
    leaked = SequenceData.from_interactions(silos.client_events[0], silos.items, 20)
    write_partitions(leaked, partition_users(leaked.train_users, 2, seed=0),
                     tmp_path / "control", scheme="iid")
    assert "partitions/server-valid.pkl" in files_with_rows(tmp_path / "control", ids[0])
    (tmp_path / "log.txt").write_text(f"user {min(ids[1])} clicked\n")
    assert files_with_rows(tmp_path, ids[1]) == ["log.txt", "silo-1/interactions.parquet"]
    (tmp_path / "log.txt").unlink()

    with bench.federation(tmp_path / "federation", folders) as fed:
        bench.run_recops(config, server_home, fed, clients=2, rounds=2, run_id="own")
        # recops stopped nothing it did not start: the federation still runs.
        assert fed.link.poll() is None and all(n.poll() is None for n in fed.nodes)
        run_dir = server_home / "runs" / "own"
        rows = json.loads((run_dir / "federated_rounds.json").read_text())
        assert [r["round"] for r in rows] == [0, 1, 2]
        assert [r["participants"] for r in rows[1:]] == [2, 2]  # both SuperNodes trained
        assert rows[-1]["train_loss"] < rows[1]["train_loss"] or \
            rows[-1]["global_ndcg@10"] > rows[0]["global_ndcg@10"]
        # recops started no Flower process of its own: only `flwr run` logged under the run.
        assert sorted(p.name for p in (run_dir / "federated").glob("*.log")) == ["flwr-run.log"]
        conf = (server_home / "flwr" / "own" / "config.toml").read_text()
        assert f'address = "{fed.address}"' in conf and str(fed.ca_cert) in conf
        record = json.loads((run_dir / "train.json").read_text())
        assert record["mode"] == "federated" and record["federated"]["engine"] == "deployment"
        # Each SuperNode trained on its own folder: the ClientApps ran in its processes.
        for node_dir in fed.node_dirs:
            assert "Sent successfully" in (node_dir / "supernode.log").read_text()
        node_dirs, link_dir = fed.node_dirs, fed.link_dir

    # No client's rows on the server side (recops' home, the SuperLink's folder) nor at the
    # other client (its data folder, working directory, home and FLWR_HOME).
    for c, own in enumerate(ids):
        other = 1 - c
        for root in (server_home, link_dir, node_dirs[other], folders[other]):
            assert files_with_rows(root, own) == [], f"client {c}'s rows reached {root}"
