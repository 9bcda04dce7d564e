"""Erasure that reaches everywhere: after `recops subject erase`, a search of every file under
the home (text, and Parquet/SQLite/JSON read structurally) and of every Redis key of the project
finds the user nowhere; models are marked; a retrain excludes the user and the report says so."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recops import schema
from tests.compliance.scan import count_redis_keys, scan_home, scan_redis
from tests.conftest import run_cli_text

BASE = 5_000_000
STEP = 1009  # user k is BASE + STEP * k: ids no other number in the home is likely to equal
K = 17
UID = BASE + STEP * K
OTHER = BASE + STEP * 3


def _uid(k: np.ndarray) -> np.ndarray:
    return BASE + STEP * k


def write_movielens(root: Path, seed: int = 42) -> pd.DataFrame:
    """Tiny synthetic data as an ml-latest-small download (ratings.csv, movies.csv), users
    renumbered to the distinctive ids above; returns the ratings."""
    from recops.data.synthetic import generate

    t = generate(n_users=40, n_items=60, n_interactions=2000, n_clusters=4, days=20, seed=seed)
    d = root / "ml-latest-small"
    d.mkdir(parents=True)
    inter = t.interactions
    ratings = pd.DataFrame({
        "userId": _uid(inter[schema.USER_ID].to_numpy()),
        "movieId": inter[schema.ITEM_ID].to_numpy(),
        "rating": inter[schema.RATING].to_numpy(),
        "timestamp": (inter[schema.EVENT_TIMESTAMP] - pd.Timestamp(0, tz="UTC"))
        // pd.Timedelta(seconds=1)})
    ratings.to_csv(d / "ratings.csv", index=False)
    pd.DataFrame({"movieId": t.items[schema.ITEM_ID],
                  "title": [f"Film {i} (2001)" for i in t.items[schema.ITEM_ID]],
                  "genres": t.items[schema.GENRES]}).to_csv(d / "movies.csv", index=False)
    return ratings


def feedback_events(ratings: pd.DataFrame, users: list[int], n: int, start: int = 0
                    ) -> list[dict[str, Any]]:
    t0 = pd.Timestamp(int(ratings.timestamp.max()), unit="s", tz="UTC")
    items = sorted(ratings.movieId.unique())
    return [{schema.USER_ID: u, schema.ITEM_ID: int(items[(i * 7 + j) % len(items)]),
             schema.RATING: 4.0, schema.EVENT_TYPE: "rating",
             schema.EVENT_TIMESTAMP: (t0 + timedelta(minutes=10 * (start + i))).isoformat()}
            for j, u in enumerate(users) for i in range(n)]


def push(settings: Any, events: list[dict[str, Any]]) -> None:
    """What serving's /feedback does: log durably, then fold into the online store."""
    from recops.core.feedback import open_log
    from recops.features.feast_online import push_events

    open_log(settings).append_many(events)
    push_events(settings, events)


def serve_lists(settings: Any, users: list[int], n: int) -> None:
    """What /recommend does: log each served list (with its propensities) durably."""
    from recops.policy.impressions import open_impressions

    open_impressions(settings).append_many([
        {"request_id": f"r{u}-{i}", "user_id": u, "items": [1, 2], "propensities": [0.95, 0.05],
         "candidates": [1, 2, 3], "k": 2, "policy": "epsilon_greedy",
         "policy_params": {"epsilon": 0.15, "top_n": 3}, "model": "m"}
        for u in users for i in range(n)])


def snapshot(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# One world: pipeline, feedback, a retraining cycle (sqlite online store)


def make_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import os

    from recops.orchestration import continual, pipeline
    from tests.dags.tiny import tiny_settings

    tmp = tmp_path_factory.mktemp("erasure")
    home = tmp / "home"
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        # The download cache under the home: erasure must reach it too.
        ratings = write_movielens(home / "datasets")
        settings = tiny_settings(home, **{"data.dataset": "ml-latest-small",
                                          "data.download": False,
                                          "stores.feast_project": f"e{uuid.uuid4().hex[:10]}"})
        first = pipeline.run_pipeline(settings, progress=False)
        push(settings, feedback_events(ratings, [UID, OTHER], 4))
        serve_lists(settings, [UID, OTHER], 3)
        cycle = continual.run_cycle(settings, progress=False, finetune_epochs=1)
        # Feedback after the cycle: pending for the next one.
        push(settings, feedback_events(ratings, [UID, OTHER], 1, start=10))
        config = tmp / "settings.yaml"
        settings.save(config)
    return {"settings": settings, "home": home, "ratings": ratings, "first": first,
            "cycle": cycle, "config": config}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The world as built: the user held everywhere (the erase test erases them)."""
    return make_world(tmp_path_factory)


@pytest.fixture(scope="module")
def erased_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A world of its own whose user was erased (what `recops subject erase` runs), so that
    the retrain test does not depend on the erase test having run before it."""
    from recops.compliance.subjects import erase

    w = make_world(tmp_path_factory)
    assert erase(w["settings"], UID).places, "the user was held nowhere"
    assert scan_home(w["home"], UID) == []
    return w


@pytest.mark.integration
@pytest.mark.slow
def test_erase_reaches_every_file_and_the_online_store(world, monkeypatch, capsys,
                                                       tmp_path: Path) -> None:
    from recops.compliance.subjects import retrain_required, subject_hash
    from recops.core.audit import AuditLog, verify
    from recops.features.feast_online import online_features
    from recops.orchestration import continual
    from recops.release import registry

    s, home = world["settings"], world["home"]
    assert "skipped" not in world["cycle"], world["cycle"]
    models = [m.tag for m in registry.list_models(s)]
    assert len(models) == 2  # the pipeline's model and the cycle's
    before = scan_home(home, UID)
    # The world really holds the user in every kind of place erasure must reach.
    for where in ("lake/", "datasets/", "features/sources/user_events.parquet",
                  "features/online_store.db", "feedback/feedback.jsonl",
                  "feedback/impressions.jsonl", "labels.parquet",
                  "feedback.parquet", "eval_users.json", "window.json", "staging/"):
        assert any(where in h for h in before), (where, before)
    assert online_features(s, [UID])["found"].tolist() == [True]
    assert continual.pending(s) == 2  # one event each of UID and OTHER since the cycle

    # Access request first: one JSON file with everything held.
    out = tmp_path / "export.json"
    cli = ("--config", str(world["config"]), "--home", str(home), "subject")
    code, text = run_cli_text(monkeypatch, capsys, *cli, "export", str(UID), "--out", str(out))
    assert code == 0, text
    data = json.loads(out.read_text())
    n_ratings = int((world["ratings"].userId == UID).sum())
    lake_rows = [r for b in data["lake"] if b["table"] == "interactions" for r in b["records"]]
    assert len(lake_rows) == n_ratings + 4  # the download's ratings + the cycle's feedback
    wheres = {p["where"] for p in data["files_and_logs"]}
    assert {"feedback log", "impression log", "run file", "feature source", "dataset download",
            "staging"} <= wheres
    fb = next(p for p in data["files_and_logs"] if p["where"] == "feedback log")
    assert len(fb["records"]) == 5 and {r["user_id"] for r in fb["records"]} == {UID}
    shown = next(p for p in data["files_and_logs"] if p["where"] == "impression log")
    assert sorted(r["request_id"] for r in shown["records"]) == [f"r{UID}-{i}" for i in range(3)]
    assert shown["records"][0]["propensities"] == [0.95, 0.05]
    assert [r["user_id"] for r in data["online_store"]["records"]] == [UID]
    assert {m["tag"] for m in data["models"]} == set(models)

    audit_before = len(AuditLog(s.paths.audit_log).records())
    code, text = run_cli_text(monkeypatch, capsys, *cli, "erase", str(UID), "--yes")
    assert code == 0, text
    assert "online store" in text and "feedback log" in text and "impression log" in text

    assert scan_home(home, UID) == []
    assert online_features(s, [UID])["found"].tolist() == [False]
    assert online_features(s, [OTHER])["found"].tolist() == [True]  # others untouched
    # Only the audit log and the lake's tombstones name the subject, by its hash.
    digest = subject_hash(UID).encode()
    holders = {str(p.relative_to(home)) for p in home.rglob("*")
               if p.is_file() and digest in p.read_bytes()}
    assert holders == {"audit/audit.jsonl", "lake/tombstones.json"}
    recs = AuditLog(s.paths.audit_log).records()
    assert len(recs) == audit_before + 1 and recs[-1]["stage"] == "erase"
    assert verify(AuditLog(s.paths.audit_log)).ok
    assert set(retrain_required(s)) >= set(models)
    # The feedback watermark moved with the rewritten log: OTHER's event is still pending,
    # nothing is read twice or skipped.
    assert continual.pending(s) == 1
    # The other user's served lists are kept; the erased user's are gone from the file.
    from recops.policy.impressions import open_impressions

    assert set(open_impressions(s).read(0)[0].user_id) == {OTHER}


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_after_erasure_excludes_the_user(erased_world) -> None:
    from recops.compliance.report_data import gather
    from recops.compliance.subjects import erase, retrain_required
    from recops.core.feedback import open_log
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.orchestration import continual, pipeline

    world = erased_world
    s, home = world["settings"], world["home"]
    assert retrain_required(s)  # the erasure marked the models trained on the user
    # The raw data comes back with the user (a fresh download): the lake refuses their rows.
    lake = Lake(s.paths.lake)
    m = lake.append(schema.INTERACTIONS, pd.DataFrame({
        schema.USER_ID: [UID, OTHER], schema.ITEM_ID: [1, 2], schema.RATING: [4.0, 4.0],
        schema.EVENT_TYPE: "rating", schema.EVENT_TIMESTAMP: pd.Timestamp("2026-03-01",
                                                                         tz="UTC")}), "redownload")
    assert m.erased_rows_dropped == 1 and m.rows == 1
    # A late feedback event of the erased user (logged as the erasure ran) never reaches a
    # cycle's files.
    open_log(s).append_many(feedback_events(world["ratings"], [UID], 1, start=20))
    col = continual.collect(s, "retrain-after-erasure")
    assert col["erased_dropped"] == 1
    assert UID not in set(RunDir.of(s, "retrain-after-erasure").read_frame(
        RunDir.FEEDBACK)[schema.USER_ID])

    summary = pipeline.run_pipeline(s, progress=False)
    new_tag = summary["tag"]
    labels = RunDir.of(s, Path(summary["run_dir"]).name).read_frame(RunDir.LABELS)
    assert UID not in set(labels[schema.USER_ID]) and OTHER in set(labels[schema.USER_ID])
    assert new_tag not in retrain_required(s)
    report = gather(s, new_tag)
    assert report.retrain is None
    assert [e["excluded"] for e in report.erasures] == [True]
    old = gather(s, world["first"]["tag"])
    assert old.retrain is not None and [e["excluded"] for e in old.erasures] == [False]
    html = Path(summary["report"]).read_text()  # the pipeline's own report stage
    assert "excludes every erased subject" in html
    # Erasing again takes the late event out of the log; the retrain reintroduced nothing.
    assert erase(s, UID).places[0]["where"] == "feedback log"
    assert scan_home(home, UID) == []


# ---------------------------------------------------------------------------------------------
# The Redis online store


@pytest.mark.integration
def test_erase_deletes_the_users_redis_keys(tmp_path: Path, redis_url: str) -> None:
    from recops.compliance.subjects import erase
    from recops.features import feast_store
    from recops.features.featurize import build_sources
    from recops.features.online_store import redis_client
    from tests.features.conftest import fill_lake, fresh_settings, make_events

    s = fresh_settings(tmp_path / "home", **{"stores.online": "redis",
                                             "stores.redis_url": redis_url})
    ev = make_events()
    ev["user_id"] = _uid(ev["user_id"].to_numpy())
    lake = fill_lake(s, ev)
    lake.append("users", pd.DataFrame({"user_id": _uid(np.arange(1, 13))}), "test")
    client = redis_client(redis_url)
    try:
        build_sources(s, lake, text_vectors=False)
        feast_store.apply(s)
        feast_store.materialize(s)
        keys = count_redis_keys(client, s.stores.feast_project)
        uid = int(_uid(np.array(5)))
        push(s, [{schema.USER_ID: uid, schema.ITEM_ID: 3, schema.RATING: 5.0,
                  schema.EVENT_TYPE: "rating", schema.EVENT_TIMESTAMP: "2012-05-01T00:00:00Z"}])
        assert scan_redis(client, s.stores.feast_project, uid)
        res = erase(s, uid)
        assert res.online_rows == 1
        assert scan_redis(client, s.stores.feast_project, uid) == []
        assert count_redis_keys(client, s.stores.feast_project) == keys - 1
        assert scan_home(s.paths.home, uid) == []
    finally:
        feast_store.teardown(s)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing changed


@pytest.fixture
def lake_home(tmp_path: Path) -> Path:
    """A home whose lake holds the small tables, and nothing else."""
    from recops.config import load_settings
    from recops.core.lake import Lake
    from tests.compliance.conftest import small_tables

    home = tmp_path / "h"
    lake = Lake(load_settings(overrides={"home": home}).paths.lake)
    for name, df in small_tables().items():
        lake.append(name, df, "test")
    return home


def test_erase_of_an_unknown_user_or_bad_id_changes_nothing(monkeypatch, capsys,
                                                            lake_home: Path) -> None:
    home = lake_home
    before = snapshot(home)
    for args, msg in (((str(424242),), "held nowhere"), (("--", "-1"), "negative"),
                      # Text ids are a team's ids (recops.core.idmap): unknown, so held nowhere.
                      (("abc",), "held nowhere"), (("1.5",), "held nowhere")):
        code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "subject", "erase",
                                  "--yes", *args)
        assert code == 2 and msg in text and "Traceback" not in text, text
    assert snapshot(home) == before


def test_export_refuses_bad_input_and_writes_nothing(monkeypatch, capsys, tmp_path: Path,
                                                     lake_home: Path) -> None:
    from tests.compliance.conftest import small_tables

    home = lake_home
    existing = tmp_path / "taken.json"
    existing.write_text("keep me")
    outdir = tmp_path / "exports"
    outdir.mkdir()
    before = snapshot(home)
    cases = [
        (("7", "--out", str(outdir)), "is a folder"),
        (("7", "--out", str(tmp_path / "nope" / "x.json")), "does not exist"),
        (("7", "--out", str(existing)), "--force"),
        (("x7", "--out", str(outdir / "a.json")), "holds nothing"),
        (("424242", "--out", str(outdir / "b.json")), "holds nothing"),
    ]
    for args, msg in cases:
        code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "subject", "export",
                                  *args)
        assert code == 2 and msg in text and "Traceback" not in text, (args, text)
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "subject", "export", "7")
    assert code == 2 and "--out" in text
    assert existing.read_text() == "keep me" and list(outdir.iterdir()) == []
    assert snapshot(home) == before
    # And a good one: the user's lake rows, as the lake holds them.
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(home), "subject", "export", "7",
                              "--out", str(outdir / "u7.json"))
    assert code == 0, text
    data = json.loads((outdir / "u7.json").read_text())
    n = int((small_tables()["interactions"].user_id == 7).sum())
    assert sum(len(b["records"]) for b in data["lake"] if b["table"] == "interactions") == n
    assert snapshot(home) == before  # an access request changes nothing


def test_feedback_log_rewrite_shifts_offsets(tmp_path: Path) -> None:
    from recops.core.feedback import FeedbackLog

    log = FeedbackLog(tmp_path / "fb")
    ev = [{"user_id": u, "item_id": i, "event_type": "click",
           "event_timestamp": f"2026-01-01T00:00:{i:02d}Z"} for i, u in enumerate([1, 2, 1, 3])]
    offsets = [a.offset for a in log.append_many(ev)]
    df, end = log.read(offsets[2])  # a reader that consumed the first two events
    erased = log.erase_user(1)
    assert erased.removed == 2
    rest, _ = log.read(erased.shift(offsets[2]))
    assert rest.user_id.tolist() == [3]  # the user's records gone, the other unread one kept
    assert erased.shift(end) == log.path.stat().st_size
    assert log.read(0)[0].user_id.tolist() == [2, 3]
    # A writer that cached the old file's offsets appends to the new file, not the old inode.
    log.append({"user_id": 4, "item_id": 9, "event_type": "click",
                "event_timestamp": "2026-01-02T00:00:00Z"})
    assert log.read(0)[0].user_id.tolist() == [2, 3, 4]
    assert log.erase_user(99).removed == 0


@pytest.mark.integration
def test_postgres_feedback_log_erase_is_one_transaction(postgres_dsn: str) -> None:
    import psycopg
    from psycopg import sql

    from recops.config import libpq_dsn
    from recops.core.feedback_pg import PostgresFeedbackLog

    table = f"t_erase_{uuid.uuid4().hex[:10]}"
    log = PostgresFeedbackLog(libpq_dsn(postgres_dsn), table)
    try:
        ev = [{"user_id": u, "item_id": i, "event_type": "click",
               "event_timestamp": f"2026-01-01T00:00:{i:02d}Z"} for i, u in enumerate([1, 2, 1, 3])]
        offsets = [a.offset for a in log.append_many(ev)]
        erased = log.erase_user(1)
        assert (erased.removed, erased.spans) == (2, ())
        assert erased.shift(offsets[1]) == offsets[1]  # seq offsets do not move
        assert log.read(offsets[1])[0].user_id.tolist() == [3]
        assert log.read(0)[0].user_id.tolist() == [2, 3]
        with psycopg.connect(libpq_dsn(postgres_dsn)) as conn:
            n = conn.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE "
                                     "(record->>'user_id')::bigint = 1) FROM {}")
                             .format(sql.Identifier(table))).fetchone()
        assert n == (2, 0)
        assert log.erase_user(1).removed == 0
    finally:
        log.close()
        with psycopg.connect(libpq_dsn(postgres_dsn), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


# ---------------------------------------------------------------------------------------------
# Measurement on ml-latest-small (benchmarks/bench_erasure.py builds the home)


@pytest.mark.slow
def test_erasure_on_movielens_small(movielens_small: Path, tmp_path: Path) -> None:
    import importlib.util
    import time

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_erasure",
                                                  REPO / "benchmarks" / "bench_erasure.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = bench.build_world(tmp_path / "home", movielens_small.parent, feedback=500)
    user = bench.default_users(s)[0]  # the most active user: the most rows to rewrite
    t0 = time.perf_counter()
    got = bench.measure(s, user)
    print(f"erase of user {user} on ml-latest-small: {time.perf_counter() - t0:.2f} s")
    wheres = {p["where"] for p in got["places"]}
    assert {"lake interactions", "lake users", "staging", "feature source", "run file",
            "dataset download", "feedback log", "online store"} <= wheres, wheres
    # MovieLens ids are small integers (item ids, counts and times contain them as text), so
    # this checks by structure: no user_id column, log or online row holds the user.
    from recops.compliance.subjects import show

    view = show(s, user)
    assert (view.batches, view.copies, view.online_rows, view.feedback_events) == ([], [], 0, 0)


@pytest.mark.integration
def test_erase_reaches_the_postgres_log_and_the_file_log_left_before_it(
        postgres_dsn: str, tmp_path: Path) -> None:
    import psycopg
    from psycopg import sql

    from recops.compliance.subjects import erase, show
    from recops.config import libpq_dsn, load_settings
    from recops.core.feedback import FeedbackLog, open_log
    from recops.core.lake import Lake
    from tests.compliance.conftest import small_tables

    table = f"t_erase_{uuid.uuid4().hex[:10]}"
    s = load_settings(overrides={"home": tmp_path / "h", "feedback.backend": "postgres",
                                 "feedback.table": table, "stores.postgres_dsn": postgres_dsn,
                                 "feedback.impressions_table": table + "_i"})
    lake = Lake(s.paths.lake)
    for name, df in small_tables().items():
        lake.append(name, df, "test")
    ev = [{"user_id": u, "item_id": 1, "event_type": "click",
           "event_timestamp": f"2026-02-01T00:00:{n:02d}Z"} for n, u in enumerate([7, 8, 7])]
    FeedbackLog(s.paths.feedback).append_many(ev)  # written while the backend was "file"
    file_settings = s.model_copy(update={"feedback": s.feedback.model_copy(
        update={"backend": "file"})})
    serve_lists(file_settings, [7, 8], 1)  # served lists logged before the switch, too
    pg = open_log(s)
    from recops.policy.impressions import ImpressionLog, open_impressions

    pg_lists = open_impressions(s)
    try:
        pg.append_many(ev)
        serve_lists(s, [7, 8, 7], 1)
        view = show(s, 7)
        assert (view.feedback_events, view.impressions) == (4, 2)
        res = erase(s, 7)
        logs = sorted(p["where"] for p in res.places if p["kind"] == "log")
        assert logs == ["feedback log", "feedback log (file, before postgres)",
                        "impression log", "impression log (file, before postgres)"]
        assert pg.read(0)[0].user_id.tolist() == [8]
        assert FeedbackLog(s.paths.feedback).read(0)[0].user_id.tolist() == [8]
        assert pg_lists.read(0)[0].user_id.tolist() == [8]
        assert ImpressionLog(s.paths.feedback).read(0)[0].user_id.tolist() == [8]
        assert (show(s, 7).feedback_events, show(s, 7).impressions) == (0, 0)
    finally:
        pg.close()  # type: ignore[attr-defined]  # the PostgreSQL log's connection
        pg_lists.close()  # type: ignore[attr-defined]
        with psycopg.connect(libpq_dsn(postgres_dsn), autocommit=True) as conn:
            for t in (table, table + "_i"):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))
