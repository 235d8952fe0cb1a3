"""Retention of the outbox's tables: notifications, delivery attempts, report claims, slots.

A notification goes once it is older than NOTIFICATION_RETENTION_DAYS and final (sent,
failed or skipped), unless something still needs it:
- a keeper says so: apps above this one register, at start-up, a source of notification
  ids they still use (monitoring: the messages of open incidents), since this app imports
  no other;
- a row that is kept threads under it or edits it (its Slack ts is what they need).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, delete_in_batches, run_each
from notifications.models import (
    DeliveryAttempt,
    Notification,
    NotificationStatus,
    RateLimitSlot,
    ReportRun,
)

FINAL_STATUSES = (NotificationStatus.SENT, NotificationStatus.FAILED, NotificationStatus.SKIPPED)
# A slot whose moment passed this long ago says nothing a missing slot would not.
IDLE_SLOT = timedelta(days=1)

# Returns a query of notification ids to keep (a `values("…_id")` of any model).
Keeper = Callable[[], "models.QuerySet[Any]"]
_keepers: list[Keeper] = []


def keep_notifications(keeper: Keeper) -> Keeper:
    """Register a source of notification ids the prune must keep; usable as a decorator."""
    if keeper not in _keepers:
        _keepers.append(keeper)
    return keeper


def eligible_notifications(now: datetime) -> models.QuerySet[Notification]:
    cutoff = now - timedelta(days=settings.NOTIFICATION_RETENTION_DAYS)
    rows = Notification.objects.filter(created_at__lt=cutoff, status__in=FINAL_STATUSES)
    for keeper in _keepers:
        # Through a query on Notification: a NULL among the keeper's ids would otherwise
        # turn NOT IN into "keep everything".
        rows = rows.exclude(pk__in=Notification.objects.filter(pk__in=keeper()).values("pk"))
    return rows


def unreferenced(ids: list[int], gone: set[int]) -> list[int]:
    """Of a batch, the rows that no kept row threads under or edits.

    A row that refers to one in the batch is kept when it is outside the batch and was not
    deleted earlier in this run, or when it is in the batch and kept itself.
    """
    batch = set(ids)
    referrers: dict[int, set[int]] = defaultdict(set)
    rows = Notification.objects.filter(Q(thread_parent_id__in=ids) | Q(update_target_id__in=ids))
    for pk, parent, target in rows.values_list("pk", "thread_parent_id", "update_target_id"):
        for referred in (parent, target):
            if referred in batch:
                referrers[referred].add(pk)
    kept: set[int] = set()
    changed = True
    while changed:
        changed = False
        for row in batch - kept:
            if any(r in kept or (r not in batch and r not in gone) for r in referrers[row]):
                kept.add(row)
                changed = True
    return [pk for pk in ids if pk not in kept]


def prune_notifications(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Their delivery attempts go with them (CASCADE)."""
    return delete_in_batches(
        eligible_notifications(now or timezone.now()),
        dry_run=dry_run,
        max_batches=max_batches,
        # A reply or an edit is newer than the row it refers to: deciding the newest first
        # settles the referring rows before the rows they refer to.
        newest_first=True,
        select=unreferenced,
    )


def prune_delivery_attempts(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Attempts of a notification that is kept longer (a thread's parent, an open
    incident's message); those of an undelivered one stay, the sweep reads them."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.DELIVERY_ATTEMPT_RETENTION_DAYS)
    eligible = DeliveryAttempt.objects.filter(
        started_at__lt=cutoff, notification__status__in=FINAL_STATUSES
    )
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune_report_runs(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Claims of periods long past: no report is claimed for them again."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.REPORT_RUN_RETENTION_DAYS)
    eligible = ReportRun.objects.filter(created_at__lt=cutoff)
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune_rate_limit_slots(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Slots of channels not posted to for a day (one a channel or webhook ever used)."""
    eligible = RateLimitSlot.objects.filter(next_free_at__lt=(now or timezone.now()) - IDLE_SLOT)
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Beat's run over this app's tables."""
    return run_each(
        [
            ("notifications", prune_notifications),
            ("delivery_attempts", prune_delivery_attempts),
            ("report_runs", prune_report_runs),
            ("rate_limit_slots", prune_rate_limit_slots),
        ],
        now or timezone.now(),
    )


def register() -> None:
    from inkwave import retention

    retention.register(Notification, prune_notifications, "NOTIFICATION_RETENTION_DAYS")
    retention.register(DeliveryAttempt, prune_delivery_attempts, "DELIVERY_ATTEMPT_RETENTION_DAYS")
    retention.register(ReportRun, prune_report_runs, "REPORT_RUN_RETENTION_DAYS")
    retention.register(RateLimitSlot, prune_rate_limit_slots, "")
