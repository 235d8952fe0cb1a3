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

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.alerting import incidents, messages
from monitoring.alerting.metrics import OUTBOX_AGE, SLACK_FAILING
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Inhibition,
    OnCallShift,
    Severity,
    Silence,
)
from notifications import delivery
from notifications.formatting import Composed
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue, replaceable, rewrite_pending, routed_destinations

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


# --- what holds a notification back ------------------------------------------------------


def silenced(incident: Incident, now: datetime) -> str:
    for silence in Silence.objects.all():
        if silence.matches(incident.rule, incident.scope) and silence.active_at(now):
            return f"silenced: {silence.reason}"
    return ""


def inhibited(incident: Incident, now: datetime) -> str:
    rule = incident.rule
    # A dependent's value covers its whole window: an outage that ended inside that window
    # still shapes it (clients thrown out by a Redis outage reconnect into it), so the
    # dependent stays held back until the window no longer overlaps the outage.
    overlaps = Q(status=IncidentStatus.FIRING) | Q(
        resolved_at__gte=now - timedelta(seconds=rule.window_seconds)
    )
    for inhibition in Inhibition.objects.filter(target=rule).select_related("source"):
        causes = Incident.objects.filter(overlaps, rule=inhibition.source)
        if inhibition.same_scope:
            causes = causes.filter(scope=incident.scope)
        for status in causes.order_by("status").values_list("status", flat=True)[:1]:
            if status == IncidentStatus.FIRING:
                return f"inhibited: {inhibition.source.name} is firing"
            return f"inhibited: {inhibition.source.name} fired within this rule's window"
    return ""


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
    if not destinations_for(rule):
        return "Slack is failing for every destination of this alert: recorded here"
    return ""


# --- flapping -----------------------------------------------------------------------------


def _series_start(rule: AlertRule, scope: str, now: datetime) -> datetime:
    """Where the current run of opens and resolves began: the flap window, cut at the last
    time this alert settled (a settled alert starts afresh)."""
    since = now - timedelta(seconds=settings.ALERT_FLAP_WINDOW_SECONDS)
    settled = (
        IncidentEvent.objects.filter(
            incident__rule=rule, incident__scope=scope, kind=IncidentEventKind.SETTLED
        )
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    return max(since, settled) if settled else since


def _changes(rule: AlertRule, scope: str, since: datetime) -> int:
    return IncidentEvent.objects.filter(
        incident__rule=rule,
        incident__scope=scope,
        kind__in=[IncidentEventKind.OPENED, IncidentEventKind.RESOLVED],
        at__gte=since,
    ).count()


def _flap_notices(rule: AlertRule, scope: str, since: datetime) -> list[IncidentEvent]:
    return list(
        IncidentEvent.objects.filter(
            incident__rule=rule,
            incident__scope=scope,
            kind=IncidentEventKind.FLAPPING,
            notification__isnull=False,
            at__gte=since,
        ).select_related("notification", "notification__destination")
    )


def opened(incident: Incident, now: datetime) -> None:
    rule, scope = incident.rule, incident.scope
    since = _series_start(rule, scope, now)
    changes = _changes(rule, scope, since)
    if changes > rule.flap_threshold:
        _flapping(incident, now, since, changes)
        return
    earlier_run = Incident.objects.filter(rule=rule, scope=scope, flapping=True)
    if earlier_run.exclude(pk=incident.pk).exists():
        # It flapped, fell quiet for less than the settle period, and opened again with the
        # flap window no longer full: the run is over, and this opening is announced.
        _settle(incident, now, since, "firing")
    reason = suppression(incident, now)
    if reason:
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, reason)
        return
    _announce(incident, now)


def _flapping(incident: Incident, now: datetime, since: datetime, changes: int) -> None:
    incidents.mark_flapping(incident)
    if _flap_notices(incident.rule, incident.scope, since):
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, "flapping: already announced")
        return
    reason = suppression(incident, now)
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
    for destination in destinations_for(incident.rule):
        (row,) = enqueue(kind_for(incident.rule), notice, destinations=[destination])
        incidents.record(
            incident,
            now,
            IncidentEventKind.FLAPPING,
            f"{changes} changes in the flap window; notice to {destination.name}",
            notification=row,
        )


def _settle(incident: Incident, now: datetime, since: datetime, state: str) -> bool:
    """End a run of flapping for the incident's rule and scope; False if another cycle did.

    The flapping notices are edited to say how it ended; a run that ended resolved is also
    said in the channel (an alert that settles firing is announced by the caller)."""
    rule, scope = incident.rule, incident.scope
    if not incidents.end_flapping(rule, scope):
        return False
    incident.flapping = False
    changes = _changes(rule, scope, since)
    incidents.record(
        incident, now, IncidentEventKind.SETTLED, f"settled {state} after {changes} changes"
    )
    for notice in _flap_notices(rule, scope, since):
        original = notice.notification
        assert original is not None
        _edit(
            original,
            messages.flap_notice_settled(incident, changes, state, now),
            kind_for(rule),
            now,
        )
        if state == "resolved":
            (row,) = enqueue(
                kind_for(rule),
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
            since = _series_start(incident.rule, incident.scope, incident.resolved_at)
            settled += _settle(incident, now, since, "resolved")
    return settled


# --- announcing and groups ----------------------------------------------------------------


def _announce(incident: Incident, now: datetime, message: Composed | None = None) -> None:
    """The opening message, to every destination (in a group where one is open)."""
    first: Notification | None = None
    past_the_queue = incident.rule.metric == OUTBOX_AGE
    for destination in destinations_for(incident.rule):
        if past_the_queue:
            row = _send_past_the_queue(incident, destination)
        elif message is not None:
            (row,) = enqueue(
                kind_for(incident.rule),
                message,
                destinations=[destination],
                context={"group": True},
                coalesce_key=_group_key(incident),
            )
        else:
            row = _add_to_group(incident, destination, now)
        incidents.record(
            incident, now, IncidentEventKind.NOTIFIED, f"to {destination.name}", notification=row
        )
        first = first or row
    incidents.announced(incident, first, now)


def _group_key(incident: Incident) -> str:
    """Alerts share a message when these are equal (Alertmanager's group_by)."""
    rule = incident.rule
    labels = {"rule": str(rule.pk), "venue": incident.scope, "severity": incident.severity}
    chosen = [f"{label}={labels[label]}" for label in rule.group_labels() if label in labels]
    # The outbox's indexed key column: "group:" keeps it apart from other coalescing keys.
    return ";".join([f"group:{kind_for(rule)}", *chosen])[:100]


def members(post: Notification, *also: Incident) -> list[Incident]:
    """The incidents a post announces: those whose timeline says it notified them there."""
    ids = set(
        IncidentEvent.objects.filter(
            kind=IncidentEventKind.NOTIFIED, notification=post
        ).values_list("incident_id", flat=True)
    )
    ids |= set(post.context.get("incidents", []))  # rows written before the events said so
    ids |= {incident.pk for incident in also}
    return list(
        Incident.objects.filter(pk__in=ids)
        .select_related("rule", "acknowledged_by", "resolved_by")
        .order_by("pk")
    )


def _add_to_group(incident: Incident, destination: Destination, now: datetime) -> Notification:
    """Join a group message not yet sent, or an open group's post, or start a group."""
    kind, key = kind_for(incident.rule), _group_key(incident)
    wait = settings.ALERT_GROUP_WAIT_SECONDS
    if wait <= 0:
        (row,) = enqueue(
            kind,
            messages.incident_message([incident]),
            destinations=[destination],
            context={"group": True},
            coalesce_key=key,
        )
        return row
    pending = (
        Notification.objects.select_for_update()
        .filter(
            destination=destination,
            kind=kind,
            status=NotificationStatus.PENDING,
            coalesce_key=key,
            # The real clock, not the cycle's: a group that is already due is not joined.
            next_attempt_at__gt=timezone.now(),
            attempts=0,
            thread_parent__isnull=True,
            update_target__isnull=True,
        )
        .order_by("-pk")
        .first()
    )
    if pending is not None and rewrite_pending(
        pending, messages.incident_message(members(pending, incident))
    ):
        return pending
    post = _open_group(destination, kind, key)
    if post is not None:
        _join(post, incident, now)
        return post
    (row,) = enqueue(
        kind,
        messages.incident_message([incident]),
        destinations=[destination],
        context={"group": True},
        coalesce_key=key,
        not_before=now + timedelta(seconds=wait),
    )
    return row


def _open_group(destination: Destination, kind: str, key: str) -> Notification | None:
    """The latest group post with this key that went (or is going) out and still has a
    member firing: an alert of the same group joins it rather than posting anew."""
    post = (
        Notification.objects.select_for_update()
        .filter(
            destination=destination,
            kind=kind,
            coalesce_key=key,
            thread_parent__isnull=True,
            update_target__isnull=True,
        )
        .exclude(status__in=[NotificationStatus.FAILED, NotificationStatus.SKIPPED])
        .order_by("-pk")
        .first()
    )
    if post is None or not any(m.is_open for m in members(post)):
        return None
    return post


def _join(post: Notification, incident: Incident, now: datetime) -> None:
    """A new member: the post is edited to show it and one reply says what joined (one reply
    for all that join within the group wait)."""
    kind, wait = kind_for(incident.rule), timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS)
    _edit(post, messages.incident_message(members(post, incident)), kind, now, delay=wait)
    key = f"joined:{post.pk}"
    pending = replaceable(post.destination, key)
    joined_ids = [*(pending.context.get("joined", []) if pending else []), incident.pk]
    joined = [i for i in members(post, incident) if i.pk in joined_ids]
    message = messages.joined_reply(joined)
    if pending is not None and rewrite_pending(pending, message, context={"joined": joined_ids}):
        row = pending
    else:
        (row,) = enqueue(
            kind,
            message,
            destinations=[post.destination],
            thread_parent=post,
            context={"joined": joined_ids},
            coalesce_key=key,
            not_before=now + wait,
            # Shown in the channel too: the group's post may be far up by now.
            broadcast=True,
        )
    incidents.record(
        incident, now, IncidentEventKind.NOTE, "joined an open group", notification=row
    )


def _edit(
    post: Notification,
    message: Composed,
    kind: str,
    now: datetime,
    *,
    delay: timedelta = timedelta(0),
) -> Notification:
    """Show `message` in place of `post`: rewrite it if not sent yet, else one edit row per
    post (edits within `delay` of each other go out as one)."""
    if (
        post.status == NotificationStatus.PENDING
        and post.attempts == 0
        and rewrite_pending(post, message)
    ):
        return post
    key = f"edit:{post.pk}"
    pending = replaceable(post.destination, key)
    if pending is not None and rewrite_pending(pending, message):
        return pending
    (row,) = enqueue(
        kind,
        message,
        destinations=[post.destination],
        update_target=post,
        coalesce_key=key,
        not_before=now + delay if delay else None,
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
        ).select_related("notification", "notification__destination")
        if event.notification is not None
    ]


def _refresh_announcements(incident: Incident, now: datetime) -> None:
    """Show the incident's new state in its original message(s), in place."""
    for post in _announcements(incident):
        group = members(post)
        delay = timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS if len(group) > 1 else 0)
        message = messages.incident_message(group)
        row = _edit(post, message, kind_for(incident.rule), now, delay=delay)
        if row.pk != post.pk:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"original message in {post.destination.name} updated in place",
                notification=row,
            )


# --- resolution, acknowledgement, reminders, escalation -----------------------------------


def resolved(incident: Incident, now: datetime) -> None:
    if incident.flapping:
        incidents.record(
            incident, now, IncidentEventKind.SUPPRESSED, "flapping: resolution not announced"
        )
        return
    posts = _announcements(incident)
    if not posts:
        return  # it never reached Slack (silenced or inhibited): nothing to resolve there
    reason = silenced(incident, now)
    if reason:
        # Nothing is posted inside a silence: the post is corrected in place (which notifies
        # nobody) and the silence's closing summary lists the resolution.
        incidents.record(
            incident, now, IncidentEventKind.SUPPRESSED, f"resolution reply held: {reason}"
        )
    else:
        for post in posts:
            _reply_resolved(post, incident, now)
    _refresh_announcements(incident, now)


def _reply_resolved(post: Notification, incident: Incident, now: datetime) -> None:
    kind = kind_for(incident.rule)
    group = members(post)
    if len(group) == 1:
        (row,) = enqueue(
            kind, messages.resolved_reply(incident), destinations=[post.destination],
            thread_parent=post,
        )  # fmt: skip
    else:
        # Members that end together get one reply between them, naming each.
        key = f"resolved:{post.pk}"
        pending = replaceable(post.destination, key)
        ended_ids = [*(pending.context.get("ended", []) if pending else []), incident.pk]
        ended = [i for i in group if i.pk in ended_ids]
        message = messages.group_resolved_reply(ended, [i for i in group if i.is_open])
        context = {"ended": ended_ids}
        if pending is not None and rewrite_pending(pending, message, context=context):
            row = pending
        else:
            wait = timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS)
            (row,) = enqueue(
                kind,
                message,
                destinations=[post.destination],
                thread_parent=post,
                context=context,
                coalesce_key=key,
                not_before=now + wait if wait else None,
            )
    incidents.record(
        incident,
        now,
        IncidentEventKind.NOTE,
        f"resolution replied in the thread in {post.destination.name}",
        notification=row,
    )


def acknowledged(incident: Incident, now: datetime) -> None:
    _refresh_announcements(incident, now)


def _send(
    incident: Incident,
    now: datetime,
    message: Composed,
    *,
    kind_event: str,
    to: Iterable[Destination] | None = None,
    broadcast: bool = False,
) -> None:
    """A follow-up in the incident's thread in each destination (plainly where it has none)."""
    posts = {n.destination_id: n for n in _announcements(incident)}
    for destination in to or destinations_for(incident.rule):
        parent = posts.get(destination.pk)
        (row,) = enqueue(
            kind_for(incident.rule),
            message,
            destinations=[destination],
            thread_parent=parent,
            context={"incident": incident.pk},
            broadcast=broadcast and parent is not None,
        )
        incidents.record(incident, now, kind_event, f"to {destination.name}", notification=row)
    incidents.notified(incident, now)


def remind_or_escalate(incident: Incident, now: datetime) -> None:
    rule = incident.rule
    if incident.flapping:
        since = _series_start(rule, incident.scope, now)
        if now - incident.opened_at >= timedelta(seconds=rule.settle_seconds):
            # It stopped flapping and holds firing: from now on, an alert like any other.
            changes = _changes(rule, incident.scope, since)
            if _settle(incident, now, since, "firing") and not _held(incident, now):
                _announce(incident, now, messages.settled_firing(incident, changes))
        return
    if incident.acknowledged_at is not None:
        return
    if incident.notification is None:
        # Never announced (silenced or inhibited when it opened): announce it as soon as
        # nothing holds it back any more, rather than never.
        if not suppression(incident, now):
            incidents.record(
                incident, now, IncidentEventKind.NOTE, "no longer held back: announcing"
            )
            _announce(incident, now)
        return
    if suppression(incident, now):
        return  # reminders and escalation wait, and resume when nothing holds them back
    announced = incident.announced_at or incident.opened_at
    if (
        rule.severity == Severity.CRITICAL
        and rule.escalation_delay_seconds
        and incident.escalated_at is None
        and now - announced >= timedelta(seconds=rule.escalation_delay_seconds)
    ):
        _escalate(incident, now)
        return
    if not rule.repeat_interval_seconds or incident.last_notified_at is None:
        return
    if now - incident.last_notified_at < timedelta(seconds=rule.repeat_interval_seconds):
        return
    _send(
        incident,
        now,
        messages.reminder(incident),
        kind_event=IncidentEventKind.REMINDED,
        broadcast=incident.severity == Severity.CRITICAL,
    )


def _held(incident: Incident, now: datetime) -> bool:
    reason = suppression(incident, now)
    if reason:
        incidents.record(incident, now, IncidentEventKind.SUPPRESSED, reason)
    return bool(reason)


def _escalate(incident: Incident, now: datetime) -> None:
    incidents.escalated(incident, now)
    shift = OnCallShift.on_call(now)
    target = incident.rule.escalation_destination
    # In the incident's thread, shown in the channel too: everyone sees that nobody has
    # acknowledged a critical alert (and, loudest, when nobody is on call).
    _send(
        incident,
        now,
        messages.escalation(incident, shift),
        to=[target] if target else None,
        kind_event=IncidentEventKind.ESCALATED,
        broadcast=True,
    )
    logger.warning(
        "incident_escalated", incident=incident.pk, on_call=shift.person if shift else None
    )


# --- silences -----------------------------------------------------------------------------


def summarize_ended_silences(now: datetime) -> int:
    """For each silence window that ended since the last look: one message per destination
    with what changed while it was on. What still fires is then announced as usual."""
    sent = 0
    for silence in Silence.objects.all():
        seen = silence.summarized_until or silence.created_at
        windows = silence.windows_ended(max(seen, now - timedelta(days=1)), now)
        if not windows:
            continue
        claimed = Silence.objects.filter(
            pk=silence.pk,
            **(
                {"summarized_until": silence.summarized_until}
                if silence.summarized_until
                else {"summarized_until__isnull": True}
            ),
        ).update(summarized_until=windows[-1][1])
        if not claimed:
            continue  # another cycle took it
        for start, end in windows:
            sent += _summarize_window(silence, start, end, now)
    return sent


def _summarize_window(silence: Silence, start: datetime, end: datetime, now: datetime) -> int:
    changed = [
        incident
        for incident in Incident.objects.filter(
            Q(opened_at__gte=start, opened_at__lt=end)
            | Q(resolved_at__gte=start, resolved_at__lt=end)
        )
        .select_related("rule")
        .order_by("opened_at")
        if silence.matches(incident.rule, incident.scope)
    ]
    by_destination: dict[int, tuple[Destination, list[Incident]]] = {}
    for incident in changed:
        for destination in destinations_for(incident.rule):
            by_destination.setdefault(destination.pk, (destination, []))[1].append(incident)
    for destination, listed in by_destination.values():
        (row,) = enqueue(
            NotificationKind.SYSTEM_ALERT,
            messages.silence_summary(silence.reason, start, end, listed),
            destinations=[destination],
        )
        for incident in listed:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"listed in the summary of silence '{silence.reason}'",
                notification=row,
            )
    logger.info("silence_summarized", silence=silence.pk, changed=len(changed))
    return len(by_destination)
