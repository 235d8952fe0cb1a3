"""What holds an alert's notifications back: a silence, an inhibition (its cause fires, or
fired within this rule's window), or Slack failing for the alert about Slack failing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import structlog
from django.db.models import Q, QuerySet

from monitoring.alerting import routing
from monitoring.alerting.metrics import REGISTRY, SLACK_FAILING
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentStatus,
    Inhibition,
    Silence,
)
from notifications.models import Destination

logger = structlog.get_logger(__name__)


def silenced(incident: Incident, now: datetime) -> str:
    silence = silence_on(incident, now)
    return f"silenced: {silence.reason}" if silence else ""


def _candidates(rule: AlertRule, now: datetime) -> QuerySet[Silence]:
    return (
        Silence.objects.filter(Q(rule__isnull=True) | Q(rule=rule))
        .filter(Q(severity="") | Q(severity=rule.severity))
        # One-off silences that are over (or not begun) need no look; windows do.
        .exclude(weekdays="", ends_at__lte=now)
        .exclude(weekdays="", starts_at__gt=now)
    )


def silence_on(incident: Incident, now: datetime) -> Silence | None:
    """The silence that holds this incident's notifications back now, if any."""
    rule = incident.rule
    for silence in _candidates(rule, now).filter(Q(scope="") | Q(scope=incident.scope)):
        if silence.matches(rule, incident.scope) and silence.active_at(now):
            return silence
    return None


def silenced_scopes(rule: AlertRule, scopes: Iterable[str], now: datetime) -> set[str]:
    """Those of `scopes` a silence holds back now (silence_on for many, in one query)."""
    silences = [s for s in _candidates(rule, now) if s.active_at(now)]
    return {scope for scope in scopes if any(s.matches(rule, scope) for s in silences)}


def _overlapping(rule: AlertRule, now: datetime) -> Q:
    """The incidents of a cause that hold this rule back now.

    A dependent's value covers its whole window: an outage that ended inside that window
    still shapes it (clients thrown out by a Redis outage reconnect into it), so the
    dependent stays held back until the window no longer overlaps the outage. A value
    that leaves outages out (processes' silence, counted only while the database was up)
    is held back only while its cause fires: a day's window must not hide for a day a
    process that died after a minute's outage."""
    overlaps = Q(status=IncidentStatus.FIRING)
    metric = REGISTRY.get(rule.metric)
    if metric is None or metric.outages_shape_window:
        overlaps |= Q(resolved_at__gte=now - timedelta(seconds=rule.window_seconds))
    return overlaps


def inhibited(incident: Incident, now: datetime) -> str:
    rule = incident.rule
    overlaps = _overlapping(rule, now)
    for inhibition in Inhibition.objects.filter(target=rule).select_related("source"):
        causes = Incident.objects.filter(overlaps, rule=inhibition.source)
        if inhibition.same_scope:
            causes = causes.filter(scope=incident.scope)
        for status in causes.order_by("status").values_list("status", flat=True)[:1]:
            if status == IncidentStatus.FIRING:
                return f"inhibited: {inhibition.source.name} is firing"
            return f"inhibited: {inhibition.source.name} fired within this rule's window"
    return ""


def inhibited_scopes(rule: AlertRule, scopes: Iterable[str], now: datetime) -> set[str]:
    """Those of `scopes` an inhibition holds back now (inhibited for many: a query per
    inhibition of the rule, not per scope)."""
    wanted, held = set(scopes), set()
    overlaps = _overlapping(rule, now)
    for inhibition in Inhibition.objects.filter(target=rule):
        causes = Incident.objects.filter(overlaps, rule_id=inhibition.source_id)
        if not inhibition.same_scope:
            if causes.exists():
                return wanted
            continue
        held |= set(causes.filter(scope__in=wanted).values_list("scope", flat=True))
    return held


def held_scopes(rule: AlertRule, scopes: Iterable[str], now: datetime) -> set[str]:
    """Those of `scopes` a silence or an inhibition holds back now: for each, `suppression`
    gives a reason (it may give one for the others too: Slack failing)."""
    wanted = list(scopes)
    if not wanted:
        return set()
    silenced = silenced_scopes(rule, wanted, now)
    rest = [scope for scope in wanted if scope not in silenced]
    return silenced | (inhibited_scopes(rule, rest, now) if rest else set())


def suppression(incident: Incident, now: datetime) -> str:
    """Why this incident must not notify now, or "" if it may."""
    reason = silenced(incident, now) or inhibited(incident, now)
    if reason:
        return reason
    if incident.rule.metric == SLACK_FAILING:
        return _slack_failing_suppression(incident.rule)
    return ""


def _slack_failing_suppression(rule: AlertRule) -> str:
    if not Destination.objects.filter(enabled=True, failing_since__isnull=False).exists():
        return "Slack takes messages again: each channel that failed gets a summary"
    if not routing.destinations_for(rule):
        return "Slack is failing for every destination of this alert: recorded here"
    return ""
