"""Time spans as lists of (start, end): merged, clipped, subtracted and measured."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

Span = tuple[datetime, datetime]


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, overlapping or touching spans joined, empty ones dropped."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def clip(spans: Iterable[Span], start: datetime, end: datetime) -> list[Span]:
    return merge((max(s, start), min(e, end)) for s, e in spans)


def subtract(spans: Iterable[Span], holes: Iterable[Span]) -> list[Span]:
    """What of `spans` lies outside every hole."""
    left: list[Span] = []
    cuts = merge(holes)
    for start, end in merge(spans):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                left.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            left.append((cursor, end))
    return left


def seconds(spans: Iterable[Span]) -> float:
    return sum((end - start).total_seconds() for start, end in merge(spans))
