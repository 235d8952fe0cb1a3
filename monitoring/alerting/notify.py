"""Turning incident transitions into Slack notifications, with the fight against fatigue:
silences and maintenance windows, inhibition by a failed dependency, flapping detection,
grouping of alerts that fire together, reminders and escalation.

Everything here runs inside the engine's transaction for the incident.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from monitoring.alerting import messages
from monitoring.alerting.metrics import OUTBOX_AGE, REGISTRY, SLACK_FAILING
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    OnCallShift,
    Severity,
    Silence,
)
from notifications import delivery
from notifications.formatting import Composed
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue, routed_destinations

logger = structlog.get_logger(__name__)


def kind_for(rule: AlertRule) -> NotificationKind:
    if rule.metric.startswith("ws."):
        return NotificationKind.WEBSOCKET_ALERT
    return NotificationKind.SYSTEM_ALERT


def destinations_for(rule: AlertRule) -> list[Destination]:
    targets = list(rule.destinations.all()) or routed_destinations(kind_for(rule))
    if rule.metric == SLACK_FAILING:
        # News of Slack failing goes only where Slack still takes messages; the failing
        # channels get a summary once they are back (notifications.delivery).
        targets = [d for d in targets if d.failing_since is None]
    return targets


def _event(
    incident: Incident, now: datetime, kind: str, message: str = "", **extra: object
) -> None:
    IncidentEvent.objects.create(incident=incident, at=now, kind=kind, message=message, **extra)


def suppression(incident: Incident, now: datetime) -> str:
    """Why this incident must not notify now, or "" if it may."""
    rule = incident.rule
    for silence in Silence.objects.all():
        if silence.matches(rule, incident.scope) and silence.active_at(now):
            return f"silenced: {silence.reason}"
    metric = REGISTRY.get(rule.metric)
    # A dependent's value covers its whole window: an outage that ended inside that window
    # still shapes it (clients thrown out by a Redis outage reconnect into it), so the
    # dependent stays held back until the window no longer overlaps the outage.
    overlaps = Q(status=IncidentStatus.FIRING) | Q(
        resolved_at__gte=now - timedelta(seconds=rule.window_seconds)
    )
    for dependency in metric.depends_on if metric else ():
        outages = Incident.objects.filter(overlaps, rule__metric=f"dependency.{dependency}_down")
        for status in outages.order_by("status").values_list("status", flat=True)[:1]:
            if status == IncidentStatus.FIRING:
                return f"inhibited: {dependency} is unreachable"
            return f"inhibited: {dependency} was unreachable within this rule's window"
    if rule.metric == SLACK_FAILING:
        return _slack_failing_suppression(rule)
    return ""


def _slack_failing_suppression(rule: AlertRule) -> str:
    if not Destination.objects.filter(enabled=True, failing_since__isnull=False).exists():
        return "Slack takes messages again: each channel that failed gets a summary"
    if not destinations_for(rule):
        return "Slack is failing for every destination of this alert: recorded here"
    return ""


def _flapping(incident: Incident, now: datetime) -> tuple[bool, int]:
    since = now - timedelta(seconds=settings.ALERT_FLAP_WINDOW_SECONDS)
    changes = IncidentEvent.objects.filter(
        incident__rule=incident.rule,
        incident__scope=incident.scope,
        kind__in=[IncidentEventKind.OPENED, IncidentEventKind.RESOLVED],
        at__gte=since,
    ).count()
    return changes > incident.rule.flap_threshold, changes


def _announced_flapping(incident: Incident, now: datetime) -> bool:
    since = now - timedelta(seconds=settings.ALERT_FLAP_WINDOW_SECONDS)
    return IncidentEvent.objects.filter(
        incident__rule=incident.rule,
        incident__scope=incident.scope,
        kind=IncidentEventKind.FLAPPING,
        at__gte=since,
    ).exists()


def opened(incident: Incident, now: datetime) -> None:
    flapping, changes = _flapping(incident, now)
    if flapping:
        announced = _announced_flapping(incident, now)
        Incident.objects.filter(pk=incident.pk).update(flapping=True)
        incident.flapping = True
        _event(incident, now, IncidentEventKind.FLAPPING, f"{changes} changes in the flap window")
        if announced:
            _event(incident, now, IncidentEventKind.SUPPRESSED, "flapping: already announced")
            return
        _send(
            incident, now, messages.flapping(incident, changes, settings.ALERT_FLAP_WINDOW_SECONDS)
        )
        return
    if (
        Incident.objects.filter(
            rule=incident.rule, scope=incident.scope, flapping=True, status=IncidentStatus.RESOLVED
        )
        .exclude(pk=incident.pk)
        .filter(resolved_at__gte=now - timedelta(seconds=settings.ALERT_FLAP_WINDOW_SECONDS))
        .exists()
    ):
        _event(incident, now, IncidentEventKind.SETTLED, "no longer flapping")
    reason = suppression(incident, now)
    if reason:
        _event(incident, now, IncidentEventKind.SUPPRESSED, reason)
        return
    _announce(incident, now)


def _announce(incident: Incident, now: datetime) -> None:
    """The opening message, to every destination (joining a group where one is forming)."""
    first: Notification | None = None
    past_the_queue = incident.rule.metric == OUTBOX_AGE
    for destination in destinations_for(incident.rule):
        row = (
            _send_past_the_queue(incident, destination)
            if past_the_queue
            else _add_to_group(incident, destination, now)
        )
        _event(
            incident, now, IncidentEventKind.NOTIFIED, f"to {destination.name}", notification=row
        )
        first = first or row
    Incident.objects.filter(pk=incident.pk).update(notification=first, last_notified_at=now)
    incident.notification, incident.last_notified_at = first, now


def _add_to_group(incident: Incident, destination: Destination, now: datetime) -> Notification:
    """Join a not-yet-sent message of alerts that fired within the group wait, or start one."""
    kind = kind_for(incident.rule)
    wait = settings.ALERT_GROUP_WAIT_SECONDS
    candidate = (
        None
        if wait <= 0
        else (
            Notification.objects.select_for_update()
            .filter(
                destination=destination,
                kind=kind,
                status=NotificationStatus.PENDING,
                context__group=True,
                # The real clock, not the cycle's: a group that is already due is not joined.
                next_attempt_at__gt=timezone.now(),
                attempts=0,
            )
            .order_by("-pk")
            .first()
        )
    )
    if candidate is not None:
        ids = [*candidate.context.get("incidents", []), incident.pk]
        members = list(Incident.objects.filter(pk__in=ids).select_related("rule").order_by("pk"))
        message = messages.incident_message(members)
        updated = Notification.objects.filter(
            pk=candidate.pk, status=NotificationStatus.PENDING
        ).update(
            text=message.text,
            blocks=message.blocks,
            context={**candidate.context, "incidents": ids},
            revision=F("revision") + 1,
        )
        if updated:
            return candidate
    (row,) = enqueue(
        kind,
        messages.incident_message([incident]),
        destinations=[destination],
        context={"group": True, "incidents": [incident.pk]},
        not_before=now + timedelta(seconds=wait),
    )
    return row


def _send_past_the_queue(incident: Incident, destination: Destination) -> Notification:
    """A row of its own, sent by this process once the transaction commits.

    For an alert about the outbox: the drain tasks it is about may be the ones not running.
    The row is claimed like any other, so it goes out once; if it cannot go now (Slack
    fails, the channel's slot is taken), the outbox sends it like any other.
    """
    (row,) = enqueue(
        kind_for(incident.rule), messages.incident_message([incident]), destinations=[destination]
    )
    transaction.on_commit(lambda: _send_now(row.pk))
    return row


def _send_now(notification_id: int) -> None:
    try:
        delivery.send_now([notification_id])
    except Exception:
        # The row is in the outbox: it still goes out with the rest, only later.
        logger.exception("alert_send_now_failed", notification=notification_id)


def _announcements(incident: Incident) -> list[Notification]:
    return [
        event.notification
        for event in incident.events.filter(
            kind=IncidentEventKind.NOTIFIED, notification__isnull=False
        ).select_related("notification")
        if event.notification is not None
    ]


def _refresh_announcements(incident: Incident) -> None:
    """Show the incident's new state in its original message(s), in place."""
    for original in _announcements(incident):
        ids = original.context.get("incidents", [incident.pk])
        members = list(Incident.objects.filter(pk__in=ids).select_related("rule").order_by("pk"))
        message = messages.incident_message(members)
        if original.status == NotificationStatus.PENDING and original.attempts == 0:
            # Not sent yet: change it before it goes (unless a worker took it meanwhile).
            rewritten = Notification.objects.filter(
                pk=original.pk, status=NotificationStatus.PENDING, attempts=0
            ).update(text=message.text, blocks=message.blocks, revision=F("revision") + 1)
            if rewritten:
                continue
        (row,) = enqueue(
            kind_for(incident.rule),
            message,
            destinations=[original.destination],
            update_target=original,
        )
        _event(
            incident,
            timezone.now(),
            IncidentEventKind.NOTE,
            f"original message in {original.destination.name} updated in place",
            notification=row,
        )


def resolved(incident: Incident, now: datetime) -> None:
    originals = _announcements(incident)
    if incident.flapping:
        _event(incident, now, IncidentEventKind.SUPPRESSED, "flapping: resolution not announced")
        return
    if not originals:
        return  # it never reached Slack (silenced or inhibited): nothing to resolve there
    reply = messages.resolved_reply(incident)
    for original in originals:
        (row,) = enqueue(
            kind_for(incident.rule),
            reply,
            destinations=[original.destination],
            thread_parent=original,
        )
        _event(
            incident,
            now,
            IncidentEventKind.NOTE,
            f"resolution replied in the thread in {original.destination.name}",
            notification=row,
        )
    _refresh_announcements(incident)


def acknowledged(incident: Incident, now: datetime) -> None:
    _refresh_announcements(incident)


def _send(
    incident: Incident,
    now: datetime,
    message: Composed,
    *,
    to: list[Destination] | None = None,
    kind_event: str = IncidentEventKind.NOTIFIED,
) -> None:
    originals = {n.destination_id: n for n in _announcements(incident)}
    for destination in to or destinations_for(incident.rule):
        (row,) = enqueue(
            kind_for(incident.rule),
            message,
            destinations=[destination],
            thread_parent=originals.get(destination.pk),
            context={"incident": incident.pk},
        )
        if kind_event == IncidentEventKind.NOTIFIED and incident.notification is None:
            Incident.objects.filter(pk=incident.pk).update(notification=row)
            incident.notification = row
        _event(incident, now, kind_event, f"to {destination.name}", notification=row)
    Incident.objects.filter(pk=incident.pk).update(last_notified_at=now)
    incident.last_notified_at = now


def remind_or_escalate(incident: Incident, now: datetime) -> None:
    if incident.acknowledged_at is not None or incident.flapping:
        return
    if incident.notification is None:
        # Never announced (silenced or inhibited when it opened): announce it as soon as
        # nothing holds it back any more, rather than never.
        if not suppression(incident, now):
            _event(incident, now, IncidentEventKind.NOTE, "no longer held back: announcing")
            _announce(incident, now)
        return
    rule = incident.rule
    if (
        rule.severity == Severity.CRITICAL
        and rule.escalation_delay_seconds
        and incident.escalated_at is None
        and now - incident.opened_at >= timedelta(seconds=rule.escalation_delay_seconds)
    ):
        _escalate(incident, now)
        return
    if not rule.repeat_interval_seconds or incident.last_notified_at is None:
        return
    if now - incident.last_notified_at < timedelta(seconds=rule.repeat_interval_seconds):
        return
    reason = suppression(incident, now)
    if reason:
        return
    _send(incident, now, messages.reminder(incident), kind_event=IncidentEventKind.REMINDED)


def _escalate(incident: Incident, now: datetime) -> None:
    Incident.objects.filter(pk=incident.pk).update(escalated_at=now)
    incident.escalated_at = now
    reason = suppression(incident, now)
    if reason:
        _event(incident, now, IncidentEventKind.SUPPRESSED, f"escalation {reason}")
        return
    shift = OnCallShift.on_call(now)
    target = (
        [incident.rule.escalation_destination] if incident.rule.escalation_destination else None
    )
    _send(
        incident,
        now,
        messages.escalation(incident, shift),
        to=target,
        kind_event=IncidentEventKind.ESCALATED,
    )
    logger.warning(
        "incident_escalated", incident=incident.pk, on_call=shift.person if shift else None
    )
