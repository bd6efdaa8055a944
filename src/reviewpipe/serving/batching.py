"""Dynamic micro-batching: concurrent requests share model calls, fairly, and fail alone.

Knows nothing of HTTP: a request is submitted with its size (reviews); worker threads form
batches of up to `max_batch_size` reviews and call `run_batch(pieces)`, one result per piece.

- Adaptive wait: a server `announce()`s a request as soon as its headers arrive; a worker waits
  (at most `max_wait_ms`) only while announced requests are still on their way, so a lone
  request never pays the wait, and requests that queue up during a model call form the next batch.
- Fairness: a divisible request is cut into pieces; each batch takes rows round-robin from every
  waiting request (an equal share each), so a 1-review request is in the next batch even behind
  two 4,000-review requests, instead of waiting for them to finish.
- Isolation: when a merged model call fails, each request in it is retried on its own, so only
  the request that breaks the model fails; the others get their answers.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("reviewpipe.serve")
_ids = itertools.count()


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one submitted request's `item`."""

    item: Any
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(eq=False)
class _Request:
    item: Any
    size: int
    divisible: bool
    future: Future
    id: int = field(default_factory=lambda: next(_ids))
    taken: int = 0  # rows handed to a batch so far
    done: int = 0  # rows answered so far
    results: dict[int, Any] = field(default_factory=dict)  # piece start -> piece result
    failed: bool = False

    @property
    def remaining(self) -> int:
        return self.size - self.taken


def concatenate(results: list[Any]) -> Any:
    """Default `join`: a split request's piece results are lists; concatenate them."""
    return [row for result in results for row in result]


class MicroBatcher:
    """Worker threads running `run_batch(pieces) -> results` (one per piece, same order).

    Several workers let several batches run at once (torch releases the GIL), which uses all
    cores without large intra-op thread teams, the robust choice on a shared CPU.
    `join(piece_results)` rebuilds a split request's result from its pieces, in row order.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Piece]], list[Any]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
        on_batch: Callable[[int, int], None] | None = None,
        workers: int = 1,
        join: Callable[[list[Any]], Any] = concatenate,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.join = join
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch  # (requests, reviews) per model call, for metrics
        self._cv = threading.Condition()
        self._pending: deque[_Request] = deque()  # requests with rows not yet in a batch
        self._announced = 0
        self._closed = False
        self._workers = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------ producer side

    def announce(self) -> None:
        """A request is on its way (headers read, body not yet parsed): worth waiting for."""
        with self._cv:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced request will not be submitted after all (it failed validation)."""
        with self._cv:
            self._announced = max(0, self._announced - 1)
            self._cv.notify_all()

    def submit(self, item: Any, size: int = 1, divisible: bool = False, announced: bool = False) -> Future:
        """Queue one request of `size` rows; its Future resolves to its result (or exception).
        A divisible request may be answered in several pieces, joined with `join`."""
        future: Future = Future()
        request = _Request(item, max(1, size), divisible, future)
        with self._cv:
            if announced:
                self._announced = max(0, self._announced - 1)
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._pending.append(request)
            self._cv.notify_all()
        return future

    def queued(self) -> int:
        """Rows waiting for a batch (a gauge for /metrics)."""
        with self._cv:
            return sum(r.remaining for r in self._pending)

    def close(self, timeout: float | None = None) -> None:
        """Finish everything already queued, then stop the workers."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------ worker side

    def _queued_rows(self) -> int:
        return sum(r.remaining for r in self._pending)

    def _take(self) -> list[tuple[_Request, Piece]] | None:
        """Wait for work, then form one batch; None when closed and drained."""
        with self._cv:
            while not self._pending:
                if self._closed:
                    return None
                self._cv.wait()
            deadline = time.monotonic() + self.max_wait
            while self._announced and not self._closed and self._queued_rows() < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            return self._form_batch()

    def _form_batch(self) -> list[tuple[_Request, Piece]]:
        """Round-robin over waiting requests: each gets an equal share of the batch's room.
        Requests that still have rows go to the back, so the next batch starts with others."""
        batch: list[tuple[_Request, Piece]] = []
        room = self.max_batch_size
        while room > 0 and self._pending:
            share = max(1, room // len(self._pending))
            progressed = False
            for _ in range(len(self._pending)):
                if room <= 0:
                    break
                request = self._pending.popleft()
                if request.failed or request.future.cancelled():
                    continue  # its other pieces failed already, or nobody waits for it
                if request.divisible:
                    take = min(share, request.remaining, room)
                elif request.size <= room or not batch:
                    take = request.size  # whole, alone if it is bigger than a batch
                else:
                    self._pending.append(request)  # does not fit: first in line next time
                    continue
                batch.append((request, Piece(request.item, request.taken, request.taken + take)))
                request.taken += take
                room -= take
                progressed = True
                if request.remaining:
                    self._pending.append(request)
            if not progressed:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[_Request, Piece]]) -> None:
        try:
            results = self._call([piece for _, piece in batch])
        except Exception as exc:
            requests = list(dict.fromkeys(request for request, _ in batch))
            if len(requests) == 1:
                self._fail(requests[0], exc)
                return
            # One bad request must not fail the others: retry each on its own.
            log.warning(
                "a merged model call of %d requests failed (%s); retrying each alone", len(requests), exc
            )
            for request in requests:
                own = [(r, piece) for r, piece in batch if r is request]
                try:
                    self._deliver(own, self._call([piece for _, piece in own]))
                except Exception as alone:
                    self._fail(request, alone)
            return
        self._deliver(batch, results)
        if self.on_batch is not None:
            self.on_batch(len({request.id for request, _ in batch}), sum(p.size for _, p in batch))

    def _call(self, pieces: list[Piece]) -> list[Any]:
        results = self.run_batch(pieces)
        if len(results) != len(pieces):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(pieces)} pieces")
        return results

    def _deliver(self, batch: list[tuple[_Request, Piece]], results: list[Any]) -> None:
        finished = []
        with self._cv:  # two workers may answer pieces of one request at once
            for (request, piece), result in zip(batch, results, strict=True):
                if request.failed:
                    continue
                request.results[piece.start] = result
                request.done += piece.size
                if request.done == request.size:
                    finished.append(request)
        for request in finished:
            parts = [request.results[start] for start in sorted(request.results)]
            try:
                outcome = parts[0] if len(parts) == 1 else self.join(parts)
            except Exception as exc:  # a join that cannot combine: that request's failure
                self._settle(request.future, exc)
            else:
                self._settle(request.future, outcome, ok=True)

    def _fail(self, request: _Request, exc: BaseException) -> None:
        with self._cv:
            request.failed = True
        self._settle(request.future, exc)

    @staticmethod
    def _settle(future: Future, value: Any, ok: bool = False) -> None:
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except InvalidStateError:
            pass  # cancelled (the client went away) or already failed
