"""Real Flower runs: CLI simulation with failing clients; TLS deployment with DP accounting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.federated.conftest import tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config_file(tmp_path: Path, **extra: object) -> Path:
    nested: dict = {}
    for dotted, value in tiny_overrides(**extra).items():
        node = nested
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    nested["data"]["synthetic"] = {"n_users": 200, "n_items": 100, "n_interactions": 6000,
                                   "n_clusters": 4, "days": 10}
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(nested))
    return path


def _land_synthetic(cfg: Path) -> None:
    """The configured synthetic dataset in the lake, as `recops ingest` + `validate` leave it."""
    from recops import schema
    from recops.config import load_settings
    from recops.core.lake import Lake
    from recops.data.loaders import load_dataset

    settings = load_settings(cfg)
    tables = load_dataset(settings)
    lake = Lake(settings.paths.lake)
    for name, df in ((schema.INTERACTIONS, tables.interactions), (schema.ITEMS, tables.items),
                     (schema.USERS, tables.users)):
        lake.append(name, df, source="test")


def _assert_stopped(run_dir: Path) -> None:
    """Every process the run started (pid files) is gone."""
    for pid_file in (run_dir / "federated").glob("*.pid"):
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_simulation_of_10_clients_improves_and_survives_failing_clients(
        tmp_path, home, monkeypatch) -> None:
    from typer.testing import CliRunner

    import federated.runner as runner
    from federated.partition import PARTITION_DIR, client_file
    from recops.cli import app
    from recops.training.models import load_checkpoint, read_checkpoint

    real_write = runner.write_partitions

    def write_then_break_two(data, parts, run_dir, **kw):
        folder = real_write(data, parts, run_dir, **kw)
        # Two clients lose their data: they raise in every round they are asked to train.
        (Path(run_dir) / PARTITION_DIR / client_file(3)).unlink()
        (Path(run_dir) / PARTITION_DIR / client_file(7)).write_bytes(b"corrupt")
        return folder

    monkeypatch.setattr(runner, "write_partitions", write_then_break_two)
    cfg = _config_file(tmp_path)
    _land_synthetic(cfg)
    result = CliRunner().invoke(app, ["--config", str(cfg), "federated", "--engine", "simulation",
                                      "--clients", "10", "--rounds", "2", "--partition", "iid",
                                      "--strategy", "fedavg", "--run-id", "sim10"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = home / "runs" / "sim10"
    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert (r["participants"], r["sampled"], r["failures"]) == (8, 10, 2)
    assert rows[-1]["global_ndcg@10"] > rows[0]["global_ndcg@10"]  # the global model learns
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    assert (run_dir / "federated_rounds.png").stat().st_size > 1000
    assert "NDCG@10" in result.output and "sim10" in result.output
    ckpt = read_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["training_mode"] == "federated" and ckpt["federated"]["num_clients"] == 10
    model = load_checkpoint(ckpt)
    assert model.n_items == ckpt["n_items"]
    record = json.loads((run_dir / "train.json").read_text())
    assert record["mode"] == "federated" and record["federated"]["engine"] == "simulation"
    assert record["valid_metrics"]["ndcg@10"] == pytest.approx(rows[-1]["global_ndcg@10"])
    _assert_stopped(run_dir)


def test_deployment_with_tls_and_dp_accounts_every_spend(make_settings, tiny_data,
                                                         tmp_path) -> None:
    from federated.runner import train_federated
    from recops.training.privacy import PrivacyLedger, epsilon_for

    s = make_settings(**{"federated.num_clients": 2, "federated.rounds": 1,
                         "federated.client_dp": "fixed", "federated.client_noise_multiplier": 1.0,
                         "federated.client_clipping_norm": 5.0, "privacy.enabled": True,
                         "privacy.clipping": "flat", "privacy.budget_epsilon": 1000.0})
    run_dir = s.paths.runs / "deploy2"
    res = train_federated(s, tiny_data, run_dir=run_dir, engine="deployment")
    fed_dir = run_dir / "federated"
    assert len(list(fed_dir.glob("supernode-*.log"))) == 2
    assert "root-certificates" in (s.paths.flwr_home / "deploy2" / "config.toml").read_text()
    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    assert rows[-1]["participants"] == 2
    entries = PrivacyLedger(s.paths.privacy_ledger).entries()
    assert sorted(e.unit for e in entries) == ["client", "user"]
    for e in entries:  # recorded ε is recomputed from the recorded parameters
        assert e.epsilon == pytest.approx(epsilon_for(e.noise_multiplier, e.sample_rate,
                                                      e.steps, e.delta, e.accountant))
    client = next(e for e in entries if e.unit == "client")
    assert (client.steps, client.sample_rate, client.noise_multiplier) == (1, 1.0, 1.0)
    assert rows[-1]["epsilon"]["client_level"] == pytest.approx(client.epsilon)
    assert res.privacy["components"]["client_level"]["epsilon"] == pytest.approx(client.epsilon)
    _assert_stopped(run_dir)
