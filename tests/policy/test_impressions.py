"""The impression log keeps served lists as the feedback log keeps events: one record per
request id, group-committed, rewritten durably without an erased user; file and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from recops.errors import DataError
from recops.policy.impressions import ImpressionLog, PostgresImpressionLog


def served(rid: str, user: int, items=(11, 12), props=(0.9, 0.05)) -> dict[str, Any]:
    return {"request_id": rid, "user_id": user, "items": list(items),
            "propensities": list(props), "candidates": [11, 12, 13], "k": len(items),
            "policy": "epsilon_greedy", "policy_params": {"epsilon": 0.15, "top_n": 3},
            "policy_tag": "epsilon_greedy(epsilon=0.15,top_n=3)", "model": "m:1"}


def test_lists_round_trip_once_per_request_id(tmp_path: Path) -> None:
    log = ImpressionLog(tmp_path / "fb")
    got = log.append_many([served("a", 1), served("b", 2), served("a", 1)])
    assert [g.duplicate for g in got] == [False, False, True]
    assert got[2].offset == got[0].offset
    df, _ = log.read(0)
    assert df.request_id.tolist() == ["a", "b"] and df.user_id.tolist() == [1, 2]
    assert df["items"].tolist() == [[11, 12], [11, 12]]
    assert df.propensities.iloc[0] == [0.9, 0.05] and df.served_at.notna().all()
    # Next to the feedback log, in its own file: the feedback log does not see the lists.
    assert log.path == tmp_path / "fb" / "impressions.jsonl"
    # A second writer (another worker) sees the first's request ids.
    assert ImpressionLog(tmp_path / "fb").append_many([served("b", 2)])[0].duplicate


@pytest.mark.parametrize(("change", "message"), [
    ({"request_id": None}, "lacks \\['request_id'\\]"),
    ({"propensities": [0.5]}, "one propensity in \\(0, 1\\] per shown item"),
    ({"propensities": [0.5, 0.0]}, "one propensity in \\(0, 1\\]"),
    ({"propensities": [1.5, 0.2]}, "one propensity in \\(0, 1\\]"),
])
def test_a_malformed_list_is_refused_and_nothing_is_written(tmp_path, change, message) -> None:
    log = ImpressionLog(tmp_path / "fb")
    with pytest.raises(DataError, match=message):
        log.append_many([served("ok", 1), {**served("bad", 2), **change}])
    assert log.count() == 0


def test_erasing_a_user_rewrites_the_log_without_them(tmp_path: Path) -> None:
    log = ImpressionLog(tmp_path / "fb")
    log.append_many([served("a", 1), served("b", 2), served("c", 1)])
    inode = log.path.stat().st_ino
    erased = log.erase_user(1)
    assert erased.removed == 2
    assert log.read(0)[0].request_id.tolist() == ["b"]
    assert log.path.stat().st_ino != inode  # a new file renamed over the old one
    assert b'"user_id": 1,' not in log.path.read_bytes()
    log.append(served("d", 3))  # writers go on appending to the new file
    assert log.read(0)[0].request_id.tolist() == ["b", "d"]


@pytest.mark.integration
def test_postgres_backend(postgres_dsn: str, tmp_path: Path) -> None:
    import psycopg
    from psycopg import sql

    from recops.config import libpq_dsn, load_settings
    from recops.policy.impressions import open_impressions

    table = f"t_impr_{uuid.uuid4().hex[:10]}"
    s = load_settings(overrides={"home": tmp_path / "h", "feedback.backend": "postgres",
                                 "stores.postgres_dsn": postgres_dsn,
                                 "feedback.impressions_table": table})
    log = open_impressions(s)
    assert isinstance(log, PostgresImpressionLog)
    try:
        got = log.append_many([served("a", 1), served("b", 2), served("a", 1)])
        assert [g.duplicate for g in got] == [False, False, True]
        df, _ = log.read(0)
        assert df.request_id.tolist() == ["a", "b"] and df["items"].iloc[1] == [11, 12]
        assert log.erase_user(1).removed == 1
        assert log.read(0)[0].user_id.tolist() == [2]
    finally:
        log.close()  # type: ignore[attr-defined]  # the PostgreSQL log's connection
        with psycopg.connect(libpq_dsn(postgres_dsn), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
