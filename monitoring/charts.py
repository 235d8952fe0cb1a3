"""The JSON a page hands to `InkwaveCharts.fromJson` (static/monitoring/charts.js), typed.

Pages build one ChartSpec on the server, from the same computation that fills their tables,
and render it with `json_script`; the browser only draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NotRequired, TypedDict


class Line(TypedDict):
    label: str
    values: list[float | None]
    dash: NotRequired[list[int]]


class Threshold(TypedDict):
    label: str
    value: float
    kind: Literal["fire", "clear"]


class Span(TypedDict):
    start: int
    end: int | None  # None: still going on
    label: str


class Mark(TypedDict):
    at: int
    label: str


class ChartSpec(TypedDict):
    title: str
    unit: str
    times: list[int]
    series: list[Line]
    thresholds: list[Threshold]
    spans: list[Span]
    marks: list[Mark]
    height: NotRequired[int]


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def chart_unit(unit: str) -> str:
    """An axis label fits 70 px: long units are shortened, and the title says them in full."""
    return {"per minute": "/min", "connections": "", "seconds": "s"}.get(unit, unit)


def spec(
    title: str,
    unit: str,
    points: Sequence[tuple[datetime, float | None]],
    label: str,
    *,
    thresholds: Sequence[Threshold] = (),
    spans: Sequence[Span] = (),
    marks: Sequence[Mark] = (),
) -> ChartSpec:
    """One line over time, from (moment, value) points; None leaves a gap."""
    return ChartSpec(
        title=title,
        unit=unit,
        times=[epoch(moment) for moment, _ in points],
        series=[Line(label=label, values=[value for _, value in points])],
        thresholds=list(thresholds),
        spans=list(spans),
        marks=list(marks),
    )
