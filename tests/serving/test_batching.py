"""Adaptive batching: requests that queue during a batch form the next one; a lone request
waits for nothing; a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.batching import MicroBatcher


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    # (threaded: the first batch is held on its thread while the others queue)
    sizes: list[int] = []
    gate = threading.Event()

    def double(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        gate.wait(5)  # the first batch holds until everything else has queued behind it
        return [2 * x for x in xs]

    async def main() -> list[int]:
        b = MicroBatcher(double, max_batch=8)
        tasks = [asyncio.create_task(b.submit(x)) for x in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        got = await asyncio.gather(*tasks)
        assert b.items == 20 and b.batches == len(sizes)
        return list(got)

    assert asyncio.run(main()) == [2 * x for x in range(20)]
    # 20 requests at once: batches of at most 8, far fewer batches than requests
    assert max(sizes) == 8 and sum(sizes) == 20 and len(sizes) <= 4


@pytest.mark.parametrize("inline", [False, True])
def test_a_lone_request_is_not_held_back(inline):
    async def main() -> float:
        b = MicroBatcher(lambda xs: xs, max_batch=64, inline=inline)
        t0 = time.perf_counter()
        for x in range(50):
            assert await b.submit(x) == x
        return (time.perf_counter() - t0) / 50

    # no timer: one request at a time costs a thread hop, not a batching window
    assert asyncio.run(main()) < 0.01


@pytest.mark.parametrize("inline", [False, True])
def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs(inline):
    calls = []

    def flaky(xs: list[int]) -> list[int]:
        calls.append(list(xs))
        if len(calls) == 1:
            raise RuntimeError("store down")
        return xs

    async def main() -> None:
        b = MicroBatcher(flaky, inline=inline)
        with pytest.raises(RuntimeError, match="store down"):
            await b.submit(1)
        assert await b.submit(2) == 2

    asyncio.run(main())


def test_a_wrong_number_of_results_is_an_error_not_a_mixup():
    async def main() -> None:
        b = MicroBatcher(lambda xs: xs[:-1])
        with pytest.raises(RuntimeError, match="gave 0 results"):
            await b.submit(1)

    asyncio.run(main())


def test_a_cancelled_request_is_skipped():
    seen: list[list[int]] = []
    gate = threading.Event()

    def record(xs: list[int]) -> list[int]:
        seen.append(list(xs))
        gate.wait(5)
        return xs

    async def main() -> None:
        b = MicroBatcher(record)
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(b.submit(2))
        kept = asyncio.create_task(b.submit(3))
        await asyncio.sleep(0.02)
        gone.cancel()
        gate.set()
        assert await first == 1 and await kept == 3

    asyncio.run(main())
    assert seen == [[1], [3]]


def test_inline_batches_form_from_requests_that_arrive_together():
    sizes: list[int] = []

    def record(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return xs

    async def main() -> list[int]:
        b = MicroBatcher(record, max_batch=16, inline=True)
        return list(await asyncio.gather(*(b.submit(x) for x in range(40))))

    assert asyncio.run(main()) == list(range(40))
    assert sum(sizes) == 40 and max(sizes) == 16 and len(sizes) == 3


def test_bad_batch_size():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda xs: xs, max_batch=0)
