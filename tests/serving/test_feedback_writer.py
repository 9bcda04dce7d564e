"""The group committer in-process: batching, failures and hang-ups never stall it."""

from __future__ import annotations

import asyncio
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


def test_waiting_events_share_writes_and_repeats_are_not_pushed(parts):
    log, committer, pushed, gate = parts
    gate.clear()  # hold the push stage so that events pile up behind the first batch
    first = committer.submit(ev(0))
    rest = [committer.submit(e) for e in [ev(i) for i in range(1, 50)] + [ev(7)]]
    gate.set()
    got = [f.result(10) for f in [first, *rest]]
    assert log.count() == 50 and committer.batches < 50
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
