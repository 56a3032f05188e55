"""A generic async micro-batcher: concurrent single-item calls handed to a blocking batch function together.

Items submitted within ``wait_ms`` of each other, or while every worker is busy, go to ``run`` as one batch
(at most ``max_batch``) in a worker thread. ``run(items, deliver)`` may answer items as it goes:
``deliver(indices, results)`` resolves those items' callers at once (an embedder answers each query when its
own onnxruntime call is done, not at the batch's end); items it never delivers get an error.

The batcher follows the running event loop: used from a new loop (tests, a restarted app), its state starts
over. Nothing here knows about embeddings.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
Deliver = Callable[[Sequence[int], Sequence[Any]], None]


def _resolve(futures: list[asyncio.Future], results: Sequence[Any]) -> None:
    for fut, res in zip(futures, results):
        if not fut.done():
            fut.set_result(res)


class MicroBatcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T], Deliver], None], *, max_batch: int = 32, wait_ms: float = 1.0,
                 workers: int = 1, name: str = "batch") -> None:
        self._run_fn = run
        self.max_batch = max(1, int(max_batch))
        self.wait_ms = max(0.0, float(wait_ms))
        self._workers = max(1, int(workers))
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=name)
        self._lock = threading.Lock()   # guards the state against a change of event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.batches_run = 0          # batches handed to a worker (for metrics and tests)

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("batcher is closed")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:          # first use, or a new event loop
                self._loop, self._pending, self._busy, self._timer = loop, [], 0, None
            fut = loop.create_future()
            self._pending.append((item, fut))
            if len(self._pending) >= self.max_batch:
                self._schedule_flush(now=True)
            elif self._timer is None:
                self._schedule_flush(now=False)
        return await fut

    def _schedule_flush(self, now: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if now or self.wait_ms <= 0:
            self._timer = self._loop.call_soon(self._flush)
        else:
            self._timer = self._loop.call_later(self.wait_ms / 1000.0, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:     # called early (a batch finished): the timer is not needed
            self._timer.cancel()
            self._timer = None
        # While every worker is busy, items keep accumulating; a finishing batch flushes them.
        while self._pending and self._busy < self._workers:
            batch = [(t, f) for t, f in self._pending[:self.max_batch] if not f.done()]
            del self._pending[:self.max_batch]
            if not batch:
                continue
            self._busy += 1
            task = self._loop.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        generation = self._loop
        try:
            items = [t for t, _ in batch]

            def deliver(idx: Sequence[int], results: Sequence[Any]) -> None:
                loop.call_soon_threadsafe(_resolve, [batch[i][1] for i in idx], results)

            self.batches_run += 1       # counted when handed over: its callers may be answered before it ends
            await loop.run_in_executor(self._executor, functools.partial(self._run_fn, items, deliver))
            for _, fut in batch:        # (deliver's callbacks ran before this: the loop runs them in order)
                if not fut.done():
                    fut.set_exception(RuntimeError("batch ended without a result for this item"))
        except BaseException as exc:  # noqa: BLE001 - hand any failure to every waiter
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._loop is generation:   # (state was reset if the batcher moved to another loop)
                self._busy -= 1
                if self._pending and not self._closed:
                    self._flush()          # they have already waited for this batch: go now

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("batcher closed"))
        self._pending = []
        self._executor.shutdown(wait=True, cancel_futures=True)
