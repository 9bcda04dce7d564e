"""`recops ingest` and `recops datasets` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recops import schema
from recops.config import load_settings
from recops.core.audit import AuditLog, verify
from recops.core.lake import Lake
from recops.data.tables import read_staged
from tests.conftest import run_cli
from tests.data.conftest import lake_with_items as items_lake
from tests.data.conftest import write_ml100k

REPO = Path(__file__).resolve().parents[2]



@pytest.fixture
def small_synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_DATA__SYNTHETIC__N_USERS", "30")
    monkeypatch.setenv("RECOPS_DATA__SYNTHETIC__N_ITEMS", "40")
    monkeypatch.setenv("RECOPS_DATA__SYNTHETIC__N_INTERACTIONS", "500")


def test_ingest_synthetic_stages_and_audits(monkeypatch, capsys, small_synthetic, home) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--dataset", "synthetic")
    assert code == 0, err
    staged_id = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("staged id:"))
    settings = load_settings()
    t = read_staged(settings.paths.staging, staged_id)
    assert (len(t.interactions), len(t.items), len(t.users)) == (500, 40, 30)
    assert "500" in out and "next: recops validate" in out
    records = AuditLog(settings.paths.audit_log).records()
    assert [r["stage"] for r in records] == ["ingest"]
    assert records[0]["outputs"]["staged_id"] == staged_id
    assert verify(AuditLog(settings.paths.audit_log)).ok
    # Same data again: same staged id (content-addressed), nothing duplicated.
    code, out2, _ = run_cli(monkeypatch, capsys, "ingest", "--dataset", "synthetic")
    assert code == 0 and f"staged id: {staged_id}" in out2
    assert len(list(settings.paths.staging.iterdir())) == 1


def test_ingest_movielens_from_data_root(monkeypatch, capsys, tmp_path, home) -> None:
    write_ml100k(tmp_path / "mirror" / "ml-100k")
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--dataset", "ml-100k",
                             "--data-root", str(tmp_path / "mirror"), "--no-download")
    assert code == 0, err
    assert f"movielens:ml-100k ({tmp_path / 'mirror' / 'ml-100k'})" in out
    rec = AuditLog(load_settings().paths.audit_log).records()[-1]
    assert rec["inputs"]["from"] == str(tmp_path / "mirror" / "ml-100k")


@pytest.mark.parametrize("args, expect", [
    (["ingest", "--dataset", "ml-7b"], "data.dataset"),
    (["ingest", "--dataset", "ml-1m", "--no-download", "--data-root", "/nonexistent/x"],
     "--data-root"),
    (["ingest", "--file", "/nonexistent/batch.csv"], "file not found"),
])
def test_ingest_bad_flags_one_line_exit_2(monkeypatch, capsys, home, args, expect) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert expect in err and "Traceback" not in err
    assert err.strip().startswith("error:")


def test_ingest_bad_env_value_names_the_setting(monkeypatch, capsys, home) -> None:
    monkeypatch.setenv("RECOPS_DATA__SYNTHETIC__N_USERS", "many")
    code, _, err = run_cli(monkeypatch, capsys, "ingest", "--dataset", "synthetic")
    assert code == 2 and "data.synthetic.n_users" in err
    assert "RECOPS_DATA__SYNTHETIC__N_USERS" in err  # the env hint survives rich markup


@pytest.fixture
def lake_with_items(home: Path) -> Lake:
    """A lake that already holds items 1 and 2 and user 1, as after a first dataset."""
    return items_lake(load_settings().paths.lake)


def test_ingest_file_after_a_dataset(monkeypatch, capsys, tmp_path, lake_with_items) -> None:
    settings = load_settings()
    batch = tmp_path / "events.csv"
    batch.write_text("user_id,item_id,rating,event_timestamp\n1,2,4.0,2026-03-01T00:00:00Z\n"
                     "7,1,,2026-03-01T00:01:00Z\n")
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--file", str(batch))
    assert code == 0, err
    staged_id = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("staged id:"))
    t = read_staged(settings.paths.staging, staged_id)
    assert sorted(t.users[schema.USER_ID]) == [1, 7]
    assert t.interactions[schema.EVENT_TYPE].tolist() == ["rating", "view"]
    manifest = json.loads((settings.paths.staging / staged_id / "manifest.json").read_text())
    assert manifest["source"] == f"file:{batch.resolve()}"


def test_datasets_lists_local_copies(monkeypatch, capsys, tmp_path, home) -> None:
    write_ml100k(tmp_path / "mirror" / "ml-100k")
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "--data-root",
                           str(tmp_path / "mirror"))
    assert code == 0
    row = next(line for line in out.splitlines() if "ml-100k" in line)
    assert "yes" in row
    assert "no" in next(line for line in out.splitlines() if "ml-1m " in line)


def test_console_script_exit_code_without_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: a bad flag is one line and exit 2."""
    env = {"PATH": "/usr/bin:/bin", "RECOPS_HOME": str(tmp_path / "h"), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "recops.cli", "ingest", "--dataset", "nope"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "data.dataset" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_ingest_file_url_with_a_column_map(monkeypatch, capsys, tmp_path,
                                           lake_with_items) -> None:
    settings = load_settings()
    batch = tmp_path / "shop.jsonl"
    batch.write_text('{"customer": 1, "sku": 2, "when": "2026-03-01T00:00:00Z"}\n'
                     '{"customer": 5, "sku": 1, "when": 1772323260}\n')
    args = ["ingest", "--file", batch.as_uri(), "--map", "customer=user_id", "--map",
            "sku=item_id", "--map", "when=event_timestamp"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    staged_id = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("staged id:"))
    t = read_staged(settings.paths.staging, staged_id)
    assert t.interactions[schema.USER_ID].tolist() == [1, 5]
    assert t.interactions[schema.EVENT_TYPE].tolist() == ["view", "view"]
    code, _, err = run_cli(monkeypatch, capsys, *args[:3])  # without the map: which column
    assert code == 2 and "missing column(s) ['user_id', 'item_id', 'event_timestamp']" in err
    code, _, err = run_cli(monkeypatch, capsys, *args[:3], "--map", "customer")
    assert code == 2 and "expected YOURS=CANONICAL" in err
