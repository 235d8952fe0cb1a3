"""'What would this rule have done?': replay a rule, as edited, over stored samples.

The metric's history gives one value per evaluation step over the period, at the rule's own
resolution (replay.py); the engine's own state machine (transitions.decide) runs over it.
Reminders are counted at the repeat interval (history has no acknowledgements, so this is
the most a rule could have sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.alerting.metrics import REGISTRY, Point
from monitoring.alerting.replay import Grid
from monitoring.alerting.transitions import Decision, Tracker, decide
from monitoring.models import AlertRule

PREVIEW_DAYS = 7


@dataclass
class ReplayedIncident:
    opened_at: datetime
    resolved_at: datetime | None
    peak: float
    peak_text: str = ""


@dataclass
class Preview:
    supported: bool
    days: int
    points: int = 0
    points_with_data: int = 0
    incidents: list[ReplayedIncident] = field(default_factory=list)
    notifications: int = 0
    breaching_evaluations: int = 0
    step_seconds: int = 0
    resolution_seconds: int = 0
    note: str = ""
    # The metric at every evaluation the table counts: the chart draws these very points.
    series: list[Point] = field(default_factory=list)

    @property
    def incident_count(self) -> int:
        return len(self.incidents)


def preview(rule: AlertRule, now: datetime | None = None, days: int = PREVIEW_DAYS) -> Preview:
    now = now or timezone.now()
    metric = REGISTRY.get(rule.metric)
    if metric is None or metric.history is None:
        return Preview(
            False,
            days,
            note="This metric is a live check (a probe or a process's liveness) with no "
            "stored history to replay.",
        )
    grid = Grid.for_window(rule.window_seconds)
    series = metric.history(now - timedelta(days=days), now, rule.window_seconds)
    result = Preview(
        True,
        days,
        points=len(series),
        step_seconds=grid.step,
        resolution_seconds=grid.resolution,
        series=series,
    )
    if not grid.exact:
        result.note = (
            f"Samples are replayed in {grid.resolution}-second buckets, coarser than the "
            f"{grid.step}-second evaluation step: a spike shorter than that is averaged."
        )
    tracker = Tracker()
    current: ReplayedIncident | None = None
    last_notified: datetime | None = None
    for moment, value in series:
        if value is not None:
            result.points_with_data += 1
            if rule.breaches(value):
                result.breaching_evaluations += 1
        decision = decide(rule, tracker, value, moment, open_incident=current is not None)
        if decision == Decision.OPEN:
            assert value is not None
            current = ReplayedIncident(moment, None, value)
            result.incidents.append(current)
            result.notifications += 1
            last_notified = moment
        elif decision == Decision.STILL_FIRING:
            assert current is not None
            assert value is not None
            current.peak = (
                max(current.peak, value)
                if rule.comparison in ("gt", "gte")
                else min(current.peak, value)
            )
            repeat = rule.repeat_interval_seconds
            if repeat and last_notified and moment - last_notified >= timedelta(seconds=repeat):
                result.notifications += 1
                last_notified = moment
        elif decision == Decision.RESOLVE:
            assert current is not None
            current.resolved_at = moment
            result.notifications += 1  # the resolved reply
            current = None
    for incident in result.incidents:
        incident.peak_text = metric.format(incident.peak)
    return result
