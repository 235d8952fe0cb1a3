"""Putting notifications in the outbox: rows first, in the caller's transaction."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

import structlog
from celery import current_app
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Count, F, QuerySet
from django.utils import timezone

from notifications.formatting import Composed, fit, section_block
from notifications.models import (
    OPEN_STATUSES,
    Destination,
    Notification,
    NotificationKind,
    NotificationStatus,
    ReportRun,
    priority_for,
)

logger = structlog.get_logger(__name__)


def status_counts(now: datetime, recent: timedelta) -> dict[str, int]:
    """Outbox rows by state, every state present (0 when none), for /metrics: every pending
    and sending row, whatever its age (the open rows' partial index), and the sent, failed
    and skipped rows created within `recent` (the created_at index). Counting every row the
    outbox keeps, a month of them, took most of a scrape's time."""
    counts = dict.fromkeys(NotificationStatus.values, 0)
    rows = Notification.objects.order_by().values_list("status")
    open_rows = rows.filter(status__in=OPEN_STATUSES)
    final_rows = rows.filter(created_at__gte=now - recent).exclude(status__in=OPEN_STATUSES)
    for status, n in [*open_rows.annotate(n=Count("pk")), *final_rows.annotate(n=Count("pk"))]:
        counts[status] = n
    return counts


def routed_destinations(kind: str) -> list[Destination]:
    return list(Destination.objects.filter(routes__kind=kind).order_by("name").distinct())


def enqueue(
    kind: NotificationKind | str,
    message: Composed,
    *,
    destinations: Iterable[Destination] | None = None,
    context: dict[str, Any] | None = None,
    thread_parent: Notification | None = None,
    update_target: Notification | None = None,
    not_before: datetime | None = None,
    coalesce_key: str = "",
    broadcast: bool = False,
) -> list[Notification]:
    """One row per destination (the kind's routes unless given), committed with the caller.

    Delivery is started after the transaction commits; if that fails (broker down), the
    periodic sweep picks the rows up. Nothing is lost either way.
    """
    targets = list(destinations) if destinations is not None else routed_destinations(kind)
    expires_at = timezone.now() + timedelta(seconds=settings.NOTIFICATION_MAX_AGE_SECONDS)
    rows = [
        Notification.objects.create(
            expires_at=expires_at,
            kind=kind,
            priority=priority_for(kind),
            coalesce_key=coalesce_key,
            destination=destination,
            text=message.text,
            blocks=message.blocks,
            context=context or {},
            thread_parent=thread_parent,
            update_target=update_target,
            broadcast=broadcast,
            **({"next_attempt_at": not_before} if not_before is not None else {}),
        )
        for destination in targets
    ]
    if not rows:
        logger.warning("notification_has_no_route", kind=str(kind))
    destination_ids = sorted({row.destination_id for row in rows})
    transaction.on_commit(lambda: start_delivery(destination_ids))
    return rows


def replaceable(destination: Destination, key: str) -> Notification | None:
    """The row queued under `key` for this destination that no worker has tried yet, locked
    until the caller commits, or None. Callers with one key take turns until they commit, so
    two of them never both start a row: the second finds the first's and rewrites it."""
    _serialize(key)
    return (
        Notification.objects.select_for_update()
        .filter(
            destination=destination,
            coalesce_key=key,
            status=NotificationStatus.PENDING,
            attempts=0,
        )
        .order_by("-pk")
        .first()
    )


def rewrite_pending(
    row: Notification, message: Composed, *, context: dict[str, Any] | None = None
) -> bool:
    """Change a row no worker has tried yet; False if one took it meanwhile (then it went out
    as it was, and the caller sends what changed as a new row). A worker's claim is
    conditional on the revision, so it never sends a text that was rewritten under it."""
    changes: dict[str, Any] = {"text": message.text, "blocks": message.blocks}
    if context is not None:
        changes["context"] = context
    updated = Notification.objects.filter(
        pk=row.pk, status=NotificationStatus.PENDING, attempts=0
    ).update(revision=F("revision") + 1, **changes)
    if updated:
        row.text, row.blocks = message.text, message.blocks
        if context is not None:
            row.context = context
    return bool(updated)


def annotate(row: Notification, **context: Any) -> None:
    """Keep these keys in the row's context (what its sender needs to remember of it; not
    sent, so no new revision: a worker sending it meanwhile sends the same)."""
    merged = {**row.context, **context}
    Notification.objects.filter(pk=row.pk).update(context=merged)
    row.context = merged


def requeue(rows: QuerySet[Notification]) -> int:
    """Send again what failed or was skipped (an operator's action), with a new lease on
    NOTIFICATION_MAX_AGE_SECONDS from now; its creation time stays what it was."""
    now = timezone.now()
    retryable = rows.filter(status__in=[NotificationStatus.FAILED, NotificationStatus.SKIPPED])
    destinations = sorted(set(retryable.values_list("destination_id", flat=True)))
    with transaction.atomic():
        count = retryable.update(
            status=NotificationStatus.PENDING,
            next_attempt_at=now,
            expires_at=now + timedelta(seconds=settings.NOTIFICATION_MAX_AGE_SECONDS),
        )
        transaction.on_commit(lambda: start_delivery(destinations))
    return count


def record_direct(
    kind: NotificationKind | str,
    message: Composed,
    destination: Destination,
    *,
    sent_at: datetime | None,
    slack_ts: str = "",
    slack_channel: str = "",
    context: dict[str, Any] | None = None,
) -> Notification:
    """A message a process sent to Slack itself, without the outbox (its subject was down),
    recorded as sent so that replies thread under it; with `sent_at` None it could not be
    sent then, and the outbox sends it now."""
    sent = sent_at is not None
    row = Notification.objects.create(
        kind=kind,
        priority=priority_for(kind),
        destination=destination,
        text=message.text,
        blocks=message.blocks,
        context=context or {},
        status=NotificationStatus.SENT if sent else NotificationStatus.PENDING,
        slack_ts=slack_ts,
        slack_channel=slack_channel,
        sent_at=sent_at,
        attempts=1 if sent else 0,
        expires_at=timezone.now() + timedelta(seconds=settings.NOTIFICATION_MAX_AGE_SECONDS),
    )
    if not sent:
        transaction.on_commit(lambda: start_delivery([destination.pk]))
    return row


def claim_once(key: str) -> bool:
    """True for the one caller that records `key` first (a report's period, say); every other
    caller, now or later, gets False. Inside the caller's transaction, the claim commits only
    with what it claimed."""
    try:
        with transaction.atomic():
            ReportRun.objects.create(key=key)
    except IntegrityError:
        return False
    return True


class UnknownDestination(ValueError):
    pass


def send_message(channel: str, message: str) -> list[Notification]:
    """A plain message to the destination named `channel` (e.g. "operations")."""
    destination = Destination.objects.filter(name=channel).first()
    if destination is None:
        raise UnknownDestination(f"no Slack destination named {channel!r}")
    return enqueue(
        NotificationKind.MESSAGE,
        fit(message, [section_block(message)]),
        destinations=[destination],
    )


class Tally(TypedDict):
    """What a summary row has counted, kept in its context and handed to `summarize`."""

    count: int
    first_at: str  # ISO 8601: the first event counted
    last_at: str
    latest: list[str]  # labels of the last few events counted, oldest first


LATEST_LABELS = 5


@dataclass(frozen=True, slots=True)
class Coalescing:
    """How one kind of chatter from one source is held to a rate."""

    key: str  # what is counted together, e.g. "payment_issue:venue:12"
    limit: int  # rows per destination within the window before events are summarised; 0: off
    window_seconds: int
    summarize: Callable[[Tally], Composed]
    label: str = ""  # this event in a summary's list of the latest ones, e.g. "#12"
    context: dict[str, Any] = field(default_factory=dict)  # a summary row's context


def enqueue_coalesced(
    kind: NotificationKind | str,
    message: Composed,
    coalescing: Coalescing,
    *,
    context: dict[str, Any] | None = None,
) -> list[Notification]:
    """Like `enqueue`, held to a rate: per destination, while fewer than `limit` rows with the
    key were queued in the last `window_seconds`, the event gets its own row; past that, it
    is counted into one pending summary row, due a window after the first event it counts and
    rewritten (its revision bumped) with each event it takes, until a worker claims it.

    While a summary is pending, every event with its key joins it, so no single message
    overtakes events the summary already counts. Whatever caused the event records it
    itself: a summary only says how many there were.
    """
    if coalescing.limit <= 0:
        return enqueue(kind, message, context=context)
    now = timezone.now()
    rows = []
    with transaction.atomic():  # the locks below last until the caller commits
        _serialize(coalescing.key)
        for destination in routed_destinations(kind):
            row = _join_summary(kind, destination, coalescing, now)
            if row is None:
                since = now - timedelta(seconds=coalescing.window_seconds)
                recent = Notification.objects.filter(
                    coalesce_key=coalescing.key, destination=destination, created_at__gte=since
                ).count()
                if recent < coalescing.limit:
                    (row,) = enqueue(
                        kind,
                        message,
                        destinations=[destination],
                        context=context,
                        coalesce_key=coalescing.key,
                    )
                else:
                    row = _start_summary(kind, destination, coalescing, now)
            rows.append(row)
    if not rows:
        logger.warning("notification_has_no_route", kind=str(kind))
    return rows


def _serialize(key: str) -> None:
    """Events with one key take turns until their transaction ends, so the count of recent
    rows is exact and one summary at a time is started. SQLite, the single-machine default,
    needs no lock: its transactions begin IMMEDIATE, one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def _counted(tally: Tally, now: datetime, label: str) -> Tally:
    # The latest distinct labels: five toggles of one order list it once ("#6"), not five times.
    previous = [seen for seen in tally["latest"] if seen != label]
    latest = [*previous, label][-LATEST_LABELS:] if label else tally["latest"]
    return Tally(
        count=tally["count"] + 1,
        first_at=tally["first_at"],
        last_at=now.isoformat(),
        latest=latest,
    )


def _join_summary(
    kind: NotificationKind | str, destination: Destination, coalescing: Coalescing, now: datetime
) -> Notification | None:
    # Locked until the caller commits: two events never rewrite it from the same count, and a
    # drain's claim (conditional on the revision) waits and then sees the new text.
    summary = (
        Notification.objects.select_for_update()
        .filter(
            destination=destination,
            kind=kind,
            coalesce_key=coalescing.key,
            status=NotificationStatus.PENDING,
            attempts=0,
            context__summary=True,
        )
        .order_by("-pk")
        .first()
    )
    if summary is None:
        return None
    tally = _counted(summary.context["tally"], now, coalescing.label)
    message = coalescing.summarize(tally)
    Notification.objects.filter(pk=summary.pk).update(
        text=message.text,
        blocks=message.blocks,
        context={**summary.context, "tally": tally},
        revision=F("revision") + 1,
    )
    return summary


def _start_summary(
    kind: NotificationKind | str, destination: Destination, coalescing: Coalescing, now: datetime
) -> Notification:
    tally = _counted(
        Tally(count=0, first_at=now.isoformat(), last_at="", latest=[]), now, coalescing.label
    )
    (row,) = enqueue(
        kind,
        coalescing.summarize(tally),
        destinations=[destination],
        context={**coalescing.context, "summary": True, "tally": tally},
        coalesce_key=coalescing.key,
        not_before=now + timedelta(seconds=coalescing.window_seconds),
    )
    logger.info("notifications_coalesced", key=coalescing.key, destination=destination.name)
    return row


def start_delivery(destination_ids: Iterable[int]) -> None:
    """Queue one drain per destination, unless one is already queued and not yet started.

    The drain clears the flag before it reads the outbox, so a row committed before the
    flag was cleared is seen by it, and a row committed after queues a new drain. A lost
    task leaves the flag set; the periodic sweep drains such destinations regardless.
    """
    for destination_id in destination_ids:
        if not Destination.objects.filter(pk=destination_id, drain_requested=False).update(
            drain_requested=True
        ):
            continue
        # Published by a thread of its own, waited for only briefly: a hung broker must not
        # hold the request (or task) that committed the notification. A publish that is
        # still going on finishes, or fails and clears the flag, in the background; the
        # periodic sweep delivers what a lost publish would have. One publish at most is
        # pending per destination (the flag), so the thread's queue stays small.
        # In the caller's context: the task carries the request's id (inkwave/logcontext.py).
        context = contextvars.copy_context()
        pending = _publisher().submit(context.run, _publish_drain, destination_id)
        with contextlib.suppress(FutureTimeout):
            pending.result(timeout=settings.NOTIFICATION_DISPATCH_WAIT_SECONDS)


_publisher_pool: ThreadPoolExecutor | None = None


def _publisher() -> ThreadPoolExecutor:
    global _publisher_pool
    if _publisher_pool is None:
        _publisher_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inkwave-publish")
    return _publisher_pool


def publish_task(name: str, args: tuple[Any, ...]) -> None:
    """Queue a task by name, waiting for the broker briefly (as start_delivery does): a hung
    broker must not hold the request that asks for it."""
    context = contextvars.copy_context()
    pending = _publisher().submit(context.run, _publish_logged, name, args)
    with contextlib.suppress(FutureTimeout):
        pending.result(timeout=settings.NOTIFICATION_DISPATCH_WAIT_SECONDS)


def _publish_logged(name: str, args: tuple[Any, ...]) -> None:
    try:
        current_app.send_task(name, args=args)
    except Exception:
        logger.exception("task_publish_failed", task=name)


def send_drain_task(destination_id: int) -> None:
    # By name: the task module (which delivers) is not imported by what enqueues.
    current_app.send_task("notifications.drain", args=(destination_id,))


def _publish_drain(destination_id: int) -> None:
    try:
        send_drain_task(destination_id)
    except Exception:
        # The broker is unreachable: the sweep will deliver these rows later.
        logger.warning("notification_dispatch_failed", destination=destination_id, exc_info=True)
        try:
            Destination.objects.filter(pk=destination_id).update(drain_requested=False)
        finally:
            close_old_connections()
