"""Flapping: an alert that opens and resolves more than its flap threshold within the flap
window is announced once; when it holds one state for the rule's settle period it has
settled, and the channel is told which (a settled firing alert is then announced as new)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction

from monitoring.alerting import groups, incidents, messages, routing, suppression
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
)
from notifications.outbox import enqueue

logger = structlog.get_logger(__name__)


def _last_settled(rule: AlertRule, scope: str) -> datetime | None:
    return (
        IncidentEvent.objects.filter(
            incident__rule=rule, incident__scope=scope, kind=IncidentEventKind.SETTLED
        )
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )


def series_start(rule: AlertRule, scope: str, now: datetime) -> datetime:
    """Where the current run of opens and resolves began: the flap window, cut at the last
    time this alert settled (a settled alert starts afresh)."""
    since = now - timedelta(seconds=settings.ALERT_FLAP_WINDOW_SECONDS)
    settled = _last_settled(rule, scope)
    return max(since, settled) if settled else since


def run_start(rule: AlertRule, scope: str) -> datetime:
    """Where the current run began, however long ago: every run ends with a SETTLED entry,
    so the run is what came after the last one (its notices may be older than the window)."""
    return _last_settled(rule, scope) or datetime.min.replace(tzinfo=UTC)


def changes_since(rule: AlertRule, scope: str, since: datetime) -> int:
    return IncidentEvent.objects.filter(
        incident__rule=rule,
        incident__scope=scope,
        kind__in=[IncidentEventKind.OPENED, IncidentEventKind.RESOLVED],
        at__gte=since,
    ).count()


def flap_notices(rule: AlertRule, scope: str, since: datetime) -> list[IncidentEvent]:
    return list(
        IncidentEvent.objects.filter(
            incident__rule=rule,
            incident__scope=scope,
            kind=IncidentEventKind.FLAPPING,
            notification__isnull=False,
            at__gte=since,
        ).select_related("notification", "notification__destination")
    )


def start_flapping(incident: Incident, now: datetime, since: datetime, changes: int) -> None:
    incidents.mark_flapping(incident)
    if flap_notices(incident.rule, incident.scope, since):
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, "flapping: already announced")
        return
    reason = suppression.suppression(incident, now)
    if reason:
        incidents.record(incident, now, IncidentEventKind.FLAPPING, f"{changes} changes; {reason}")
        return
    first = (
        IncidentEvent.objects.filter(
            incident__rule=incident.rule,
            incident__scope=incident.scope,
            kind=IncidentEventKind.OPENED,
            at__gte=since,
        )
        .order_by("at")
        .values_list("at", flat=True)
        .first()
    )
    notice = messages.flapping(incident, changes, (now - (first or since)).total_seconds())
    for destination in routing.destinations_for(incident.rule):
        (row,) = enqueue(routing.kind_for(incident.rule), notice, destinations=[destination])
        incidents.record(
            incident,
            now,
            IncidentEventKind.FLAPPING,
            f"{changes} changes in the flap window; notice to {destination.name}",
            notification=row,
        )


def settle(incident: Incident, now: datetime, state: str) -> bool:
    """End a run of flapping for the incident's rule and scope; False if another cycle did.

    The run's flapping notices are edited to say how it ended; a run that ended resolved is
    also said in the channel (an alert that settles firing is announced by the caller)."""
    rule, scope = incident.rule, incident.scope
    since = run_start(rule, scope)
    if not incidents.end_flapping(rule, scope):
        return False
    incident.flapping = False
    changes = changes_since(rule, scope, since)
    incidents.record(
        incident, now, IncidentEventKind.SETTLED, f"settled {state} after {changes} changes"
    )
    for notice in flap_notices(rule, scope, since):
        original = notice.notification
        assert original is not None
        groups.edit(
            original,
            messages.flap_notice_settled(incident, changes, state, now),
            routing.kind_for(rule),
            now,
        )
        if state == "resolved":
            (row,) = enqueue(
                routing.kind_for(rule),
                messages.settled_resolved(incident, changes),
                destinations=[original.destination],
                thread_parent=original,
                broadcast=True,
            )
            incidents.record(
                incident, now, IncidentEventKind.NOTE, "settled: resolved", notification=row
            )
    logger.info("alert_settled", incident=incident.pk, state=state, changes=changes)
    return True


def settle_quiet_runs(now: datetime) -> int:
    """Runs of flapping that ended resolved and stayed so for their settle period: say so."""
    settled = 0
    latest: dict[tuple[int, str], Incident] = {}
    for incident in Incident.objects.filter(flapping=True).select_related("rule").order_by("pk"):
        latest[(incident.rule_id, incident.scope)] = incident
    for incident in latest.values():
        if incident.resolved_at is None:
            continue  # firing: it settles (or not) as it fires, in remind_or_escalate
        if now - incident.resolved_at < timedelta(seconds=incident.rule.settle_seconds):
            continue
        with transaction.atomic():
            settled += settle(incident, now, "resolved")
    return settled
