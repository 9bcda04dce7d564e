"""SecAgg+ through `flwr run` on the simulation engine (virtual clients), one client failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_simulation_with_secagg_trains_and_records_it(make_settings, tiny_data,
                                                       monkeypatch) -> None:
    import federated.runner as runner
    from federated.partition import PARTITION_DIR, client_file

    real_write = runner.write_partitions

    def write_then_break_one(data, parts, run_dir, **kw):
        folder = real_write(data, parts, run_dir, **kw)
        # Client 2 shares its keys, then fails when asked for its masked update.
        (Path(run_dir) / PARTITION_DIR / client_file(2)).write_bytes(b"corrupt")
        return folder

    monkeypatch.setattr(runner, "write_partitions", write_then_break_one)
    s = make_settings(**{"federated.num_clients": 4, "federated.rounds": 2,
                         "federated.secure_aggregation": True, "federated.secagg_num_shares": 3,
                         "federated.secagg_reconstruction_threshold": 2,
                         "federated.secagg_clipping_range": 5.0})
    run_dir = s.paths.runs / "secagg4"
    res = runner.train_federated(s, tiny_data, run_dir=run_dir, engine="simulation")
    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert (r["participants"], r["sampled"], r["failures"]) == (3, 4, 1)
    assert rows[-1]["global_ndcg@10"] > rows[0]["global_ndcg@10"]  # the global model learns
    meta = res.checkpoint["federated"]["secure_aggregation"]
    assert meta["enabled"] and meta["protocol"] == "SecAgg+" and meta["num_shares"] == 3
    assert res.privacy is None  # SecAgg+ alone is no DP: nothing is spent or claimed
    log = (run_dir / "federated" / "flwr-run.log").read_text()
    assert "Secure aggregation completed" in log
