"""Plain progress lines for long stages whose output is a log, not a terminal.

`dvc repro`, CI and `nohup ... > log` capture stdout: a progress bar there is either silent or a
wall of carriage returns. `ProgressLine` prints one self-contained line every N units instead
(`bert: step 120/1132 (11%), loss 0.712, 3m12s elapsed, ETA 27m01s`), with an ETA from the units
done in this process (a resumed run does not count the steps it skipped as fast ones).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def is_terminal(stream: Any = None) -> bool:
    """True when `stream` (default stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """45s, 3m12s, 1h02m: short enough for a log line, precise enough to plan with."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressLine:
    """Prints `name: <unit> done/total (pct), <fields>, elapsed, ETA` every `every` units and at the end."""

    def __init__(
        self,
        name: str,
        total: int,
        every: int,
        *,
        unit: str = "step",
        start: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.total = int(total)
        self.every = int(every)
        self.unit = unit
        self.start = int(start)
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.last_printed = -1

    def line(self, done: int, **fields: Any) -> str:
        elapsed = self.clock() - self.started
        parts = [
            f"{self.unit} {done}/{self.total}" + (f" ({100 * done / self.total:.0f}%)" if self.total else "")
        ]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        parts.append(f"{format_duration(elapsed)} elapsed")
        fresh = done - self.start  # units done in this process: the rate the rest will go at
        if fresh > 0 and done < self.total:
            parts.append(f"ETA {format_duration(elapsed / fresh * (self.total - done))}")
        return f"{self.name}: " + ", ".join(parts)

    def update(self, done: int, force: bool = False, **fields: Any) -> str | None:
        """Print (and return) a line when `done` is a multiple of `every`, the last unit, or forced."""
        due = self.every > 0 and (done % self.every == 0 or done == self.total)
        if not (due or force) or done == self.last_printed:
            return None
        self.last_printed = done
        text = self.line(done, **fields)
        print(text, file=self.stream if self.stream is not None else sys.stdout, flush=True)
        return text
