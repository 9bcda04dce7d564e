"""Data-subject access and erasure: the user's rows leave the lake, the log says what was
superseded, models trained on the old batches are marked, and the audit chain still holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recops import schema
from tests.compliance.conftest import small_tables, tiny_checkpoint
from tests.conftest import run_cli_text

USER = 7
RUN = "run-1"


def _lake(settings) -> tuple[str, dict[str, pd.DataFrame]]:  # noqa: ANN001
    """The lake (two interaction batches); same content, same version, in any home."""
    from recops.core.lake import Lake

    t = small_tables()
    lake = Lake(settings.paths.lake)
    inter = t["interactions"].sort_values("event_timestamp").reset_index(drop=True)
    half = len(inter) // 2
    lake.append(schema.ITEMS, t["items"], source="test")
    lake.append(schema.USERS, t["users"], source="test")
    lake.append(schema.INTERACTIONS, inter.iloc[:half], source="test:day1")
    lake.append(schema.INTERACTIONS, inter.iloc[half:], source="test:day2")
    t["interactions"] = inter
    return lake.dataset_version(), t


def _build(settings) -> dict[str, Any]:  # noqa: ANN001
    from recops.release import registry
    from recops.training.privacy import PrivacyLedger, PrivacySpend

    version, t = _lake(settings)
    inter = t["interactions"]
    rdir = settings.paths.runs / RUN
    rdir.mkdir(parents=True)
    (rdir / "train.json").write_text(json.dumps({"dataset_version": version,
                                                 "mode": "centralised"}))
    PrivacyLedger(settings.paths.privacy_ledger).append(PrivacySpend(
        epsilon=2.0, delta=1e-3, noise_multiplier=0.9, max_grad_norm=1.0, sample_rate=0.1,
        steps=40, epochs=4, accountant="rdp", population="synthetic-seed42", run_id=RUN))
    meta = {"run_id": RUN, "metrics": {"ndcg@10": 0.1}, "data_version": version,
            "training_mode": "centralised", "validation": {"passed": True}}
    tag = registry.register(settings, tiny_checkpoint(list(range(1, 41))), meta,
                            items=t["items"], interactions=inter)
    registry.promote(settings, tag)
    # A model trained later on other data (another home's lake version): not the user's.
    other = registry.register(settings, tiny_checkpoint(list(range(1, 41)), 1),
                              {**meta, "run_id": "run-other", "data_version": "0" * 16},
                              items=t["items"], interactions=inter)
    staged = settings.paths.staging / "abc"
    staged.mkdir(parents=True)
    inter.to_parquet(staged / "interactions.parquet", index=False)
    return {"home": settings.paths.home, "tag": tag, "other": other, "version": version,
            "rows": int((inter.user_id == USER).sum())}


@pytest.fixture(scope="module")
def world_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from recops.config import load_settings

    home = tmp_path_factory.mktemp("subjects") / "home"
    return _build(load_settings(overrides={"home": home}))


@pytest.fixture
def settings(world_home: dict[str, Any], home: Path):  # noqa: ANN201
    """A copy of the module's home (registry, runs, ledger) with its own lake: lake manifests
    hold absolute paths, so the lake is rebuilt here rather than copied."""
    from recops.config import load_settings

    shutil.copytree(world_home["home"], home, ignore=shutil.ignore_patterns("lake"))
    s = load_settings(overrides={"home": home})
    assert _lake(s)[0] == world_home["version"]
    return s


@pytest.fixture
def world(world_home: dict[str, Any], settings) -> dict[str, Any]:  # noqa: ANN001
    return world_home


def test_show_lists_batches_runs_models_and_spends(settings, world) -> None:
    from recops.compliance.subjects import show

    view = show(settings, USER)
    assert view.events == world["rows"] > 0
    tables = sorted(b["table"] for b in view.batches)
    assert tables.count("users") == 1 and tables.count("interactions") == 2
    assert sum(b["rows"] for b in view.batches if b["table"] == "interactions") == world["rows"]
    assert [r["run_id"] for r in view.runs] == [RUN]
    assert [m["tag"] for m in view.models] == [world["tag"]]
    assert [s["run_id"] for s in view.privacy_spends] == [RUN]
    assert any(c["where"] == "staging" for c in view.copies)


def test_unknown_user_has_nothing(settings, world) -> None:
    from recops.compliance.subjects import show

    view = show(settings, 99999)
    assert (view.events, view.batches, view.models, view.privacy_spends) == (0, [], [], [])


def test_versions_replay_matches_the_lake(settings, world) -> None:
    """The replayed history ends at the lake's own current version (same definition)."""
    from recops.compliance.subjects import versions_containing
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    every = {b.batch_id for t in schema.TABLES for b in lake.batches(t)}
    assert lake.dataset_version() in versions_containing(lake, every)


def test_erase_removes_rows_keeps_order_and_marks_models(settings, world) -> None:
    from recops.compliance.report_data import gather
    from recops.compliance.subjects import erase, retrain_required, show, subject_hash
    from recops.core.audit import AuditLog, verify
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    before = {t: lake.batches(t) for t in schema.TABLES}
    others_before = lake.read(schema.INTERACTIONS).query("user_id != @USER")
    res = erase(settings, USER, reason="test request")

    assert res.rows_removed >= world["rows"]  # lake rows + the staged copy
    for t in (schema.INTERACTIONS, schema.USERS):
        df = lake.read(t)
        assert not (df[schema.USER_ID] == USER).any()
        # Replaced in place: same number of batches, newest users snapshot still last.
        assert len(lake.batches(t)) == len(before[t])
        for old in before[t]:
            assert not Path(old.path).exists()
    assert not (pd.read_parquet(settings.paths.staging / "abc" / "interactions.parquet")
                .user_id == USER).any()
    after = lake.read(schema.INTERACTIONS)
    pd.testing.assert_frame_equal(after.reset_index(drop=True),
                                  others_before.reset_index(drop=True))
    assert lake.batches(schema.ITEMS) == before[schema.ITEMS]  # untouched
    assert res.dataset_version == lake.dataset_version() != world["version"]
    assert {s["old"] for s in res.superseded} == {b.batch_id for t in (schema.INTERACTIONS,
                                                  schema.USERS) for b in before[t]}
    # The log is appended to, not edited: old manifests are still there.
    log_lines = (settings.paths.lake / "interactions" / "log.jsonl").read_text().splitlines()
    assert len(log_lines) == 4 and sum('"supersede"' in ln for ln in log_lines) == 2

    marks = retrain_required(settings)
    assert res.models_marked == [world["tag"]] and world["tag"] in marks
    assert world["other"] not in marks and f"run:{RUN}" in marks
    rec = AuditLog(settings.paths.audit_log).records()[-1]
    assert rec["stage"] == "erase" and rec["details"]["subject"] == subject_hash(USER)
    assert "user_id" not in json.dumps(rec)  # the trail names the subject by hash only
    assert verify(AuditLog(settings.paths.audit_log)).ok

    # Access after erasure: no rows, but the erasure and the models built before it show.
    view = show(settings, USER)
    assert view.events == 0 and view.batches == [] and len(view.erasures) == 1
    assert [m["tag"] for m in view.models] == [world["tag"]]
    assert view.models[0]["retrain_required"] is True
    # The report carries the marker.
    assert gather(settings, world["tag"]).retrain["erasure_id"] == res.erasure_id

    again = erase(settings, USER)
    assert again.superseded == [] and again.rows_removed == 0
    assert AuditLog(settings.paths.audit_log).records()[-1]["result"] == "nothing-found"


def test_erasing_a_users_only_batch_removes_it(settings, world) -> None:
    from recops.compliance.subjects import erase
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    solo = pd.DataFrame({"user_id": [555, 555], "item_id": [1, 2], "rating": [4.0, 3.0],
                         "event_type": "rating",
                         "event_timestamp": pd.to_datetime(["2024-02-01", "2024-02-02"], utc=True)})
    m = lake.append(schema.INTERACTIONS, solo, source="test:solo")
    res = erase(settings, 555)
    assert res.superseded == [{"table": "interactions", "old": m.batch_id, "rows_removed": 2,
                               "new": None}]
    assert m.batch_id not in {b.batch_id for b in lake.batches(schema.INTERACTIONS)}


def test_interrupted_erasure_leaves_an_orphan_that_the_rerun_deletes(settings, world) -> None:
    from recops.compliance.subjects import erase
    from recops.core.lake import Lake

    lake = Lake(settings.paths.lake)
    b = lake.batches(schema.INTERACTIONS)[0]
    keep = Path(b.path).read_bytes()
    df = lake.read(schema.INTERACTIONS, [b.batch_id])
    lake.supersede(schema.INTERACTIONS, b.batch_id, df[df.user_id != USER], "test", "crash")
    Path(b.path).write_bytes(keep)  # as if the process died before deleting the old file
    assert lake.orphans(schema.INTERACTIONS) == [Path(b.path)]
    res = erase(settings, USER)
    assert str(b.path) in res.files_rewritten and not Path(b.path).exists()


def test_cli_subject_show_and_erase(monkeypatch, capsys, settings, world) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.paths.home),
                              "subject", "show", str(USER), "--json")
    assert code == 0 and json.loads(text)["events"] == world["rows"]
    for bad, says in (("-3", "user id -3 is negative"), ("", "is not usable"),
                      ("x" * 300, "is not usable"), ("abc", "held nowhere")):
        code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.paths.home),
                                  "subject", "erase", "--yes", "--", bad)
        assert code == 2 and says in text and "Traceback" not in text, text
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.paths.home),
                              "subject", "erase", str(USER), "--yes", "--reason", "ticket 42")
    assert code == 0 and "row(s) removed" in text and world["tag"] in text
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.paths.home),
                              "subject", "show", str(USER))
    assert code == 0 and "0 event(s) in the lake" in text and "1 erasure(s)" in text
