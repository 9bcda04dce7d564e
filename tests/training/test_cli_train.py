"""`recops train` and `recops evaluate` through the real CLI entry point."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.audit import AuditLog
from recops.core.lake import Lake
from tests.conftest import run_cli
from tests.training.conftest import cyclic_interactions


@pytest.fixture
def lake(home) -> Lake:
    inter, items = cyclic_interactions(n_users=60, n_items=20)
    lake = Lake(load_settings().paths.lake)
    lake.append(schema.INTERACTIONS, inter, source="test")
    lake.append(schema.ITEMS, items, source="test")
    lake.append(schema.USERS, pd.DataFrame({"user_id": sorted(inter.user_id.unique())}),
                source="test")
    return lake


SMALL = ["--max-len", "8", "--d-model", "16", "--epochs", "2", "--no-progress"]


def test_train_then_evaluate(monkeypatch, capsys, lake, home) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "train", "--run-id", "r1", *SMALL)
    assert code == 0, err
    assert "ndcg@10" in out and "validation" in out
    rdir = home / "runs" / "r1"
    assert (rdir / "checkpoint.pt").is_file() and (rdir / "labels.parquet").is_file()
    assert AuditLog(load_settings().paths.audit_log).records()[-1]["stage"] == "train"

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(rdir))
    assert code == 0, err
    report = json.loads((rdir / "evaluation_test.json").read_text())
    assert report["split"] == "test" and 0 <= report["overall"]["ndcg@10"] <= 1
    assert "activity=<20" in report["per_segment"] and "activity=<20" in out

    target = home / "eval.json"
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(rdir / "checkpoint.pt"),
                           "--split", "valid", "--k", "5", "-o", str(target))
    assert code == 0, err
    assert "hr@5" in json.loads(target.read_text())["overall"]


@pytest.mark.slow
@pytest.mark.integration
def test_train_in_two_torchrun_processes(monkeypatch, capsys, lake, home) -> None:
    """`recops train --nproc-per-node 2`: torchrun, gloo, rank 0's model kept in the run."""
    from recops.core.supervisor import free_port

    code, out, err = run_cli(monkeypatch, capsys, "train", "--run-id", "d2", *SMALL,
                             "--nproc-per-node", "2",
                             "--rdzv-endpoint", f"127.0.0.1:{free_port()}")
    assert code == 0, out + err
    rdir = home / "runs" / "d2"
    info = json.loads((rdir / "train.json").read_text())
    assert info["distributed"] == {"world_size": 2, "backend": "gloo", "nproc_per_node": 2,
                                   "nnodes": 1}
    assert info["epochs_run"] == 2 and 0 < info["valid_metrics"]["ndcg@10"] <= 1
    assert (rdir / "checkpoint.pt").is_file()
    # The job folder keeps torchrun's log only: the ranks' data and settings are gone.
    assert sorted(p.name for p in (rdir / "ddp").iterdir()) == ["torchrun.log"]
    assert "ndcg@10" in out


def test_bad_inputs_exit_2_with_one_line(monkeypatch, capsys, home, tmp_path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "train", *SMALL)
    assert code == 2 and "holds no interactions" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--kind", "gru", *SMALL)
    assert code == 2 and "model.kind" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--max-minutes", "0", *SMALL)
    assert code == 2 and "train.max_minutes" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", *SMALL)
    assert code == 2 and "--resume needs --run-id" in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path))
    assert code == 2 and "without checkpoint.pt" in err
    (tmp_path / "bad.pt").write_text("nope")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "bad.pt"))
    assert code == 2 and "cannot be read" in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "bad.pt"),
                           "--split", "train")
    assert code == 2 and "--split" in err


def test_train_ease_from_the_cli_and_evaluate_it(monkeypatch, capsys, lake, home) -> None:
    from recops.training.models import read_checkpoint

    code, out, err = run_cli(monkeypatch, capsys, "train", "--kind", "ease", "--run-id", "e1",
                             *SMALL)
    assert code == 0, err
    ckpt = read_checkpoint(home / "runs" / "e1" / "checkpoint.pt")
    assert ckpt["kind"] == "ease" and ckpt["model_settings"]["ease_lambda"] == 200.0
    assert ckpt["valid_metrics"]["ndcg@10"] > 0.5  # the cyclic walk, learnt in one fit
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(home / "runs" / "e1"))
    assert code == 0, err
    report = json.loads((home / "runs" / "e1" / "evaluation_test.json").read_text())
    assert report["kind"] == "ease" and report["overall"]["ndcg@10"] > 0.5
