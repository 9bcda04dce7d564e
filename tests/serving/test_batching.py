"""Adaptive batching: requests that queue during a batch form the next one; a lone request
waits for nothing; a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.batching import MicroBatcher


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    sizes: list[int] = []

    def double(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return [2 * x for x in xs]

    async def main() -> list[int]:
        b = MicroBatcher(double, max_batch=8)
        got = await asyncio.gather(*(b.submit(x) for x in range(20)))
        assert b.items == 20 and b.batches == len(sizes)
        return list(got)

    assert asyncio.run(main()) == [2 * x for x in range(20)]
    # 20 requests at once: batches of at most 8, far fewer batches than requests
    assert sizes == [8, 8, 4]


def test_requests_that_arrive_during_a_batch_form_the_next_one():
    sizes: list[int] = []

    async def main() -> None:
        b: MicroBatcher[int, int] = MicroBatcher(lambda xs: (sizes.append(len(xs)), xs)[1])
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0)  # the first batch is scheduled...
        later = [asyncio.ensure_future(b.submit(x)) for x in range(1, 6)]  # ...these queue
        assert await first == 0 and [await t for t in later] == [1, 2, 3, 4, 5]

    asyncio.run(main())
    assert sum(sizes) == 6 and len(sizes) <= 2


def test_a_lone_request_is_not_held_back():
    async def main() -> float:
        b: MicroBatcher[int, int] = MicroBatcher(lambda xs: xs, max_batch=64)
        t0 = time.perf_counter()
        for x in range(50):
            assert await b.submit(x) == x
        return (time.perf_counter() - t0) / 50

    # no timer: one request at a time costs a loop iteration, not a batching window
    assert asyncio.run(main()) < 0.01


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    calls = []

    def flaky(xs: list[int]) -> list[int]:
        calls.append(list(xs))
        if len(calls) == 1:
            raise RuntimeError("store down")
        return xs

    async def main() -> None:
        b = MicroBatcher(flaky)
        with pytest.raises(RuntimeError, match="store down"):
            await b.submit(1)
        assert await b.submit(2) == 2

    asyncio.run(main())


def test_a_wrong_number_of_results_is_an_error_not_a_mixup():
    async def main() -> None:
        b: MicroBatcher[int, int] = MicroBatcher(lambda xs: xs[:-1])
        with pytest.raises(RuntimeError, match="gave 0 results"):
            await b.submit(1)

    asyncio.run(main())


def test_a_cancelled_request_is_skipped():
    seen: list[list[int]] = []

    def record(xs: list[int]) -> list[int]:
        seen.append(list(xs))
        return xs

    async def main() -> None:
        b = MicroBatcher(record)
        tasks = [asyncio.ensure_future(b.submit(x)) for x in (1, 2, 3)]
        await asyncio.sleep(0)  # all three submitted; the batch has not run yet
        tasks[1].cancel()  # the client of request 2 hung up
        assert await tasks[0] == 1 and await tasks[2] == 3

    asyncio.run(main())
    assert seen == [[1, 3]]


def test_bad_batch_size():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda xs: xs, max_batch=0)
