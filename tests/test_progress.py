"""Plain progress lines for logs: when they print, what they say, and the ETA arithmetic."""

from __future__ import annotations

import io

from reviewpipe.progress import ProgressLine, format_duration, is_terminal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_at_a_glance() -> None:
    assert [format_duration(s) for s in (0, 45.4, 192, 3720, -3)] == ["0s", "45s", "3m12s", "1h02m", "0s"]


def test_a_line_every_n_units_and_at_the_end_with_an_eta_from_this_process_rate() -> None:
    clock, out = Clock(), io.StringIO()
    progress = ProgressLine("bert", 10, 4, stream=out, clock=clock)
    printed = []
    for step in range(1, 11):
        clock.now += 3.0  # 3 s a step
        printed.append(progress.update(step, loss=0.51234))
    assert [i + 1 for i, p in enumerate(printed) if p] == [4, 8, 10]
    assert printed[3] == "bert: step 4/10 (40%), loss 0.5123, 12s elapsed, ETA 18s"
    assert printed[9] == "bert: step 10/10 (100%), loss 0.5123, 30s elapsed"
    assert out.getvalue().splitlines() == [p for p in printed if p]
    assert progress.update(10) is None  # never twice for one unit


def test_a_resumed_run_estimates_from_the_units_it_did_itself() -> None:
    clock = Clock()
    progress = ProgressLine("bert", 100, 10, start=50, stream=io.StringIO(), clock=clock)
    clock.now += 20.0
    assert progress.update(60) == "bert: step 60/100 (60%), 20s elapsed, ETA 1m20s"  # 2 s/step, 40 left


def test_nothing_prints_when_every_is_zero_unless_forced() -> None:
    progress = ProgressLine("automl", 3, 0, unit="model", stream=io.StringIO(), clock=Clock())
    assert progress.update(1) is None
    assert (
        progress.update(1, force=True, name="LightGBM")
        == "automl: model 1/3 (33%), name LightGBM, 0s elapsed, ETA 0s"
    )


def test_a_string_buffer_is_not_a_terminal() -> None:
    assert is_terminal(io.StringIO()) is False
