"""Delivering the outbox to Slack: claims, ordering, rate limits, retries, sweeping.

- Per destination, urgent notifications (alerts, incidents, deployments, health) go out
  before the rest, so order chatter never queues an alert; each class goes out oldest first.
  A notification waiting for a retry holds back the ones behind it, so an outage ends with
  everything sent in order. A row deferred on purpose (an alert group or an order summary
  still collecting) holds back nothing, and a reply or an update waits for its original.
- A row is claimed by a conditional UPDATE (pending -> sending) checked by row count, so
  two workers never post the same row.
- One message per SLACK_MIN_INTERVAL_SECONDS per Slack channel, reserved in a shared row.
- Nothing sleeps: whoever must wait returns how long, and the task layer schedules a wake-up.
- A row left "sending" by a dead worker is reset by the sweep after its lease and sent again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Min, OuterRef
from django.utils import timezone

from notifications.models import (
    OPEN_STATUSES,
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    DestinationStatus,
    Notification,
    NotificationStatus,
    RateLimitSlot,
)
from notifications.slack import (
    SlackMessage,
    SlackTransport,
    TransportError,
    transport_from_settings,
)

logger = structlog.get_logger(__name__)

RETRY_BASE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class DrainResult:
    sent: int
    wait: float | None  # seconds until this destination has due work again; None: nothing


def backoff(attempts: int) -> float:
    """Exponential with full jitter in [half, whole], capped at NOTIFICATION_RETRY_MAX_SECONDS."""
    ceiling = min(settings.NOTIFICATION_RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not security


def skip_reason(destination: Destination) -> str:
    if not destination.enabled:
        return "the destination is disabled"
    if settings.SLACK_BOT_TOKEN and destination.slack_channel_id:
        return ""
    if destination.webhook_url:
        return ""
    return "Slack is not configured for this destination (no bot token and channel, no webhook)"


def reserve_slot(key: str, now: datetime) -> float:
    """Take the channel's next send slot if it is free now; else return seconds to wait."""
    interval = settings.SLACK_MIN_INTERVAL_SECONDS
    if interval <= 0:
        return 0.0
    with transaction.atomic():
        slot = RateLimitSlot.objects.select_for_update().filter(key=key).first()
        if slot is None:
            try:
                with transaction.atomic():
                    RateLimitSlot.objects.create(
                        key=key, next_free_at=now + timedelta(seconds=interval)
                    )
                return 0.0
            except IntegrityError:
                slot = RateLimitSlot.objects.select_for_update().get(key=key)
        if slot.next_free_at > now:
            return (slot.next_free_at - now).total_seconds()
        slot.next_free_at = now + timedelta(seconds=interval)
        slot.save(update_fields=["next_free_at"])
        return 0.0


def hold_slot(key: str, until: datetime) -> None:
    """Slack said wait: nobody posts to this channel before `until`."""
    updated = RateLimitSlot.objects.filter(key=key, next_free_at__lt=until).update(
        next_free_at=until
    )
    if not updated and not RateLimitSlot.objects.filter(key=key).exists():
        RateLimitSlot.objects.get_or_create(key=key, defaults={"next_free_at": until})


def _head(destination_id: int, now: datetime) -> Notification | None:
    """The next row to send: the lowest priority class first, each class oldest first.

    Left out: rows deferred on purpose and never tried (they are not due, and a group still
    collecting must not hold back what came after it), and rows whose thread parent or
    update target on this destination is not sent yet (they go after it, whatever their
    class). A row waiting for a retry is kept: it holds back its destination.
    """
    open_here = Notification.objects.filter(destination_id=destination_id, status__in=OPEN_STATUSES)
    # Parents and update targets are rare: loaded on access rather than joined every time.
    return (
        open_here.exclude(status=NotificationStatus.PENDING, attempts=0, next_attempt_at__gt=now)
        .exclude(Exists(open_here.filter(pk=OuterRef("thread_parent_id"))))
        .exclude(Exists(open_here.filter(pk=OuterRef("update_target_id"))))
        .order_by("priority", "pk")
        .first()
    )


def _next_due(destination_id: int, now: datetime) -> float | None:
    """Seconds until a waiting row of this destination (a retry, a deferred group) is due."""
    due = Notification.objects.filter(
        destination_id=destination_id, status=NotificationStatus.PENDING, next_attempt_at__gt=now
    ).aggregate(at=Min("next_attempt_at"))["at"]
    return None if due is None else (due - now).total_seconds()


def claim(notification: Notification, now: datetime) -> bool:
    return (
        Notification.objects.filter(
            pk=notification.pk,
            status=NotificationStatus.PENDING,
            next_attempt_at__lte=now,
            revision=notification.revision,
        ).update(status=NotificationStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1)
        == 1
    )


def drain(
    destination_id: int, *, transport: SlackTransport | None = None, max_messages: int = 50
) -> DrainResult:
    """Send what is due for one destination, urgent first, oldest first, until it must wait."""
    transport = transport or transport_from_settings()
    destination = Destination.objects.get(pk=destination_id)
    sent = 0
    for _ in range(max_messages):
        now = timezone.now()
        head = _head(destination_id, now)
        if head is not None and head.status == NotificationStatus.SENDING:
            # Another worker is sending the head; it drains on (the sweep recovers a dead one).
            return DrainResult(sent, None)
        if head is None or head.next_attempt_at > now:
            # Nothing due: wake up when the first waiting row is, or never if there is none.
            return DrainResult(sent, _next_due(destination_id, now))
        reason = skip_reason(destination)
        if reason:
            Notification.objects.filter(pk=head.pk, status=NotificationStatus.PENDING).update(
                status=NotificationStatus.SKIPPED, last_error=reason
            )
            continue
        wait = reserve_slot(destination.rate_key, now)
        if wait > 0:
            return DrainResult(sent, wait)
        if not claim(head, now):
            continue  # taken by another worker, or rewritten since it was read: look again
        # The claim succeeded on the row as read, so it incremented exactly this value.
        head.attempts += 1
        head.status = NotificationStatus.SENDING
        if deliver_claimed(head, destination, transport) == AttemptOutcome.SENT:
            sent += 1
    return DrainResult(sent, 0.0)


def _message_for(notification: Notification, destination: Destination) -> SlackMessage:
    parent, target = notification.thread_parent, notification.update_target
    channel = destination.slack_channel_id
    if target is not None and target.slack_ts:
        return SlackMessage(
            text=notification.text,
            blocks=notification.blocks,
            channel=target.slack_channel or channel,
            update_ts=target.slack_ts,
        )
    # A thread lives in one channel: replies to another destination's message post plainly.
    thread_ts = (
        parent.slack_ts if parent is not None and parent.destination_id == destination.pk else ""
    )
    return SlackMessage(
        text=notification.text, blocks=notification.blocks, channel=channel, thread_ts=thread_ts
    )


def deliver_claimed(
    notification: Notification, destination: Destination, transport: SlackTransport
) -> str:
    """Send one claimed notification and record the outcome; returns the attempt's outcome."""
    started = timezone.now()
    attempt = DeliveryAttempt.objects.create(
        notification=notification, number=notification.attempts, started_at=started
    )
    clock = time.monotonic()
    try:
        delivered = transport.notify(
            _message_for(notification, destination), webhook_url=destination.webhook_url
        )
    except TransportError as error:
        outcome = _record_failure(notification, destination, error, started)
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(
            outcome=outcome,
            error=str(error)[:2000],
            http_status=error.http_status,
            finished_at=timezone.now(),
            duration_ms=round((time.monotonic() - clock) * 1000, 3),
        )
        return outcome
    finished = timezone.now()
    Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(
        status=NotificationStatus.SENT,
        sent_at=finished,
        slack_ts=delivered.ts,
        slack_channel=delivered.channel,
        last_error="",
    )
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        outcome=AttemptOutcome.SENT,
        finished_at=finished,
        duration_ms=round((time.monotonic() - clock) * 1000, 3),
        http_status=200,
    )
    if destination.status == DestinationStatus.ERROR:
        Destination.objects.filter(pk=destination.pk).update(status=DestinationStatus.OK)
        destination.status = DestinationStatus.OK
    return AttemptOutcome.SENT


def _record_failure(
    notification: Notification, destination: Destination, error: TransportError, now: datetime
) -> str:
    age = (now - notification.created_at).total_seconds()
    if error.permanent or age >= settings.NOTIFICATION_MAX_AGE_SECONDS:
        reason = str(error) if error.permanent else f"gave up after {age:.0f}s: {error}"
        Notification.objects.filter(pk=notification.pk).update(
            status=NotificationStatus.FAILED, last_error=reason[:2000]
        )
        if error.permanent:
            Destination.objects.filter(pk=destination.pk).update(
                status=DestinationStatus.ERROR, last_error=reason[:2000], last_error_at=now
            )
            destination.status = DestinationStatus.ERROR
        logger.error(
            "notification_failed",
            notification=notification.pk,
            destination=destination.name,
            error=reason,
        )
        return AttemptOutcome.FAILED
    delay = error.retry_after if error.retry_after is not None else backoff(notification.attempts)
    retry_at = now + timedelta(seconds=delay)
    if error.retry_after is not None:
        hold_slot(destination.rate_key, retry_at)
    Notification.objects.filter(pk=notification.pk).update(
        status=NotificationStatus.PENDING, next_attempt_at=retry_at, last_error=str(error)[:2000]
    )
    logger.warning(
        "notification_retry",
        notification=notification.pk,
        destination=destination.name,
        error=str(error),
        retry_in=round(delay, 3),
    )
    return AttemptOutcome.RETRY


@dataclass(frozen=True, slots=True)
class SweepResult:
    recovered: int
    due_destinations: list[int]


def sweep(now: datetime | None = None) -> SweepResult:
    """Reset rows a dead worker left "sending"; list destinations with due work."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.NOTIFICATION_LEASE_SECONDS)
    recovered = 0
    stale = Notification.objects.filter(status=NotificationStatus.SENDING, claimed_at__lt=cutoff)
    for pk in stale.values_list("pk", flat=True):
        reset = Notification.objects.filter(
            pk=pk, status=NotificationStatus.SENDING, claimed_at__lt=cutoff
        ).update(
            status=NotificationStatus.PENDING,
            next_attempt_at=now,
            last_error="the worker sending it stopped; sending again",
        )
        if reset:
            recovered += 1
            DeliveryAttempt.objects.filter(
                notification_id=pk, outcome=AttemptOutcome.IN_PROGRESS
            ).update(outcome=AttemptOutcome.LOST, finished_at=now)
    if recovered:
        logger.warning("notifications_recovered", count=recovered)
    due = sorted(
        set(
            Notification.objects.filter(
                status=NotificationStatus.PENDING, next_attempt_at__lte=now
            ).values_list("destination_id", flat=True)
        )
    )
    return SweepResult(recovered, due)
