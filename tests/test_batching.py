"""The micro-batcher on its own (no HTTP): merging, the adaptive wait, fairness between big and
small requests, failure isolation, and draining. A gate holds the first model call so that what
is merged depends on what was queued, never on thread scheduling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from reviewpipe.serving.batching import MicroBatcher, Piece


class Model:
    """run_batch for texts: logs each call's pieces, blocks while the gate is closed, echoes
    rows in upper case, and fails any call that contains 'poison'."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[list[list[str]]] = []
        self.started = threading.Event()

    def __call__(self, pieces: list[Piece]) -> list[list[str]]:
        rows = [list(p.item[p.start : p.stop]) for p in pieces]
        self.calls.append(rows)
        self.started.set()
        self.gate.wait(30)
        if any("poison" in text for piece in rows for text in piece):
            raise ValueError("poisoned batch")
        return [[text.upper() for text in piece] for piece in rows]


@pytest.fixture
def model() -> Model:
    return Model()


def make(model: Model, **options: object) -> MicroBatcher:
    settings = {"max_batch_size": 8, "max_wait_ms": 10_000, "workers": 1, **options}
    return MicroBatcher(model, **settings)  # type: ignore[arg-type]


@pytest.fixture
def batcher(model: Model) -> Iterator[MicroBatcher]:
    b = make(model)
    yield b
    model.gate.set()
    b.close(10)


def hold(batcher: MicroBatcher, model: Model) -> Future:
    """Occupy the (single) worker with one call behind the gate."""
    held = batcher.submit(["hold"], 1, divisible=True)
    assert model.started.wait(10)
    return held


def wait_queued(batcher: MicroBatcher, rows: int) -> None:
    deadline = time.monotonic() + 10
    while batcher.queued() != rows:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_requests_queued_during_a_call_form_the_next_batch(batcher: MicroBatcher, model: Model) -> None:
    held = hold(batcher, model)
    futures = [batcher.submit([f"r{i}"], 1, divisible=True) for i in range(5)]
    wait_queued(batcher, 5)
    model.gate.set()
    assert held.result(10) == ["HOLD"]
    assert [f.result(10) for f in futures] == [[f"R{i}"] for i in range(5)]
    assert model.calls == [[["hold"]], [[f"r{i}"] for i in range(5)]]


def test_a_lone_request_does_not_wait_but_an_announced_one_is_waited_for(
    batcher: MicroBatcher, model: Model
) -> None:
    model.gate.set()
    started = time.monotonic()
    assert batcher.submit(["alone"], 1, divisible=True).result(10) == ["ALONE"]
    assert time.monotonic() - started < 5  # max_wait is 10 s: nobody was announced, so no wait

    batcher.announce()  # b's headers have arrived; its body is still coming
    a = batcher.submit(["a"], 1, divisible=True)
    time.sleep(0.2)  # the worker is waiting for b, not running a alone
    assert not a.done()
    b = batcher.submit(["b"], 1, divisible=True, announced=True)
    assert (a.result(10), b.result(10)) == (["A"], ["B"])
    assert model.calls[-1] == [["a"], ["b"]]

    batcher.announce()
    c = batcher.submit(["c"], 1, divisible=True)
    batcher.withdraw()  # the announced request failed validation: stop waiting for it
    assert c.result(5) == ["C"] and model.calls[-1] == [["c"]]


def test_a_small_request_is_not_stuck_behind_big_ones(batcher: MicroBatcher, model: Model) -> None:
    held = hold(batcher, model)
    big_a = [f"a{i}" for i in range(40)]
    big_b = [f"b{i}" for i in range(40)]
    fa = batcher.submit(big_a, 40, divisible=True)
    fb = batcher.submit(big_b, 40, divisible=True)
    fc = batcher.submit(["small"], 1, divisible=True)
    wait_queued(batcher, 81)
    model.gate.set()
    held.result(10)
    assert fc.result(10) == ["SMALL"]
    first = model.calls[1]
    assert ["small"] in first and sum(len(piece) for piece in first) == 8  # a full, shared batch
    assert fa.result(10) == [t.upper() for t in big_a]  # pieces joined back in row order
    assert fb.result(10) == [t.upper() for t in big_b]
    assert all(sum(len(p) for p in call) <= 8 for call in model.calls)
    assert sum(len(p) for call in model.calls[1:] for p in call) == 81


def test_a_failing_merged_call_fails_only_the_bad_request(batcher: MicroBatcher, model: Model) -> None:
    held = hold(batcher, model)
    good = [batcher.submit([f"good {i}"], 1, divisible=True) for i in range(5)]
    bad = batcher.submit(["poison"], 1, divisible=True)
    more = batcher.submit(["good 5", "good 6"], 2, divisible=True)
    wait_queued(batcher, 8)
    model.gate.set()
    held.result(10)
    assert [f.result(10) for f in good] == [[f"GOOD {i}"] for i in range(5)]
    assert more.result(10) == ["GOOD 5", "GOOD 6"]
    with pytest.raises(ValueError, match="poisoned"):
        bad.result(10)
    merged, *alone = model.calls[1:]
    assert sorted(text for piece in merged for text in piece) == sorted(
        [f"good {i}" for i in range(7)] + ["poison"]
    )  # all seven requests shared one call, which failed; then each ran alone:
    assert sorted(sum(call, []) for call in alone) == sorted(
        [[f"good {i}"] for i in range(5)] + [["poison"], ["good 5", "good 6"]]
    )


def test_indivisible_requests_run_whole(model: Model) -> None:
    b = make(model, max_batch_size=4)
    try:
        held = hold(b, model)
        big = b.submit(["x"] * 6, 6)  # bigger than a batch: runs alone, whole
        small = [b.submit([f"s{i}"], 1) for i in range(3)]
        wait_queued(b, 9)
        model.gate.set()
        held.result(10)
        assert big.result(10) == ["X"] * 6 and [f.result(10) for f in small] == [["S0"], ["S1"], ["S2"]]
        assert [len(call) for call in model.calls[1:]] == [1, 3]
        assert model.calls[1] == [["x"] * 6]
    finally:
        model.gate.set()
        b.close(10)


def test_two_workers_split_one_request_and_join_it_in_order() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def run(pieces: list[Piece]) -> list[list[int]]:
        with lock:
            seen.append(threading.get_ident())
        time.sleep(0.01)
        return [[x * 10 for x in p.item[p.start : p.stop]] for p in pieces]

    b = MicroBatcher(run, max_batch_size=8, max_wait_ms=0, workers=2)
    try:
        rows = list(range(100))
        assert b.submit(rows, 100, divisible=True).result(30) == [x * 10 for x in rows]
        assert len(seen) == 13  # ceil(100 / 8) model calls
    finally:
        b.close(10)


def test_close_answers_everything_already_queued(model: Model) -> None:
    b = make(model)
    held = hold(b, model)
    queued = [b.submit([f"q{i}"], 1, divisible=True) for i in range(3)]
    wait_queued(b, 3)
    closer = threading.Thread(target=b.close, args=(10,))
    closer.start()
    model.gate.set()
    closer.join(10)
    assert held.result(1) == ["HOLD"] and [f.result(1) for f in queued] == [["Q0"], ["Q1"], ["Q2"]]
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(["late"], 1)
