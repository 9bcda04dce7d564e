"""Group commit for /feedback: concurrent events share one durable write and one online push.

Requests hand their event to :meth:`GroupCommitter.submit` and wait on the future it returns.
A log thread takes every event waiting (up to ``max_batch``), stores them with one
``append_many`` (one fsync, or one transaction), then a push thread folds the new ones into
Feast's online store with one read and one push per batch. A future resolves only after both,
so an acknowledged event is durable and the user's next /recommend sees it. While one batch is
being pushed the next is being logged: the two stages overlap.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from recops.core.events import Appended, EventLog

log = logging.getLogger("recops.serving")


@dataclass(frozen=True)
class Receipt:
    """What /feedback answers: where the event is stored, whether it was a repeat, and whether
    the online store took it (None for a repeat: it was pushed when first stored)."""

    offset: int
    duplicate: bool
    online: bool | None


Pending = tuple[Mapping[str, Any], "Future[Receipt]"]
Logged = list[tuple[Mapping[str, Any], "Future[Receipt]", Appended]]


class GroupCommitter:
    """Two daemon threads per process: log (durable) then push (online), batch by batch."""

    def __init__(self, event_log: EventLog, push: Callable[[list[Mapping[str, Any]]], None], *,
                 max_batch: int = 256,
                 on_logged: Callable[[Mapping[str, Any]], None] | None = None,
                 on_commit: Callable[[], None] | None = None,
                 on_push_failed: Callable[[int], None] | None = None) -> None:
        self.event_log = event_log
        self._push = push
        self.max_batch = max_batch
        self._on_logged = on_logged
        self._on_commit = on_commit
        self._on_push_failed = on_push_failed
        self._incoming: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._logged: queue.SimpleQueue[Logged | None] = queue.SimpleQueue()
        self.batches = 0  # batches logged (for tests and the benchmark)
        self._threads = [threading.Thread(target=self._log_loop, name="feedback-log",
                                          daemon=True),
                         threading.Thread(target=self._push_loop, name="feedback-push",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def submit(self, event: Mapping[str, Any]) -> Future[Receipt]:
        fut: Future[Receipt] = Future()
        self._incoming.put((event, fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Finish what was submitted, then stop both threads."""
        self._incoming.put(None)
        for t in self._threads:
            t.join(timeout)

    @staticmethod
    def _drain(q: queue.SimpleQueue[Any], first: Any, limit: int) -> tuple[list[Any], bool]:
        """``first`` plus whatever else is waiting (up to ``limit``); True when told to stop."""
        got = [first]
        while len(got) < limit:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return got, True
            got.append(item)
        return got, False

    def _log_loop(self) -> None:
        stop = False
        while not stop:
            first = self._incoming.get()
            if first is None:
                break
            batch, stop = self._drain(self._incoming, first, self.max_batch)
            try:
                appended = self.event_log.append_many([e for e, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                log.error("feedback batch of %d not logged (%s)", len(batch), type(exc).__name__)
                log.debug("feedback log failure: %s", exc)
                for _, fut in batch:
                    _settle(fut, exc)
                continue
            self.batches += 1
            if self._on_commit:
                self._on_commit()
            if self._on_logged:
                for (event, _), a in zip(batch, appended, strict=True):
                    if not a.duplicate:
                        self._on_logged(event)
            self._logged.put([(e, fut, a) for (e, fut), a in zip(batch, appended, strict=True)])
        self._logged.put(None)

    def _push_loop(self) -> None:
        stop = False
        while not stop:
            first = self._logged.get()
            if first is None:
                break
            # Several logged batches may wait while one is pushed: push them as one.
            groups, stop = self._drain(self._logged, first, 1_000)
            done = [x for g in groups for x in g]
            fresh = [e for e, _, a in done if not a.duplicate]
            online = True
            if fresh:
                try:
                    self._push(fresh)
                except Exception as exc:  # noqa: BLE001 - logged durably: say so and report
                    online = False
                    if self._on_push_failed:
                        self._on_push_failed(len(fresh))
                    # The message names users: keep it out of the info/error stream.
                    log.error("%d feedback event(s) logged but not pushed online (%s)",
                              len(fresh), type(exc).__name__)
                    log.debug("push failure: %s", exc)
            for _, fut, a in done:
                _settle(fut, Receipt(a.offset, a.duplicate, None if a.duplicate else online))


def _settle(fut: Future[Receipt], outcome: Receipt | BaseException) -> None:
    """Resolve a request's future; one whose request went away (cancelled) is skipped, so a
    client that hangs up cannot stop the committer threads."""
    if not fut.set_running_or_notify_cancel():
        return  # cancelled: the event is stored all the same; a retry gets "duplicate"
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)
