"""The group committer in-process: batching, failures and hang-ups never stall it."""

from __future__ import annotations

import asyncio
import math
import os
import stat
import threading

import pytest

from recops.core.feedback import FeedbackLog
from recops.errors import DataError
from serving.feedback_writer import GroupCommitter


def ev(i: int, **kw) -> dict:
    return {"user_id": i % 3, "item_id": i, "event_type": "view",
            "event_timestamp": f"2026-01-01T00:00:{i % 60:02d}+00:00", **kw}


class FlakyLog(FeedbackLog):
    fail = False

    def append_many(self, events):
        if self.fail:
            raise DataError("disk full")
        return super().append_many(events)


@pytest.fixture
def parts(tmp_path):
    pushed: list[list[dict]] = []
    gate = threading.Event()
    gate.set()

    def push(events):
        gate.wait(10)
        pushed.append(list(events))

    log = FlakyLog(tmp_path / "fb")
    committer = GroupCommitter(log, push, max_batch=64)
    yield log, committer, pushed, gate
    gate.set()
    committer.close()


async def submit_all(committer, events):
    return await asyncio.gather(*(asyncio.wrap_future(committer.submit(e)) for e in events),
                                return_exceptions=True)


def test_waiting_events_share_writes_and_repeats_are_not_pushed(parts, monkeypatch):
    log, committer, pushed, _ = parts
    data_fsyncs: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # count the durable writes of the log file (not its folder)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            data_fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    # Hold the first write: while it waits, everything submitted queues behind it.
    writing, release = threading.Event(), threading.Event()
    real_append = log.append_many

    def held_append(events):
        if not writing.is_set():
            writing.set()
            release.wait(10)
        return real_append(events)

    log.append_many = held_append
    first = committer.submit(ev(0))
    assert writing.wait(10)
    waiting = [ev(i) for i in range(1, 50)] + [ev(7)]  # concurrent with the held write
    rest = [committer.submit(e) for e in waiting]
    release.set()
    got = [f.result(10) for f in [first, *rest]]
    # Group commit: the held write, then every waiting event in writes of up to max_batch
    # each; one write per event (no group commit) would be 50 fsyncs for 50 new events.
    n_events = 1 + len(waiting)
    bound = 1 + math.ceil(len(waiting) / committer.max_batch)
    assert log.count() == 50 and committer.batches == len(data_fsyncs) == bound == 2
    assert len(data_fsyncs) < n_events
    assert [r.duplicate for r in got].count(True) == 1 and got[-1].offset == got[7].offset
    assert got[-1].online is None and all(r.online for r in got[:-1])
    assert sum(len(p) for p in pushed) == 50  # the repeat was not pushed again


def test_a_failed_write_fails_its_requests_only_and_the_committer_goes_on(parts):
    log, committer, _, _ = parts
    log.fail = True
    failed = asyncio.run(submit_all(committer, [ev(1), ev(2)]))
    assert all(isinstance(r, DataError) for r in failed)
    log.fail = False
    ok = asyncio.run(submit_all(committer, [ev(1)]))
    assert not ok[0].duplicate and log.count() == 1  # the failed ones were never stored


def test_a_failed_push_is_reported_not_raised(tmp_path):
    def push(events):
        raise RuntimeError("online store down")

    failures: list[int] = []
    committer = GroupCommitter(FeedbackLog(tmp_path / "fb"), push,
                               on_push_failed=failures.append)
    try:
        r = committer.submit(ev(1)).result(10)
    finally:
        committer.close()
    assert (r.duplicate, r.online) == (False, False) and failures == [1]


def test_a_client_that_hangs_up_does_not_stop_the_committer(parts):
    log, committer, _, gate = parts
    gate.clear()

    async def hang_up_then_more():
        t = asyncio.ensure_future(asyncio.wrap_future(committer.submit(ev(1))))
        await asyncio.sleep(0.05)
        t.cancel()
        gate.set()
        return await submit_all(committer, [ev(1), ev(2)])

    again, new = asyncio.run(hang_up_then_more())
    assert again.duplicate and not new.duplicate  # stored although nobody heard the answer
    assert log.count() == 2
