"""`recops validate` and `recops quarantine` through the CLI entry point, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from recops import schema
from recops.core.lake import Lake
from recops.data.tables import Tables, stage
from tests.conftest import run_cli
from tests.validation.frames import SOURCE, make_interactions, make_items, make_users

pytestmark = pytest.mark.integration



def test_validate_file_then_land(monkeypatch, capsys, lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "new_events.csv"
    make_interactions(80, seed=2).to_csv(path, index=False)
    code, out, _ = run_cli(monkeypatch, capsys, "validate", str(path))
    assert code == 0, out
    assert "new_events.csv: passed" in out and "FAIL" not in out
    assert "values_to_be_in_set" in out and "Data Docs:" in out
    assert len(lake.read(schema.INTERACTIONS)) == 300  # checking alone lands nothing

    code, out, _ = run_cli(monkeypatch, capsys, "validate", str(path), "--land")
    assert code == 0 and "landed; dataset version" in out
    assert len(lake.read(schema.INTERACTIONS)) == 380


def test_failing_file_quarantine_show_release(monkeypatch, capsys, lake: Lake,
                                              tmp_path: Path) -> None:
    bad = make_interactions(60, seed=9)
    bad.loc[0, schema.RATING] = 6.0
    path = tmp_path / "interactions.csv"
    bad.to_csv(path, index=False)
    code, out, err = run_cli(monkeypatch, capsys, "validate", str(path), "--land")
    assert code == 1, out + err
    assert "FAIL interactions.range" in out and "quarantined: " in out
    qid = out.split("quarantined: ")[1].split()[0].rstrip("/").rsplit("/", 1)[-1]

    code, out, _ = run_cli(monkeypatch, capsys, "quarantine", "list")
    assert code == 0 and qid in out and "quarantined" in out and "interactions=60" in out
    code, out, _ = run_cli(monkeypatch, capsys, "quarantine", "show", qid)
    assert code == 0 and "interactions.range" in out and "rows=60" in out

    fixed = tmp_path / "fixed.csv"
    bad.assign(**{schema.RATING: 5.0}).to_csv(fixed, index=False)
    code, out, _ = run_cli(monkeypatch, capsys, "quarantine", "release", qid, "--file", str(fixed))
    assert code == 0 and f"{qid}: released" in out
    assert len(lake.read(schema.INTERACTIONS)) == 360
    code, out, _ = run_cli(monkeypatch, capsys, "quarantine", "list")
    assert "released" in out


def test_validate_staged_batch_by_id(monkeypatch, capsys, settings) -> None:
    staged_id = stage(settings.paths.staging,
                      Tables(make_interactions(100), make_items(), make_users(), source=SOURCE))
    code, out, _ = run_cli(monkeypatch, capsys, "validate", staged_id)
    assert code == 0 and "accepted" in out and "landed; dataset version" in out
    assert len(Lake(settings.paths.lake).read(schema.USERS)) == 40


@pytest.mark.parametrize(("args", "message"), [
    (["validate", "{tmp}/missing.csv"], "no such file or folder"),
    (["validate", "{tmp}/empty.csv"], "empty.csv: the file is empty"),
    (["validate", "{tmp}/empty.csv", "--table", "ratings"], "--table 'ratings' is not one of"),
    (["quarantine", "show", "nope"], "no quarantined batch 'nope'"),
    (["quarantine", "release", "nope"], "no quarantined batch 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path: Path, args: list[str],
                                          message: str) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    code, out, err = run_cli(monkeypatch, capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert message in err and "Traceback" not in err
