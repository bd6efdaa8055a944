"""Dynamic micro-batching: concurrent requests share one model call.

Each request is submitted with its size (reviews); one worker thread takes the oldest request,
waits up to `max_wait_ms` for more until `max_batch_size` reviews are queued, runs them together
and hands each request its own slice of the result. A request larger than the batch runs alone.
The wait is adaptive: a server `announce()`s a request as soon as its headers arrive, and the
worker only waits while announced requests are still on their way, so a lone request never
pays the wait, and requests that queue up during a model call form the next batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class MicroBatcher:
    """Worker threads running `run_batch(items) -> results` (same length, same order).

    Several workers let several batches run at once (torch releases the GIL), which uses all
    cores without large intra-op thread teams, the robust choice on a shared CPU.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
        on_batch: Callable[[int, int], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch  # (requests, reviews) per model call, for metrics
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._announced = 0
        self._announced_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for worker in self._workers:
            worker.start()

    def announce(self) -> None:
        """A request is on its way (headers read, body not yet parsed): worth waiting for."""
        with self._announced_lock:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced request will not be submitted after all (it failed validation)."""
        with self._announced_lock:
            self._announced = max(0, self._announced - 1)

    def submit(self, item: Any, size: int = 1, announced: bool = False) -> Future:
        """Queue one request; its Future resolves to that request's result (or its exception)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        future: Future = Future()
        self._queue.put((item, max(1, size), future))
        if announced:
            self.withdraw()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Finish everything already queued, then stop the worker."""
        self._closed = True
        for _ in self._workers:
            self._queue.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _next(self, timeout: float | None) -> Any:
        return (
            self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        )

    def _loop(self) -> None:
        carry = None  # a request too big for the last batch starts this worker's next one
        while True:
            first, carry = (carry, None) if carry is not None else (self._next(None), None)
            if first is _STOP:
                break
            batch, total, stop_seen = [first], first[1], False
            deadline = time.monotonic() + self.max_wait
            while total < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    # Nothing announced: take only what is already queued. Else wait in short
                    # slices, re-checking whether anyone is still on the way.
                    entry = self._next(min(remaining, 0.001) if self._announced else 0)
                except queue.Empty:
                    if not self._announced and self._queue.empty():
                        break
                    continue
                if entry is _STOP:
                    stop_seen = True
                    break
                if total + entry[1] > self.max_batch_size:
                    carry = entry
                    break
                batch.append(entry)
                total += entry[1]
            self._run(batch, total)
            if stop_seen:
                break
        while True:  # submissions that raced past close() still get an answer
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:  # another worker's marker
                self._queue.put(entry)
                break
            self._run([entry], entry[1])

    def _run(self, batch: list[tuple[Any, int, Future]], total: int) -> None:
        live = [entry for entry in batch if entry[2].set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.run_batch([item for item, _, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} requests")
        except BaseException as exc:  # every waiting request learns why
            for _, _, future in live:
                future.set_exception(exc)
            return
        for (_, _, future), result in zip(live, results, strict=True):
            future.set_result(result)
        if self.on_batch is not None:
            self.on_batch(len(live), total)
