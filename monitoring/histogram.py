"""Fixed-bucket latency histograms, cheap to update and to add together.

The bucket bounds are fixed for the whole deployment, so histograms from different workers
and intervals add up bucket by bucket; percentiles come from the summed buckets by linear
interpolation inside the bucket, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Upper bounds in milliseconds; one more bucket catches everything above the last bound.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip
BUCKET_COUNT = len(LATENCY_BOUNDS_MS) + 1


class Histogram:
    """Cumulative counts since the process started; never reset, so readers take deltas.

    The smallest and largest observations are kept per interval: `snapshot()` returns those
    since the previous snapshot and starts a new interval (the flusher is its one caller).
    """

    __slots__ = ("count", "counts", "high", "low", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKET_COUNT
        self.total = 0.0
        self.count = 0
        self.low: float | None = None
        self.high: float | None = None

    def observe(self, value_ms: float) -> None:
        if value_ms < 0:
            value_ms = 0.0
        self.counts[bisect_left(LATENCY_BOUNDS_MS, value_ms)] += 1
        self.total += value_ms
        self.count += 1
        if self.low is None or value_ms < self.low:
            self.low = value_ms
        if self.high is None or value_ms > self.high:
            self.high = value_ms

    def snapshot(self) -> HistogramSnapshot:
        low, high = self.low, self.high
        self.low = self.high = None
        return HistogramSnapshot(tuple(self.counts), self.total, self.count, low, high)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    counts: tuple[int, ...]
    total: float
    count: int
    low: float | None = None  # the extremes observed since the previous snapshot
    high: float | None = None

    @classmethod
    def empty(cls) -> HistogramSnapshot:
        return cls((0,) * BUCKET_COUNT, 0.0, 0)

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """What happened between `earlier` and this snapshot (the extremes are this one's)."""
        return HistogramSnapshot(
            tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            self.total - earlier.total,
            self.count - earlier.count,
            self.low,
            self.high,
        )


def add_buckets(rows: Iterable[Sequence[int]]) -> list[int]:
    summed = [0] * BUCKET_COUNT
    for row in rows:
        if len(row) != BUCKET_COUNT:
            continue  # written with other bounds; cannot be added honestly
        for index, value in enumerate(row):
            summed[index] += value
    return summed


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a bucketed distribution, or None when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, bucket in enumerate(counts):
        if bucket and seen + bucket >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]  # above the last bound: report the bound
            lower = 0.0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * ((rank - seen) / bucket)
        seen += bucket
    return LATENCY_BOUNDS_MS[-1]
