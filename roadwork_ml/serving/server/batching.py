"""Dynamic batching with Triton's semantics.

Requests (each ``k`` images, never split across batches) wait in one FIFO queue. Whenever a
model instance is free, the scheduler walks the queue in order, accumulating requests while
the batch stays ≤ ``max_batch_size``, and

* sends the batch at once when it reached ``max_batch_size`` (or the next request does not fit);
* otherwise sends the longest prefix whose size is one of ``preferred_batch_sizes`` at once;
* otherwise waits until the oldest request has been queued ``max_queue_delay_us`` µs (new
  arrivals re-run the walk), then sends everything it accumulated.

Only requests whose images have the head request's shape are batched together (Triton's
rule for differing shapes), so a champion of another input size never mixes into a batch.

With ``max_queue_delay_us`` 0 it never waits. A request whose deadline passes while queued
is dropped with :class:`RequestTimeout`; one with more images than ``max_batch_size`` is
refused (Triton refuses it too). Batches execute in a thread pool of ``instances`` threads
(one model instance each), so the event loop never runs the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class RequestTimeout(TimeoutError):
    """The request's deadline passed before its batch ran."""


class ShuttingDown(RuntimeError):
    """The server stopped taking requests."""


class BatchTooLarge(ValueError):
    """A single request holds more images than ``max_batch_size``."""


@dataclass
class _Pending:
    images: np.ndarray  # [k, 3, S, S] float32
    future: asyncio.Future
    enqueued: float  # time.perf_counter()
    deadline: float  # time.perf_counter() seconds

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


@dataclass
class BatchResult:
    """What a request gets back: its rows of the batch output, and the timings (seconds)."""

    value: Any  # ``run_batch``'s return value sliced with ``slice_rows``
    queue_seconds: float
    inference_seconds: float
    batch_size: int


def plan_batch(
    sizes: Sequence[int],
    waited_s: float,
    max_batch_size: int,
    preferred: Sequence[int],
    max_delay_s: float,
) -> int:
    """How many queued requests (a prefix of ``sizes``) to send now; 0 = wait.

    ``waited_s`` is how long the oldest request has waited. Pure function of the queue state,
    so the policy is unit-tested on its own."""
    total, count, best_preferred = 0, 0, 0
    pref = set(preferred)
    for s in sizes:
        if total + s > max_batch_size:
            return count  # full: the next request does not fit
        total += s
        count += 1
        if total in pref:
            best_preferred = count
    if total == max_batch_size or count < len(sizes):
        return count
    if best_preferred:
        return best_preferred
    if waited_s >= max_delay_s:
        return count
    return 0


@dataclass
class DynamicBatcher:
    """``run_batch(instance, images[B,3,S,S]) -> (output, model_tag)`` runs on one of ``instances``
    threads; ``slice_rows(output, start, stop)`` cuts one request's rows out of it.
    ``on_batch(batch_size, inference_seconds)`` is called after every batch (metrics)."""

    run_batch: Callable[[int, np.ndarray], Any]
    slice_rows: Callable[[Any, int, int], Any]
    max_batch_size: int
    preferred_batch_sizes: Sequence[int] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    on_batch: Callable[[int, float], None] | None = None
    _queue: deque = field(default_factory=deque, init=False)
    _free: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or any(not 0 < p <= self.max_batch_size for p in self.preferred_batch_sizes):
            raise ValueError(
                f"need max_batch_size >= 1 and preferred sizes in 1..max_batch_size, got {self.max_batch_size}, {list(self.preferred_batch_sizes)}"
            )
        self._pool = ThreadPoolExecutor(self.instances, thread_name_prefix="roadwork-model")
        self._free = list(range(self.instances))
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._closed = False
        self._scheduler: asyncio.Task | None = None

    @property
    def queued_images(self) -> int:
        return sum(p.size for p in self._queue)

    def start(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name="roadwork-batcher")

    async def submit(self, images: np.ndarray, deadline: float) -> BatchResult:
        """Queue ``images`` [k, 3, S, S] float32 and wait for its rows; raises
        :class:`RequestTimeout` once ``deadline`` (perf_counter seconds) passes."""
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        if images.shape[0] > self.max_batch_size:
            raise BatchTooLarge(
                f"a request may hold at most max_batch_size = {self.max_batch_size} images, got {images.shape[0]}"
            )
        fut = asyncio.get_running_loop().create_future()
        item = _Pending(images, fut, time.perf_counter(), deadline)
        self._queue.append(item)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            if item in self._queue:
                self._queue.remove(item)
            raise RequestTimeout(f"no answer within the request's timeout ({deadline - item.enqueued:.3f} s)") from None

    async def _schedule(self) -> None:
        delay = self.max_queue_delay_us / 1e6
        while True:
            now = time.perf_counter()
            while self._queue and (self._queue[0].future.done() or self._queue[0].deadline <= now):
                stale = self._queue.popleft()  # timed out (its submit() already raised) or cancelled
                if not stale.future.done():
                    stale.future.set_exception(RequestTimeout("deadline passed while queued"))
            if self._closed and not self._queue:
                return  # close() waits for the running batches
            if not self._queue or not self._free:
                self._wake.clear()
                await self._wake.wait()
                continue
            waited = now - self._queue[0].enqueued
            shape = self._queue[0].images.shape[1:]
            same = []  # like Triton, only requests of the head's shape batch together
            for p in self._queue:
                if p.images.shape[1:] != shape:
                    break
                same.append(p.size)
            n = plan_batch(
                same, waited, self.max_batch_size, self.preferred_batch_sizes, 0.0 if self._closed else delay
            )
            if n == 0 and len(same) < len(self._queue):
                n = len(same)  # the next request has another shape and cannot join: send now
            if n == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay - waited)
                continue
            batch = [self._queue.popleft() for _ in range(n)]
            instance = self._free.pop()
            task = asyncio.get_running_loop().create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, instance: int, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
        try:
            output = await loop.run_in_executor(self._pool, self.run_batch, instance, images)
        except Exception as exc:  # noqa: BLE001 - the batch's requests get the error, the server lives on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._free.append(instance)
            self._wake.set()
        took = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(images), took)
        start = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result(
                    BatchResult(
                        self.slice_rows(output, start, start + p.size),
                        started - p.enqueued,
                        took,
                        len(images),
                    )
                )
            start += p.size

    async def close(self) -> None:
        """Stop taking requests, run what is queued, wait for running batches, stop the threads."""
        self._closed = True
        self._wake.set()
        if self._scheduler is not None:
            await self._scheduler
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._pool.shutdown(wait=True)
