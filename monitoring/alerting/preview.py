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

from inkwave.lib.formats import plural
from monitoring.alerting.metrics import REGISTRY, Point
from monitoring.alerting.replay import Grid
from monitoring.alerting.scopes import scope_name
from monitoring.alerting.transitions import Decision, Tracker, decide
from monitoring.models import AlertRule

PREVIEW_DAYS = 7


@dataclass
class ReplayedIncident:
    opened_at: datetime
    resolved_at: datetime | None
    peak: float
    peak_text: str = ""
    scope: str = ""
    scope_text: str = ""


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
    # The metric at every evaluation the table counts: the chart draws these very points
    # (of one scope, for a per-venue metric: `shown_scope`, of `scopes` replayed).
    series: list[Point] = field(default_factory=list)
    shown_scope: str = ""
    scopes: int = 1

    @property
    def incident_count(self) -> int:
        return len(self.incidents)


def preview(rule: AlertRule, now: datetime | None = None, days: int = PREVIEW_DAYS) -> Preview:
    now = now or timezone.now()
    metric = REGISTRY.get(rule.metric)
    if metric is None or (metric.history is None and metric.scoped_history is None):
        return Preview(
            False,
            days,
            note="This metric is a live check (a probe or a process's liveness) with no "
            "stored history to replay.",
        )
    grid = Grid.for_window(rule.window_seconds)
    start = now - timedelta(days=days)
    if metric.scoped_history is not None:
        per_scope = metric.scoped_history(start, now, rule.window_seconds, None)
    else:
        assert metric.history is not None
        per_scope = {"": metric.history(start, now, rule.window_seconds)}
    result = Preview(True, days, step_seconds=grid.step, resolution_seconds=grid.resolution)
    for scope, series in per_scope.items():
        replay_series(rule, scope, series, result)
    result.points = sum(len(series) for series in per_scope.values())
    # The chart draws one series: the scope with the most incidents (the first, if none).
    shown = max(per_scope, key=lambda s: sum(i.scope == s for i in result.incidents), default="")
    result.series = per_scope.get(shown, [])
    result.shown_scope = shown
    result.scopes = len(per_scope)
    result.incidents.sort(key=lambda i: i.opened_at)
    notes = []
    if metric.scoped_history is not None:
        notes.append(
            f"Replayed for {plural(len(per_scope), 'venue')} (the busiest of the week); "
            f"the chart shows {scope_name(shown) if shown else 'none'}."
        )
    if metric.history is not None and not grid.exact:
        notes.append(
            f"Samples are replayed in {grid.resolution}-second buckets, coarser than the "
            f"{grid.step}-second evaluation step: a spike shorter than that is averaged."
        )
    result.note = " ".join(notes)
    for incident in result.incidents:
        incident.peak_text = metric.format(incident.peak)
        incident.scope_text = scope_name(incident.scope) if incident.scope else ""
    return result


def replay_series(rule: AlertRule, scope: str, series: list[Point], result: Preview) -> None:
    """The engine's state machine over one scope's series, counted into `result`."""
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
            current = ReplayedIncident(moment, None, value, scope=scope)
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
