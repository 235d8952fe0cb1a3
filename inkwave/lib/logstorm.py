"""Failures that come in storms, logged once per interval each, with a count of the rest.

When Redis goes away, every connection of a web process fails to leave its room and every
reconnecting screen fails to join one: the soak saw 2,300 tracebacks in seconds from one
process, and formatting them took a quarter of its event loop while /health waited behind
it (up to 4.8 s). The first failure of a kind in each interval is logged whole; the others
are counted and the next line that is logged says how many it stood for (`suppressed`).
Counting, not the log, is what the metrics read: the monitor counts every one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable


class LogStorm:
    """`admit(kind)`: None when this failure is only counted, else how many were counted
    since the last one logged. O(1), no I/O; one per process, keyed by a fixed set of kinds."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()

    def admit(self, kind: str) -> int | None:
        now = self.clock()
        if now < self.next_at.get(kind, 0.0):
            self.suppressed[kind] += 1
            return None
        self.next_at[kind] = now + self.interval
        return self.suppressed.pop(kind, 0)
