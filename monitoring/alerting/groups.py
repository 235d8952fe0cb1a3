"""Alerts that fire together share one Slack message (a rule's group_by says which), and an
open group's post grows in place; edits of posts are coalesced per post."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.alerting import incidents, messages, routing, suppression
from monitoring.models import (
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
)
from notifications.formatting import Composed
from notifications.models import Destination, Notification, NotificationStatus
from notifications.outbox import annotate, enqueue, replaceable, rewrite_pending

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


def _has_open_member(post: Notification) -> bool:
    """Whether any incident the post announces still fires (one indexed look, not its
    members read: a group may hold thousands)."""
    announced = Q(events__kind=IncidentEventKind.NOTIFIED, events__notification=post)
    legacy = post.context.get("incidents", [])
    return (
        Incident.objects.filter(status=IncidentStatus.FIRING)
        .filter(announced | Q(pk__in=legacy) if legacy else announced)
        .exists()
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
    if pending is not None:
        # In the post itself when it is rewritten before it goes out; else it joined.
        _change(pending, kind, now, quiet=incident)
        return pending
    post = open_group(destination, kind, key)
    if post is not None:
        _change(post, kind, now, joined=incident)
        return post
    return _start_group(incident, destination, key, now + timedelta(seconds=wait))


def _start_group(
    incident: Incident, destination: Destination, key: str, not_before: datetime | None
) -> Notification:
    (row,) = enqueue(
        routing.kind_for(incident.rule),
        messages.incident_message([incident]),
        destinations=[destination],
        context={"group": True, SHOWN: _shown([incident])},
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
    if post is None or not _has_open_member(post):
        return None
    return post


def ended(post: Notification, incident: Incident, now: datetime, *, reply: bool) -> None:
    """A member resolved: the post edited to show it and, if `reply`, one reply in its
    thread (one for all the members that end within the group wait)."""
    kind = routing.kind_for(incident.rule)
    _change(post, kind, now, ended=incident if reply else None, refresh=incident)


def refresh_announcements(incident: Incident, now: datetime) -> None:
    """Show the incident's new state in its original message(s) and in its escalations, in
    place: every message that carries its buttons shows the ones that still apply."""
    for post in announcements(incident):
        _change(post, routing.kind_for(incident.rule), now, refresh=incident)
    refresh_escalations(incident, now)


# --- changes to a group's messages, composed once per post --------------------------------
#
# A member that joins, ends or changes state is a change to its group's post: the post is
# composed again from all its members, and a reply says who joined or ended. Alone, each
# change is composed at once, in the caller's transaction. Within `composed_once` (the
# engine's cycle) they are gathered and each post is composed once at the end: a rule that
# fires at thousands of venues in one cycle would otherwise compose a group of thousands
# once per member.


@dataclass
class _Changes:
    """What changed for one post, each by incident id (in the order it happened)."""

    post: Notification
    kind: str
    quiet: dict[int, Incident] = field(default_factory=dict)  # joined before it went out
    joined: dict[int, Incident] = field(default_factory=dict)  # joined a post already out
    ended: dict[int, Incident] = field(default_factory=dict)
    refreshed: dict[int, Incident] = field(default_factory=dict)


class _Gathered(threading.local):
    def __init__(self) -> None:
        self.changes: dict[int, _Changes] | None = None
        self.since = 0.0  # time.monotonic() of the first change not composed yet


_gathered = _Gathered()

# Gathered changes are composed at least this often (seconds) while a cycle goes on: a
# post still waiting out its group wait is then sent with nearly all that joined, however
# long the cycle.
COMPOSE_EVERY_SECONDS = 5.0


@contextmanager
def composed_once(now: datetime) -> Iterator[None]:
    """Gather the group changes made within; compose each post once, on the way out (and
    every COMPOSE_EVERY_SECONDS as `compose_due` is called), each post in a transaction of
    its own (a post that fails is logged; the others go on)."""
    if _gathered.changes is not None:  # already gathering: the outer one composes
        yield
        return
    _gathered.changes = {}
    try:
        yield
    finally:
        gathered, _gathered.changes = _gathered.changes, None
        _compose_each(gathered, now)


def compose_due(now: datetime) -> None:
    """Within composed_once: compose what has been gathered if it has waited long enough."""
    gathered = _gathered.changes
    if gathered and time.monotonic() - _gathered.since >= COMPOSE_EVERY_SECONDS:
        _gathered.changes = {}
        _compose_each(gathered, now)


def _compose_each(gathered: dict[int, _Changes], now: datetime) -> None:
    for changes in gathered.values():
        try:
            with transaction.atomic():
                _compose(changes, now)
        except Exception:
            logger.exception("alert_group_compose_failed", post=changes.post.pk)


def _change(
    post: Notification,
    kind: str,
    now: datetime,
    *,
    quiet: Incident | None = None,
    joined: Incident | None = None,
    ended: Incident | None = None,
    refresh: Incident | None = None,
) -> None:
    gathering = _gathered.changes is not None
    changes = _gathered.changes.get(post.pk) if _gathered.changes is not None else None
    if changes is None:
        changes = _Changes(post, kind)
        if _gathered.changes is not None:
            if not _gathered.changes:
                _gathered.since = time.monotonic()
            _gathered.changes[post.pk] = changes
    for incident, into in (
        (quiet, changes.quiet),
        (joined, changes.joined),
        (ended, changes.ended),
        (refresh, changes.refreshed),
    ):
        if incident is not None:
            into[incident.pk] = incident
    if not gathering:
        _compose(changes, now)


def _compose(changes: _Changes, now: datetime) -> None:
    """The post shown again with all its members; replies for who ended and who joined."""
    kind = changes.kind
    # Locked before its members are read: two transactions changing one post (a resolution
    # and an acknowledgement) take turns, and the later sees the earlier. Read again: it
    # may have gone out since the change was gathered.
    post = (
        Notification.objects.select_for_update(of=("self",))
        .select_related("destination")
        .get(pk=changes.post.pk)
    )
    group = members(post, *changes.quiet.values(), *changes.joined.values())
    # The members as the database has them: a change gathered in a transaction that was
    # rolled back since (its incident never stored) is left out.
    stored = {incident.pk: incident for incident in group}
    quiet, joined, ended, refreshed = (
        [stored[pk] for pk in change if pk in stored]
        for change in (changes.quiet, changes.joined, changes.ended, changes.refreshed)
    )
    wait = timedelta(seconds=settings.ALERT_GROUP_WAIT_SECONDS)
    message = messages.incident_message(group)
    # What the post now shows, for catch_up to compare with what its members became.
    annotate(post, **{SHOWN: _shown(group)})
    rewritten = False
    if quiet:
        rewritten = (
            post.status == NotificationStatus.PENDING
            and post.attempts == 0
            and rewrite_pending(post, message)
        )
        if not rewritten:  # it went out meanwhile: they joined it
            joined = [*quiet, *joined]
    if ended:
        _reply_ended(post, kind, group, ended, now, wait)
    if rewritten:
        return
    row = edit(post, message, kind, now, delay=wait if len(group) > 1 or joined else timedelta(0))
    if joined:
        _reply_joined(post, kind, group, joined, now, wait)
    if row.pk != post.pk:
        for incident in refreshed:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"original message in {post.destination.name} updated in place",
                notification=row,
            )


# A post's context keeps which members it shows and which of them fire.
SHOWN = "shown"
# How long after its members ended a post is still compared with them.
CATCH_UP_WINDOW = timedelta(hours=1)


def _shown(group: list[Incident]) -> dict[str, list[int]]:
    return {"ids": [i.pk for i in group], "firing": [i.pk for i in group if i.is_open]}


def catch_up(now: datetime) -> int:
    """Compose the posts whose members changed since they were composed: the changes of a
    cycle whose process died after its incidents committed and before the posts were
    composed. Called within the engine's `composed_once`; returns how many posts. A post
    composed before posts kept what they show is left as it is."""
    recent = IncidentEvent.objects.filter(
        Q(incident__status=IncidentStatus.FIRING)
        | Q(incident__resolved_at__gte=now - CATCH_UP_WINDOW),
        kind=IncidentEventKind.NOTIFIED,
        notification__isnull=False,
    )
    posts = Notification.objects.filter(
        pk__in=recent.values("notification_id"), context__has_key=SHOWN
    ).select_related("destination")
    behind = 0
    for post in posts:
        group = members(post)
        if not group or _shown(group) == post.context[SHOWN]:
            continue
        behind += 1
        shown, firing = set(post.context[SHOWN]["ids"]), set(post.context[SHOWN]["firing"])
        kind = routing.kind_for(group[0].rule)
        pending = post.status == NotificationStatus.PENDING and post.attempts == 0
        _change(post, kind, now)  # composed again, whatever else changed
        for incident in group:
            if incident.pk not in shown:
                _change(post, kind, now, **{"quiet" if pending else "joined": incident})
            elif incident.pk in firing and not incident.is_open:
                reply = not suppression.silenced(incident, now)
                _change(post, kind, now, ended=incident if reply else None, refresh=incident)
        logger.warning("alert_group_caught_up", post=post.pk, members=len(group))
    return behind


def _reply_joined(
    post: Notification,
    kind: str,
    group: list[Incident],
    joined: list[Incident],
    now: datetime,
    wait: timedelta,
) -> None:
    """One reply for all that join within the group wait, shown in the channel too (the
    group's post may be far up by now)."""
    row = _gathering_reply(
        post, kind, "joined", [i.pk for i in joined],
        lambda ids: messages.joined_reply([i for i in group if i.pk in ids]),
        not_before=now + wait, broadcast=True,
    )  # fmt: skip
    for incident in joined:
        incidents.record(
            incident, now, IncidentEventKind.NOTE, "joined an open group", notification=row
        )


def _reply_ended(
    post: Notification,
    kind: str,
    group: list[Incident],
    ended: list[Incident],
    now: datetime,
    wait: timedelta,
) -> None:
    """One reply in the thread for the members that end within the group wait."""
    if len(group) == 1:
        (row,) = enqueue(
            kind, messages.resolved_reply(group[0]), destinations=[post.destination],
            thread_parent=post,
        )  # fmt: skip
    else:
        row = _gathering_reply(
            post, kind, "ended", [i.pk for i in ended],
            lambda ids: messages.group_resolved_reply(
                [i for i in group if i.pk in ids], [i for i in group if i.is_open]
            ),
            not_before=now + wait if wait else None,
        )  # fmt: skip
    for incident in ended:
        incidents.record(
            incident,
            now,
            IncidentEventKind.NOTE,
            f"resolution replied in the thread in {post.destination.name}",
            notification=row,
        )


def _gathering_reply(
    post: Notification,
    kind: str,
    label: str,
    ids: list[int],
    compose: Callable[[list[int]], Composed],
    *,
    not_before: datetime | None,
    broadcast: bool = False,
) -> Notification:
    """A reply in the post's thread naming the incidents `ids`: the one not sent yet is
    rewritten to name them too (the context's `label` lists whom it names), else a new one."""
    key = {"joined": "joined", "ended": "resolved"}[label] + f":{post.pk}"
    pending = replaceable(post.destination, key)
    named = [*(pending.context.get(label, []) if pending else []), *ids]
    message, context = compose(named), {label: named}
    if pending is not None and rewrite_pending(pending, message, context=context):
        return pending
    (row,) = enqueue(
        kind,
        message,
        destinations=[post.destination],
        thread_parent=post,
        context=context,
        coalesce_key=key,
        not_before=not_before,
        broadcast=broadcast,
    )
    return row


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
