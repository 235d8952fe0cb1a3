"""Turning incident transitions into Slack notifications, with the fight against fatigue:
silences and maintenance windows, inhibition (rows an operator edits), flapping that is
announced once and again when it settles, groups of alerts that fire, grow and resolve
together as one message, reminders and escalation.

Everything here runs inside the engine's transaction for the incident.

What a channel hears, by design:
- an alert opens: one post (or it joins a group's post: the post is edited in place and one
  reply says what joined);
- it resolves: one reply in its thread and the post edited in place; members of a group that
  end together get one reply and one edit between them;
- it flaps: one notice; when it has held one state for the rule's settle period, the notice
  is edited and the channel is told which state (firing is announced as a new alert);
- unacknowledged: reminders at the rule's interval; critical: one escalation, shown in the
  channel, that says loudly when nobody is on call;
- silenced: nothing is posted while the silence is on (posts are edited in place, which
  notifies nobody); when it ends, one message says what changed meanwhile, and what still
  fires is announced.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.db import transaction

from monitoring.alerting import flapping, groups, incidents, messages, routing, suppression
from monitoring.alerting.metrics import OUTBOX_AGE
from monitoring.models import (
    Incident,
    IncidentEventKind,
    OnCallShift,
    Severity,
)
from notifications import delivery
from notifications.formatting import Composed
from notifications.models import Destination, Notification
from notifications.outbox import enqueue

logger = structlog.get_logger(__name__)


def opened(incident: Incident, now: datetime) -> None:
    rule, scope = incident.rule, incident.scope
    since = flapping.series_start(rule, scope, now)
    changes = flapping.changes_since(rule, scope, since)
    if changes > rule.flap_threshold:
        flapping.start_flapping(incident, now, since, changes)
        return
    earlier_run = Incident.objects.filter(rule=rule, scope=scope, flapping=True)
    if earlier_run.exclude(pk=incident.pk).exists():
        # It flapped, fell quiet for less than the settle period, and opened again with the
        # flap window no longer full: the run is over, and this opening is announced.
        flapping.settle(incident, now, "firing")
    reason = suppression.suppression(incident, now)
    if reason:
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, reason)
        return
    _announce(incident, now)


def _announce(incident: Incident, now: datetime, message: Composed | None = None) -> None:
    """The opening message, to every destination (in a group where one is open)."""
    first: Notification | None = None
    past_the_queue = incident.rule.metric == OUTBOX_AGE
    for destination in routing.destinations_for(incident.rule):
        if past_the_queue:
            row = _send_past_the_queue(incident, destination)
        elif message is not None:
            (row,) = enqueue(
                routing.kind_for(incident.rule),
                message,
                destinations=[destination],
                context={"group": True},
                coalesce_key=groups.group_key(incident),
            )
        else:
            row = groups.add_to_group(incident, destination, now)
        incidents.record(
            incident, now, IncidentEventKind.NOTIFIED, f"to {destination.name}", notification=row
        )
        first = first or row
    incidents.announced(incident, first, now)


def _send_past_the_queue(incident: Incident, destination: Destination) -> Notification:
    """A row of its own, sent by this process once the transaction commits.

    For an alert about the outbox: the drain tasks it is about may be the ones not running.
    The row is claimed like any other, so it goes out once; if it cannot go now (Slack
    fails, the channel's slot is taken), the outbox sends it like any other.
    """
    (row,) = enqueue(
        routing.kind_for(incident.rule),
        messages.incident_message([incident]),
        destinations=[destination],
    )
    transaction.on_commit(lambda: _send_now(row.pk))
    return row


def _send_now(notification_id: int) -> None:
    try:
        delivery.send_now([notification_id])
    except Exception:
        # The row is in the outbox: it still goes out with the rest, only later.
        logger.exception("alert_send_now_failed", notification=notification_id)


def resolved(incident: Incident, now: datetime) -> None:
    if incident.flapping:
        incidents.record(
            incident, now, IncidentEventKind.SUPPRESSED, "flapping: resolution not announced"
        )
        return
    posts = groups.announcements(incident)
    if not posts:
        return  # it never reached Slack (silenced or inhibited): nothing to resolve there
    reason = suppression.silenced(incident, now)
    if reason:
        # Nothing is posted inside a silence: the post is corrected in place (which notifies
        # nobody) and the silence's closing summary lists the resolution.
        incidents.record(
            incident, now, IncidentEventKind.SUPPRESSED, f"resolution reply held: {reason}"
        )
    for post in posts:
        groups.ended(post, incident, now, reply=not reason)
    groups.refresh_escalations(incident, now)


def acknowledged(incident: Incident, now: datetime) -> None:
    groups.refresh_announcements(incident, now)


def _send(
    incident: Incident,
    now: datetime,
    message: Composed,
    *,
    kind_event: str,
    to: Iterable[Destination] | None = None,
    broadcast: bool = False,
    context: dict[str, Any] | None = None,
) -> None:
    """A follow-up in the incident's thread in each destination (plainly where it has none)."""
    posts = {n.destination_id: n for n in groups.announcements(incident)}
    for destination in to or routing.destinations_for(incident.rule):
        parent = posts.get(destination.pk)
        (row,) = enqueue(
            routing.kind_for(incident.rule),
            message,
            destinations=[destination],
            thread_parent=parent,
            context={"incident": incident.pk, **(context or {})},
            broadcast=broadcast and parent is not None,
        )
        incidents.record(incident, now, kind_event, f"to {destination.name}", notification=row)
    incidents.notified(incident, now)


def follow_up_due(incident: Incident, now: datetime, *, held: bool = False) -> bool:
    """Whether remind_or_escalate may have anything to do for this firing incident now.
    False: it certainly has not, and the engine updates the incident with the others that
    fire on, in bulk (a rule firing at thousands of venues). `held`: a silence or an
    inhibition holds it back now (suppression.held_scopes, asked once for all of a rule's
    scopes)."""
    rule = incident.rule
    if incident.flapping:
        return now - incident.opened_at >= timedelta(seconds=rule.settle_seconds)
    if incident.acknowledged_at is not None:
        return False
    if never_announced(incident):
        # Held back when it opened: announced once nothing holds it back; what still holds
        # it is what remind_or_escalate would find first.
        return not held
    return _escalation_due(incident, now) or _reminder_due(incident, now)


def never_announced(incident: Incident) -> bool:
    return incident.announced_at is None and incident.notification_id is None


def _escalation_due(incident: Incident, now: datetime) -> bool:
    rule = incident.rule
    announced = incident.announced_at or incident.opened_at
    return bool(
        rule.severity == Severity.CRITICAL
        and rule.escalation_delay_seconds
        and incident.escalated_at is None
        and now - announced >= timedelta(seconds=rule.escalation_delay_seconds)
    )


def _reminder_due(incident: Incident, now: datetime) -> bool:
    rule = incident.rule
    return bool(
        rule.repeat_interval_seconds
        and incident.last_notified_at is not None
        and now - incident.last_notified_at >= timedelta(seconds=rule.repeat_interval_seconds)
    )


def remind_or_escalate(incident: Incident, now: datetime) -> None:
    rule = incident.rule
    if incident.flapping:
        if now - incident.opened_at >= timedelta(seconds=rule.settle_seconds):
            # It stopped flapping and holds firing: from now on, an alert like any other.
            since = flapping.series_start(rule, incident.scope, now)
            changes = flapping.changes_since(rule, incident.scope, since)
            if flapping.settle(incident, now, "firing") and not _held(incident, now):
                _announce(incident, now, messages.settled_firing(incident, changes))
        return
    if incident.acknowledged_at is not None:
        return
    if never_announced(incident):
        # Never announced (silenced or inhibited when it opened): announce it as soon as
        # nothing holds it back any more, rather than never. (Announced to no destination
        # counts as announced: it is not tried again every cycle.)
        if not suppression.suppression(incident, now):
            incidents.record(
                incident, now, IncidentEventKind.NOTE, "no longer held back: announcing"
            )
            _announce(incident, now)
        return
    escalate, remind = _escalation_due(incident, now), _reminder_due(incident, now)
    # Whether anything holds them back is asked only when one is due: the engine asks this
    # of every firing incident every cycle (thousands, when a rule fires at every venue).
    if not (escalate or remind) or suppression.suppression(incident, now):
        return  # reminders and escalation wait, and resume when nothing holds them back
    if escalate:
        _escalate(incident, now)
        return
    _send(
        incident,
        now,
        messages.reminder(incident),
        kind_event=IncidentEventKind.REMINDED,
        broadcast=incident.severity == Severity.CRITICAL,
    )


def _held(incident: Incident, now: datetime) -> bool:
    reason = suppression.suppression(incident, now)
    if reason:
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, reason)
    return bool(reason)


def _escalate(incident: Incident, now: datetime) -> None:
    incidents.escalated(incident, now)
    shift = OnCallShift.on_call(now)
    target = incident.rule.escalation_destination
    # In the incident's thread, shown in the channel too: everyone sees that nobody has
    # acknowledged a critical alert (and, loudest, when nobody is on call).
    head = messages.escalation_head(incident, shift)
    _send(
        incident,
        now,
        messages.escalation_again(incident, head),
        to=[target] if target else None,
        kind_event=IncidentEventKind.ESCALATED,
        broadcast=True,
        # It carries the incident's buttons: kept up to date with the announcement
        # (groups.refresh_announcements), its opening lines as they were sent.
        context={"escalation": head},
    )
    logger.warning(
        "incident_escalated", incident=incident.pk, on_call=shift.person if shift else None
    )
