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
- While Slack fails a destination, its head row is the probe: retried with backoff capped at
  NOTIFICATION_PROBE_SECONDS (or after Slack's Retry-After), so once Slack answers the backlog
  follows at once, at the channel's rate. A failure of SLACK_OUTAGE_SECONDS or more is
  summarised in the channel once the backlog from it has gone out, exactly once.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, Exists, F, Min, OuterRef, Value, When
from django.utils import timezone

from inkwave import logcontext
from inkwave.api_errors import is_database_unreachable
from inkwave.lib.formats import duration, plural, utc_time
from notifications.formatting import Composed, compose
from notifications.models import (
    OPEN_STATUSES,
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    DestinationStatus,
    Notification,
    NotificationKind,
    NotificationStatus,
    RateLimitSlot,
)
from notifications.outbox import enqueue
from notifications.slack import (
    Delivered,
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
    """Exponential with full jitter in [half, whole], capped at NOTIFICATION_RETRY_MAX_SECONDS
    and at NOTIFICATION_PROBE_SECONDS: the failing row is its destination's head, so its retry
    is the probe that finds Slack back, and the rows behind it wait for nothing longer."""
    ceiling = min(
        settings.NOTIFICATION_RETRY_MAX_SECONDS,
        settings.NOTIFICATION_PROBE_SECONDS,
        RETRY_BASE_SECONDS * 2 ** (attempts - 1),
    )
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
        if destination.outage_summary_due and _summarize_outage(destination, head):
            continue  # the summary is queued, urgent: it goes next
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


def send_now(notification_ids: list[int], *, transport: SlackTransport | None = None) -> int:
    """Send these rows from this process at once, past the queue and the drain tasks.

    For an alert about the outbox itself, which cannot wait for the workers it is about.
    The claim makes each row go out once whatever the drains do; a row that is not due,
    whose channel's send slot is taken (then the outbox is moving anyway), or that fails,
    is left to the outbox as any other.
    """
    transport = transport or transport_from_settings()
    sent = 0
    rows = Notification.objects.filter(pk__in=notification_ids, status=NotificationStatus.PENDING)
    for row in rows.select_related("destination").order_by("pk"):
        destination = row.destination
        now = timezone.now()
        if skip_reason(destination) or reserve_slot(destination.rate_key, now) > 0:
            continue
        if not claim(row, now):
            continue
        row.attempts += 1
        row.status = NotificationStatus.SENDING
        if deliver_claimed(row, destination, transport) == AttemptOutcome.SENT:
            sent += 1
    logger.info("notifications_sent_now", count=sent, of=len(notification_ids))
    return sent


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
        text=notification.text,
        blocks=notification.blocks,
        channel=channel,
        thread_ts=thread_ts,
        reply_broadcast=notification.broadcast and bool(thread_ts),
    )


def deliver_claimed(
    notification: Notification, destination: Destination, transport: SlackTransport
) -> str:
    """Send one claimed notification and record the outcome; returns the attempt's outcome.
    Its lines carry the id of the request that caused it (inkwave/logcontext.py)."""
    # A row no request caused (an alert from beat) logs under none, whatever the drain's is.
    with logcontext.scope(notification=notification.pk, request_id=notification.request_id or None):
        outcome = _deliver(notification, destination, transport)
    return outcome


def _deliver(
    notification: Notification, destination: Destination, transport: SlackTransport
) -> str:
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
    _record_sent(
        notification,
        delivered,
        finished,
        lease_ends=started + timedelta(seconds=settings.NOTIFICATION_LEASE_SECONDS),
    )
    duration_ms = round((time.monotonic() - clock) * 1000, 3)
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        outcome=AttemptOutcome.SENT, finished_at=finished, duration_ms=duration_ms, http_status=200
    )
    logger.info(
        "notification_sent",
        kind=notification.kind,
        destination=destination.name,
        attempt=notification.attempts,
        duration_ms=duration_ms,
    )
    if destination.status == DestinationStatus.ERROR:
        Destination.objects.filter(pk=destination.pk).update(status=DestinationStatus.OK)
        destination.status = DestinationStatus.OK
    _record_recovery(destination, finished)
    return AttemptOutcome.SENT


def LEASE() -> timedelta:
    return timedelta(seconds=settings.NOTIFICATION_LEASE_SECONDS)


# What the database may take to come back while a sent message waits to be recorded, at
# most: the lease, less this margin (the sweep sends a row again once its lease is over).
RECORD_MARGIN = timedelta(seconds=2)
RECORD_RETRY_SECONDS = 0.5


def _mark_sent(notification: Notification, delivered: Delivered, finished: datetime) -> None:
    Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(
        status=NotificationStatus.SENT,
        sent_at=finished,
        slack_ts=delivered.ts,
        slack_channel=delivered.channel,
        last_error="",
    )


def _record_sent(
    notification: Notification, delivered: Delivered, finished: datetime, *, lease_ends: datetime
) -> None:
    """Slack has the message: the row must say so before its lease ends, or the sweep sends
    it again (twice in the channel). A database that went away just then (a restart, a
    failover) is tried again, on a new connection, until the lease nearly ends; after that
    the row is left to the sweep, and the message may be posted twice."""
    while True:
        try:
            _mark_sent(notification, delivered, finished)
            return
        except (OperationalError, InterfaceError) as exc:
            late = timezone.now() >= lease_ends - RECORD_MARGIN
            # Inside a caller's transaction there is nothing to try again: it is lost.
            if connection.in_atomic_block or not is_database_unreachable(exc) or late:
                logger.error(
                    "notification_sent_not_recorded",
                    notification=notification.pk,
                    slack_ts=delivered.ts,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                raise
            logger.warning(
                "notification_sent_recording_retried",
                notification=notification.pk,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            connection.close()  # the next try connects again
            time.sleep(RECORD_RETRY_SECONDS)


def _record_failure(
    notification: Notification, destination: Destination, error: TransportError, now: datetime
) -> str:
    age = (now - notification.created_at).total_seconds()
    expires_at = notification.expires_at or notification.created_at + timedelta(
        seconds=settings.NOTIFICATION_MAX_AGE_SECONDS
    )
    if error.permanent or now >= expires_at:
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
    # Of two workers failing at once, the first sets it: the failure began then.
    Destination.objects.filter(pk=destination.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    destination.failing_since = destination.failing_since or now
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


# --- Slack failing and coming back -------------------------------------------------------

_OUTAGE_FIELDS = ["failing_since", "failed_from", "failed_until", "outage_summary_due"]


def _record_recovery(destination: Destination, at: datetime) -> None:
    """A message went through: end the destination's failure, if it had one.

    One conditional UPDATE, so of two workers succeeding at once one ends it. While the
    summary of an earlier failure is still due (its backlog not delivered yet), the two are
    merged: the summary covers both.
    """
    outage = timedelta(seconds=settings.SLACK_OUTAGE_SECONDS)
    ended = Destination.objects.filter(pk=destination.pk, failing_since__isnull=False).update(
        failing_since=None,
        failed_from=Case(
            When(outage_summary_due=True, then=F("failed_from")), default=F("failing_since")
        ),
        failed_until=Value(at),
        outage_summary_due=Case(
            When(failing_since__lte=at - outage, then=Value(True)),
            default=F("outage_summary_due"),
        ),
    )
    if ended:
        destination.refresh_from_db(fields=_OUTAGE_FIELDS)
        logger.info(
            "slack_delivery_recovered",
            destination=destination.name,
            failed_from=destination.failed_from,
            failed_until=destination.failed_until,
        )


def _outage_rows(destination: Destination) -> tuple[int, int]:
    """(delivered, given up): the destination's messages the failure held back.

    Those created before it ended and sent after it began, or given up after an attempt
    made since it began.
    """
    assert destination.failed_from is not None
    assert destination.failed_until is not None
    since = destination.failed_from
    rows = Notification.objects.filter(
        destination=destination, created_at__lte=destination.failed_until
    )
    delivered = rows.filter(status=NotificationStatus.SENT, sent_at__gte=since).count()
    tried_since = DeliveryAttempt.objects.filter(notification=OuterRef("pk"), started_at__gte=since)
    failed = rows.filter(Exists(tried_since), status=NotificationStatus.FAILED).count()
    return delivered, failed


def _outage_backlog_left(destination: Destination, head: Notification | None) -> bool:
    """Messages from before the failure ended are still to go (deferred ones excepted)."""
    until = destination.failed_until
    assert until is not None
    if head is not None and head.created_at <= until:
        return True
    return (
        Notification.objects.filter(
            destination=destination, status__in=OPEN_STATUSES, created_at__lte=until
        )
        .exclude(status=NotificationStatus.PENDING, attempts=0, next_attempt_at__gt=until)
        .exists()
    )


def outage_summary(destination: Destination, delivered: int, failed: int) -> Composed:
    assert destination.failed_from is not None
    assert destination.failed_until is not None
    seconds = (destination.failed_until - destination.failed_from).total_seconds()
    outcome = "all delivered" if not failed else f"{delivered} delivered, {failed} given up"
    title = (
        f"✅ Delivery to #{destination.name} failed for {duration(seconds)}; "
        f"{plural(delivered + failed, 'message')} delayed, {outcome}"
    )
    return compose(
        title,
        [
            ("Failing from", utc_time(destination.failed_from)),
            ("Back at", utc_time(destination.failed_until)),
        ],
        note="Slack did not take messages for this channel (server errors, timeouts, rate "
        "limits or no answer); they were kept and sent in order once it answered again.",
    )


def _summarize_outage(destination: Destination, head: Notification | None) -> bool:
    """Once the backlog of a long failure is out, queue its summary (once); True if queued."""
    if destination.failing_since is not None or _outage_backlog_left(destination, head):
        return False
    with transaction.atomic():
        claimed = Destination.objects.filter(
            pk=destination.pk, outage_summary_due=True, failed_until=destination.failed_until
        ).update(outage_summary_due=False)
        if claimed:
            delivered, failed = _outage_rows(destination)
            _enqueue_summary(destination, outage_summary(destination, delivered, failed))
    if not claimed:
        # Another worker sent it, or the destination failed again: read what is true now.
        destination.refresh_from_db(fields=_OUTAGE_FIELDS)
        return False
    destination.outage_summary_due = False
    logger.info("slack_outage_summarized", destination=destination.name)
    return True


def _enqueue_summary(destination: Destination, message: Composed) -> None:
    enqueue(
        NotificationKind.SYSTEM_ALERT,
        message,
        destinations=[destination],
        context={"outage_summary": True},
    )


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
