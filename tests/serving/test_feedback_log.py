"""The feedback log's contract, the same over the file and the PostgreSQL backend: group commit,
acknowledged means durable, repeats stored once, ``read(since)`` misses nothing."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from recops.config import load_settings
from recops.core.events import event_key
from recops.core.feedback import FeedbackLog, open_log
from recops.errors import ConfigError, DataError

PG_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def ev(i: int, **kw) -> dict:
    return {"user_id": 1 + i % 5, "item_id": 100 + i, "event_type": "view",
            "event_timestamp": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00", **kw}


@pytest.fixture(params=["file", "postgres"])
def make_log(request, tmp_path, postgres_dsn_if):
    """A factory of handles on one log (each handle = what one process holds)."""
    if request.param == "file":
        yield lambda: FeedbackLog(tmp_path / "fb")
        return
    dsn = postgres_dsn_if()
    table = "t_fb_" + uuid.uuid4().hex[:10]
    s = load_settings(overrides={"feedback.backend": "postgres", "feedback.table": table,
                                 "stores.postgres_dsn": dsn})
    handles = []

    def make():
        handles.append(open_log(s))
        return handles[-1]

    yield make
    import psycopg

    with psycopg.connect(PG_DSN.replace("+psycopg", ""), autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
    for h in handles:
        h.close()


@pytest.fixture
def postgres_dsn_if():
    from tests.conftest import require_service

    def get() -> str:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        return PG_DSN

    return get


def test_a_batch_is_stored_in_order_and_read_back(make_log):
    log = make_log()
    got = log.append_many([ev(i) for i in range(10)])
    assert [a.duplicate for a in got] == [False] * 10
    assert [a.offset for a in got] == sorted(a.offset for a in got)
    df, nxt = log.read()
    assert list(df.item_id) == [100 + i for i in range(10)]
    assert log.read(nxt)[0].empty and log.read(nxt)[1] == nxt
    assert log.count() == 10


def test_repeats_are_stored_once_and_answered_with_the_first_offset(make_log):
    log, other = make_log(), make_log()  # the second handle: another process/replica
    first = log.append_many([ev(1), ev(2, event_id="k-2")])
    again = other.append_many([ev(1), ev(99, event_id="k-2"), ev(1), ev(3)])
    assert [a.duplicate for a in again] == [True, True, True, False]
    assert again[0].offset == again[2].offset == first[0].offset
    assert again[1].offset == first[1].offset
    within = log.append_many([ev(4), ev(4)])  # a repeat inside one batch
    assert [a.duplicate for a in within] == [False, True] and within[0].offset == within[1].offset
    assert log.count() == 4


def test_concurrent_writers_lose_nothing_and_readers_skip_nothing(make_log):
    """Four writers (handles) append batches while a reader follows with read(since)."""
    writers = [make_log() for _ in range(4)]
    reader = make_log()
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        since = 0
        while True:
            last = done.is_set()
            df, since = reader.read(since)
            seen.extend(int(i) for i in df.item_id)
            if last:
                return

    t = threading.Thread(target=follow)
    t.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda w: [writers[w].append_many([ev(1000 * w + 10 * b + j)
                                                          for j in range(10)])
                                 for b in range(10)], range(4)))
    done.set()
    t.join(60)
    expected = sorted(100 + 1000 * w + 10 * b + j for w in range(4) for b in range(10)
                      for j in range(10))
    assert sorted(seen) == expected  # each event once: none skipped, none twice


def test_file_log_group_commit_is_one_fsync_per_batch(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    log = FeedbackLog(tmp_path / "fb")
    log.append_many([ev(i) for i in range(50)])
    first = len(calls)  # the file's fsync, plus the folder's for the first record
    log.append_many([ev(i) for i in range(50, 100)])
    assert first == 2 and len(calls) == 3
    log.append_many([ev(1)])  # only a repeat: nothing to make durable
    assert len(calls) == 3


def test_event_keys():
    assert event_key(ev(1, event_id="abc")) == "id:abc"
    # One instant, spelled three ways, is one key.
    a = event_key({**ev(1), "event_timestamp": "2026-01-01T01:00:01+01:00"})
    b = event_key({**ev(1), "event_timestamp": "2026-01-01T00:00:01Z"})
    assert a == b == event_key(ev(1))
    with pytest.raises(DataError, match="lacks"):
        FeedbackLog("/nonexistent").append_many([{"user_id": 1, "item_id": 2}])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"feedback.backend": "kafka"}, "feedback.backend"),
    ({"feedback.backend": "postgres"}, "feedback.backend 'postgres' needs stores.postgres_dsn"),
    ({"feedback.table": "Feedback; DROP TABLE x"}, "feedback.table"),
    ({"feedback.table": ""}, "feedback.table"),
    ({"feedback.max_batch": 0}, "feedback.max_batch"),
    ({"feedback.max_batch": "many"}, "feedback.max_batch"),
])
def test_bad_feedback_settings_are_a_config_error_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(overrides=overrides)


def test_an_unreachable_database_is_a_clear_error_not_a_hang():
    s = load_settings(overrides={"feedback.backend": "postgres",
                                 "stores.postgres_dsn": "postgresql+psycopg://u:pw@127.0.0.1:1/x"})
    with pytest.raises(DataError, match=r"cannot reach the feedback log's database \(u@127"):
        open_log(s).append_many([ev(1)])
    with pytest.raises(DataError) as info:
        open_log(s).read(0)
    assert "pw" not in str(info.value)  # the password stays out of messages
