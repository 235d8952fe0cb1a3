"""Replaying a metric over stored samples at the engine's own cadence (the rule preview).

The engine evaluates every ALERT_EVALUATION_SECONDS over a window ending at that moment.
A replay does the same: samples are summed (or maxed) into buckets of `resolution` seconds
in the database, and a window slides over those buckets one evaluation step at a time. The
resolution divides both the step and the rule's window, so a 10-second spike under a
10-second window is seen as the engine saw it, not diluted over a minute. Sliding sums and
maxima cost O(buckets + steps), whatever the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Func

# Finer buckets than this cost more than they show: samples are written every few seconds.
MIN_RESOLUTION_SECONDS = 10


@dataclass(frozen=True)
class Grid:
    step: int  # seconds between evaluations
    resolution: int  # seconds per bucket

    @classmethod
    def for_window(cls, window_seconds: int) -> Grid:
        step = max(1, int(settings.ALERT_EVALUATION_SECONDS))
        resolution = math.gcd(step, max(1, window_seconds), 60)
        return cls(step, max(MIN_RESOLUTION_SECONDS, resolution))

    @property
    def exact(self) -> bool:
        """False when buckets are coarser than the engine's step (spikes may be averaged)."""
        return self.resolution <= self.step


class EpochBucket(Func):
    """The bucket b whose interval (b·R, (b+1)·R] holds the time: ceil(epoch / R) - 1.

    Intervals are open on the left and closed on the right, as the engine's window
    (end - seconds, end] is, so a sample exactly on a boundary falls where the engine puts it.
    """

    output_field = BigIntegerField()

    def __init__(self, expression: Any, resolution: int) -> None:
        super().__init__(expression)
        self.resolution = int(resolution)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        epoch = "EXTRACT(EPOCH FROM %(expressions)s)"
        template = f"(CAST(CEIL({epoch} / {self.resolution}) AS BIGINT) - 1)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # julianday keeps the fraction of a second (strftime('%%s') drops it); SQLite may
        # lack CEIL, so: trunc(x) + (x > trunc(x)) for positive x.
        x = f"((julianday(%(expressions)s) - 2440587.5) * 86400.0 / {self.resolution})"
        template = f"(CAST({x} AS INTEGER) + ({x} > CAST({x} AS INTEGER)) - 1)"
        return self.as_sql(compiler, connection, template=template, **extra)


class EpochFloor(Func):
    """The bucket b whose interval [b·R, (b+1)·R) holds the time: floor(epoch / R).

    For periods that start on the hour (a quarter hour's orders), not the engine's windows.
    """

    output_field = BigIntegerField()

    def __init__(self, expression: Any, resolution: int) -> None:
        super().__init__(expression)
        self.resolution = int(resolution)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = f"CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / {self.resolution}) AS BIGINT)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Whole milliseconds first (julianday's float may put 12:15:00 at 12:14:59.9999),
        # then integer division: the bucket of 12:14:59.7 is 12:00's.
        ms = "CAST(ROUND((julianday(%(expressions)s) - 2440587.5) * 86400000.0) AS INTEGER)"
        template = f"({ms} / {self.resolution * 1000})"
        return self.as_sql(compiler, connection, template=template, **extra)


def moments(start: datetime, end: datetime, step: int) -> list[int]:
    """Evaluation times (epoch seconds, multiples of step) in (start, end]."""
    first = (int(start.timestamp()) // step + 1) * step
    last = int(end.timestamp())
    return list(range(first, last + 1, step))


def _bucket_range(moment: int, window: int, resolution: int) -> tuple[int, int]:
    """Buckets inside the engine's window (moment - window, moment]: [lo, hi).

    Bucket b holds (b·R, (b+1)·R]; with moment and window multiples of R these are exactly
    the buckets from (moment - window) / R to moment / R - 1.
    """
    return -(-(moment - window) // resolution), moment // resolution


def sliding_sums(
    buckets: Mapping[int, Mapping[str, float]],
    fields: Sequence[str],
    start: datetime,
    end: datetime,
    window: int,
    grid: Grid,
    formula: Callable[[dict[str, float]], float | None],
) -> list[tuple[datetime, float | None]]:
    """formula(sums over each window) at every evaluation; None where no bucket has data."""
    points: list[tuple[datetime, float | None]] = []
    if not buckets:
        return [(_at(m), None) for m in moments(start, end, grid.step)]
    first = min(buckets)
    size = max(buckets) - first + 2
    # prefix[f][i]: the sum of field f over buckets first .. first+i-1; filled: the same for
    # "has data", so an empty window is told apart from a window of zeros.
    prefix = {name: [0.0] * size for name in fields}
    filled = [0] * size
    for i in range(1, size):
        row = buckets.get(first + i - 1)
        filled[i] = filled[i - 1] + (row is not None)
        for name in fields:
            prefix[name][i] = prefix[name][i - 1] + (float(row[name] or 0) if row else 0.0)
    for moment in moments(start, end, grid.step):
        lo, hi = _bucket_range(moment, window, grid.resolution)
        lo_i = min(max(lo - first, 0), size - 1)
        hi_i = min(max(hi - first, 0), size - 1)
        if hi_i <= lo_i or filled[hi_i] == filled[lo_i]:
            points.append((_at(moment), None))
            continue
        sums = {name: prefix[name][hi_i] - prefix[name][lo_i] for name in fields}
        points.append((_at(moment), formula(sums)))
    return points


def sliding_max(
    buckets: Mapping[int, float],
    start: datetime,
    end: datetime,
    window: int,
    grid: Grid,
) -> list[tuple[datetime, float | None]]:
    """The largest bucket value in each window (a monotonic queue: each bucket enters once)."""
    ordered = sorted(buckets.items())
    queue: deque[tuple[int, float]] = deque()
    index = 0
    points: list[tuple[datetime, float | None]] = []
    for moment in moments(start, end, grid.step):
        lo, hi = _bucket_range(moment, window, grid.resolution)
        while index < len(ordered) and ordered[index][0] < hi:
            bucket, value = ordered[index]
            while queue and queue[-1][1] <= value:
                queue.pop()
            queue.append((bucket, value))
            index += 1
        while queue and queue[0][0] < lo:
            queue.popleft()
        points.append((_at(moment), queue[0][1] if queue else None))
    return points


def _at(moment: int) -> datetime:
    return datetime.fromtimestamp(moment, tz=UTC)
