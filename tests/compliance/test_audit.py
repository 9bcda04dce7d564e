"""Tampering with the audit log (edit, delete, reorder, truncate) is detected and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recops.core.audit import AuditLog, verify


def _log(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("train" if i % 2 else "ingest", run_id=f"r{i}", inputs={"i": i},
                   outputs={"o": i * 2}, config={"seed": i}, details={"note": f"step {i}"})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(ln + "\n" for ln in lines))


def test_intact_log_verifies_and_is_anchored(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl")
    status = verify(log)
    assert status.ok and status.records == 5 and status.anchored
    assert status.last_hash == log.records()[-1]["hash"]
    assert log.head()["seq"] == 4


@pytest.mark.parametrize("field,value", [("result", "failed"), ("inputs", {"i": 99}),
                                          ("stage", "promote"), ("time", "2020-01-01")])
def test_edited_record_is_named(tmp_path: Path, field: str, value: object) -> None:
    log = _log(tmp_path / "audit.jsonl")
    lines = _lines(log)
    rec = json.loads(lines[2])
    rec[field] = value
    lines[2] = json.dumps(rec, sort_keys=True)
    _write(log, lines)
    status = verify(log)
    assert not status.ok and status.bad_seq == 2
    assert "seq 2" in status.problem and "edited" in status.problem


def test_edit_with_recomputed_hashes_is_caught_by_the_head(tmp_path: Path) -> None:
    """A forger who re-hashes the whole chain after an edit still disagrees with the head."""
    from recops.core.audit import GENESIS, _record_hash

    log = _log(tmp_path / "audit.jsonl")
    recs = log.records()
    recs[1]["result"] = "forged"
    prev = GENESIS
    for rec in recs:
        rec["prev_hash"] = prev
        rec["hash"] = _record_hash(rec)
        prev = rec["hash"]
    _write(log, [json.dumps(r, sort_keys=True) for r in recs])
    status = verify(log)
    assert not status.ok and status.bad_seq == 4 and "rewritten" in status.problem


def test_removed_record_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl")
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    status = verify(log)
    assert not status.ok and status.bad_seq == 1
    assert "removed or reordered" in status.problem


def test_reordered_records_are_named(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl")
    lines = _lines(log)
    lines[2], lines[3] = lines[3], lines[2]
    _write(log, lines)
    status = verify(log)
    assert not status.ok and status.bad_seq == 2 and "seq 3, expected 2" in status.problem


@pytest.mark.parametrize("keep", [0, 3, 4])
def test_truncated_log_is_detected(tmp_path: Path, keep: int) -> None:
    log = _log(tmp_path / "audit.jsonl")
    _write(log, _lines(log)[:keep])
    status = verify(log)
    assert not status.ok and status.bad_seq == keep
    assert "truncated" in status.problem and f"seq {keep}..4" in status.problem


def test_record_cut_mid_line_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl")
    text = log.path.read_text()
    log.path.write_text(text[: len(text) - 40])
    status = verify(log)
    assert not status.ok and status.bad_seq == 4 and ":5:" in status.problem


def test_append_after_verify_continues_the_chain(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", 2)
    rec = log.append("report", outputs={"path": "x"})
    assert rec["seq"] == 2 and rec["prev_hash"] == log.records()[1]["hash"]
    assert verify(log).ok


def test_lagging_head_is_accepted(tmp_path: Path) -> None:
    """A crash between the record's fsync and the head's rename leaves the head one behind."""
    log = _log(tmp_path / "audit.jsonl", 3)
    head = log.head()
    log.append("report")
    log.head_path.write_text(json.dumps(head))
    assert verify(log).ok


def test_missing_head_fails_verification(tmp_path: Path) -> None:
    """Deleting the head along with the last records must not pass as an intact log."""
    log = _log(tmp_path / "audit.jsonl", 3)
    _write(log, _lines(log)[:2])
    log.head_path.unlink()
    status = verify(log)
    assert not status.ok and not status.anchored and "missing" in status.problem


def test_empty_log_verifies(tmp_path: Path) -> None:
    status = verify(AuditLog(tmp_path / "none.jsonl"))
    assert status.ok and status.records == 0


def test_garbage_head_is_an_error(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit.jsonl", 2)
    log.head_path.write_text("{not json")
    status = verify(log)
    assert not status.ok and "head" in status.problem


@pytest.mark.integration
def test_postgres_mirror_catches_a_fully_rewritten_log(tmp_path: Path, postgres_dsn: str) -> None:
    """Even a forger who re-hashes the chain and rewrites the head disagrees with the mirror."""
    import uuid

    from recops.core.audit import (
        GENESIS,
        _record_hash,
        mirror_to_postgres,
        verify_against_postgres,
    )
    from recops.errors import AuditError

    table = f"test_audit_{uuid.uuid4().hex[:10]}"
    log = _log(tmp_path / "audit.jsonl", 4)
    try:
        assert mirror_to_postgres(log, postgres_dsn, table) == 4
        log.append("report")
        assert mirror_to_postgres(log, postgres_dsn, table) == 1
        assert verify_against_postgres(log, postgres_dsn, table).ok
        recs = log.records()
        recs[2]["result"] = "forged"
        prev = GENESIS
        for rec in recs:
            rec["prev_hash"], rec["hash"] = prev, None
            rec["hash"] = _record_hash(rec)
            prev = rec["hash"]
        _write(log, [json.dumps(r, sort_keys=True) for r in recs])
        log.head_path.write_text(json.dumps({"seq": 4, "hash": recs[4]["hash"], "time": "x"}))
        assert verify(log).ok  # the file alone is consistent again...
        status = verify_against_postgres(log, postgres_dsn, table)
        assert not status.ok and status.bad_seq == 2 and "mirror" in status.problem
        with pytest.raises(AuditError, match="refusing to mirror"):
            mirror_to_postgres(log, postgres_dsn, table)
        _write(log, _lines(log)[:2])  # and truncation, with the head made to agree
        log.head_path.write_text(json.dumps({"seq": 1, "hash": recs[1]["hash"], "time": "x"}))
        assert verify(log).ok
        assert "removed from the end" in verify_against_postgres(log, postgres_dsn, table).problem
    finally:
        import psycopg

        with psycopg.connect(postgres_dsn.replace("+psycopg", "")) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_postgres_mirror_refuses_a_broken_chain_and_bad_dsn(tmp_path: Path) -> None:
    from recops.core.audit import mirror_to_postgres
    from recops.errors import AuditError

    log = _log(tmp_path / "audit.jsonl", 2)
    with pytest.raises(AuditError, match="cannot connect"):
        mirror_to_postgres(log, "postgresql://nobody@127.0.0.1:1/none")
    _write(log, _lines(log)[:1])
    with pytest.raises(AuditError, match="broken audit chain"):
        mirror_to_postgres(log, "postgresql://nobody@127.0.0.1:1/none")


def test_append_refuses_a_log_whose_last_line_is_garbage(tmp_path: Path) -> None:
    from recops.errors import AuditError

    log = _log(tmp_path / "audit.jsonl", 2)
    with open(log.path, "a") as f:
        f.write('{"seq": 2, "cut\n')
    with pytest.raises(AuditError, match="last record"):
        log.append("report")


def test_append_reads_only_the_tail_of_a_long_log(tmp_path: Path) -> None:
    """seq and prev_hash come from the last record even when it is far past one read block."""
    log = _log(tmp_path / "audit.jsonl", 3)
    big = log.append("train", details={"blob": "x" * 200_000})
    rec = log.append("report")
    assert rec["seq"] == big["seq"] + 1 == 4 and rec["prev_hash"] == big["hash"]
    assert verify(log).ok
