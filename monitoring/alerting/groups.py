"""Alerts that fire together share one Slack message (a rule's group_by says which), and an
open group's post grows in place; edits of posts are coalesced per post."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.utils import timezone

from monitoring.alerting import incidents, messages, routing
from monitoring.models import (
    Incident,
    IncidentEvent,
    IncidentEventKind,
)
from notifications.formatting import Composed
from notifications.models import Destination, Notification, NotificationStatus
from notifications.outbox import enqueue, replaceable, rewrite_pending

logger = structlog.get_logger(__name__)


def group_key(incident: Incident) -> str:
    """Alerts share a message when these are equal (Alertmanager's group_by)."""
    rule = incident.rule
    labels = {"rule": str(rule.pk), "venue": incident.scope, "severity": incident.severity}
    chosen = [f"{label}={labels[label]}" for label in rule.group_labels() if label in labels]
    # The outbox's indexed key column: "group:" keeps it apart from other coalescing keys.
    return ";".join([f"group:{routing.kind_for(rule)}", *chosen])[:100]


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


def add_to_group(incident: Incident, destination: Destination, now: datetime) -> Notification:
    """Join a group message not yet sent, or an open group's post, or start a group."""
    kind, key = routing.kind_for(incident.rule), group_key(incident)
    wait = settings.ALERT_GROUP_WAIT_SECONDS
    if wait <= 0:
        return _start_group(incident, destination, key, None)
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
    post = open_group(destination, kind, key)
    if post is not None:
        join(post, incident, now)
        return post
    return _start_group(incident, destination, key, now + timedelta(seconds=wait))


def _start_group(
    incident: Incident, destination: Destination, key: str, not_before: datetime | None
) -> Notification:
    (row,) = enqueue(
        routing.kind_for(incident.rule),
        messages.incident_message([incident]),
        destinations=[destination],
        context={"group": True},
        coalesce_key=key,
        not_before=not_before,
    )
    return row


def open_group(destination: Destination, kind: str, key: str) -> Notification | None:
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


def join(post: Notification, incident: Incident, now: datetime) -> None:
    """A new member: the post is edited to show it and one reply says what joined (one reply
    for all that join within the group wait)."""
    kind, wait = (
        routing.kind_for(incident.rule),
        timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS),
    )
    edit(post, messages.incident_message(members(post, incident)), kind, now, delay=wait)
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


def edit(
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


def announcements(incident: Incident) -> list[Notification]:
    return [
        event.notification
        for event in incident.events.filter(
            kind=IncidentEventKind.NOTIFIED, notification__isnull=False
        ).select_related("notification", "notification__destination")
        if event.notification is not None
    ]


def lock(post: Notification) -> None:
    """Hold the post's row until the caller commits (a read lock: the outbox writes it)."""
    Notification.objects.select_for_update().filter(pk=post.pk).values_list("pk").first()


def escalations(incident: Incident) -> list[Notification]:
    """The incident's escalations that can be edited in place (sent with the bot token to a
    channel; a webhook's message has no timestamp to edit, and carries no buttons)."""
    return [
        event.notification
        for event in incident.events.filter(
            kind=IncidentEventKind.ESCALATED, notification__isnull=False
        )
        .exclude(notification__destination__slack_channel_id="")
        .select_related("notification", "notification__destination")
        if event.notification is not None and "escalation" in event.notification.context
    ]


def refresh_announcements(incident: Incident, now: datetime) -> None:
    """Show the incident's new state in its original message(s) and in its escalations, in
    place: every message that carries its buttons shows the ones that still apply."""
    for post in announcements(incident):
        # Locked before its members are read: two transactions editing one post (a
        # resolution and an acknowledgement) take turns, and the later sees the earlier.
        lock(post)
        group = members(post)
        delay = timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS if len(group) > 1 else 0)
        message = messages.incident_message(group)
        row = edit(post, message, routing.kind_for(incident.rule), now, delay=delay)
        if row.pk != post.pk:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"original message in {post.destination.name} updated in place",
                notification=row,
            )
    refresh_escalations(incident, now)


def refresh_escalations(incident: Incident, now: datetime) -> None:
    # An escalation is shown in the channel on purpose (the announcement may be far up):
    # whoever it pages acts on it there, so it keeps its buttons and they stay true.
    for row in escalations(incident):
        lock(row)
        message = messages.escalation_again(incident, row.context["escalation"])
        edited = edit(row, message, routing.kind_for(incident.rule), now)
        if edited.pk != row.pk:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"escalation in {row.destination.name} updated in place",
                notification=edited,
            )
