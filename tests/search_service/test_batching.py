"""search_service.batching.MicroBatcher on its own (the embedder's tests exercise it with the real model):
concurrent items share batches, each caller gets its own result as soon as it is delivered, a failure reaches
every waiter of its batch and no other, and a closed batcher refuses work."""
from __future__ import annotations

import asyncio
import threading

import pytest

from search_service.batching import MicroBatcher


async def test_concurrent_items_share_batches_within_max_batch_and_keep_their_results():
    seen: list[list[int]] = []

    def run(items, deliver):
        seen.append(list(items))
        deliver(range(len(items)), [x * 10 for x in items])

    b = MicroBatcher(run, max_batch=4, wait_ms=5.0)
    try:
        got = await asyncio.gather(*(b.submit(i) for i in range(10)))
        assert got == [i * 10 for i in range(10)]
        assert b.batches_run == len(seen) < 10 and max(len(s) for s in seen) <= 4
        assert sorted(x for s in seen for x in s) == list(range(10))
    finally:
        b.close()


async def test_each_caller_is_answered_when_its_item_is_delivered_not_at_the_batch_end():
    release = threading.Event()

    def run(items, deliver):
        deliver([0], [f"{items[0]}!"])          # the first item is done early ...
        release.wait(10)                        # ... the rest of the batch is still working
        deliver(range(1, len(items)), [f"{x}!" for x in items[1:]])

    b = MicroBatcher(run, max_batch=8, wait_ms=5.0)
    try:
        first, second = asyncio.ensure_future(b.submit("a")), asyncio.ensure_future(b.submit("b"))
        assert await asyncio.wait_for(first, 5) == "a!"
        assert not second.done()
        release.set()
        assert await asyncio.wait_for(second, 5) == "b!"
    finally:
        release.set()
        b.close()


async def test_a_failure_reaches_every_waiter_of_its_batch_and_undelivered_items_get_an_error():
    def run(items, deliver):
        if "boom" in items:
            raise ValueError("bad batch")
        deliver([0], ["only the first"])        # the others are never delivered

    b = MicroBatcher(run, max_batch=8, wait_ms=5.0)
    try:
        results = await asyncio.gather(b.submit("boom"), b.submit("x"), return_exceptions=True)
        assert all(isinstance(r, ValueError) and "bad batch" in str(r) for r in results)
        ok, lost = await asyncio.gather(b.submit("y"), b.submit("z"), return_exceptions=True)
        assert ok == "only the first"
        assert isinstance(lost, RuntimeError) and "without a result" in str(lost)
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        await b.submit("late")
