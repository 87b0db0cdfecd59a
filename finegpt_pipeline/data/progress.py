"""Progress lines for long stages (tokenize, stats on a full shard), through any
`report(line)` callable: the CLI prints to stderr, the Dagster assets pass `context.log.info`.

A stage reports one line when it starts and one when it ends. In between, a line comes once
10% more of the work is done but never within 10 s of the previous one, and after 60 s
without one: a stage that takes seconds (the 300-document sample) says two lines, a full
shard a few dozen, each with row groups done, documents, tokens, rate and ETA.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

Report = Callable[[str], None]

MIN_INTERVAL_S = 10.0
MAX_SILENCE_S = 60.0
STEP = 0.1


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """The project's one duration format: '850ms', '12s', '3m20s', '1h02m', '3d04h'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 48 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Progress:
    """Counts a stage's work in `total` units (row groups) and reports as the module says."""

    def __init__(self, report: Report | None, stage: str, total: int, unit: str = "row groups",
                 clock: Callable[[], float] = time.monotonic):
        self.report, self.stage, self.total, self.unit, self.clock = report, stage, total, unit, clock
        self.start = self.last_time = clock()
        self.last_fraction = 0.0
        self.done = self.docs = self.tokens = 0

    def begin(self, what: str) -> None:
        if self.report:
            self.report(f"{self.stage}: {what}")

    def advance(self, units: int = 1, docs: int = 0, tokens: int = 0) -> None:
        self.done += units
        self.docs += docs
        self.tokens += tokens
        if not self.report or self.done >= self.total:
            return
        now, fraction = self.clock(), self.done / max(self.total, 1)
        since = now - self.last_time
        if (fraction - self.last_fraction >= STEP and since >= MIN_INTERVAL_S) \
                or since >= MAX_SILENCE_S:
            self.last_time, self.last_fraction = now, fraction
            self.report(f"{self.stage}: {self._counts()}, {self._rate(now)}")

    def note(self, what: str) -> None:
        """A phase change worth a line only on a stage that is already taking a while."""
        if self.report and self.clock() - self.start >= MIN_INTERVAL_S:
            self.last_time = self.clock()
            self.report(f"{self.stage}: {what} ({duration(self.last_time - self.start)} so far)")

    def finish(self, what: str = "done") -> None:
        if self.report:
            elapsed = self.clock() - self.start
            self.report(f"{self.stage}: {what}: {self.docs:,} docs, {self.tokens:,} tokens "
                        f"in {duration(elapsed)}")

    def _counts(self) -> str:
        return (f"{self.done}/{self.total} {self.unit} ({self.done / max(self.total, 1):.0%}), "
                f"{self.docs:,} docs, {self.tokens:,} tokens")

    def _rate(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed * (self.total - self.done) / max(self.done, 1)
        return f"{self.tokens / elapsed:,.0f} tokens/s, ETA {duration(eta)}"
