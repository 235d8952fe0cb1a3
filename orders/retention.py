"""Retention of the order event log.

Events go ORDER_EVENT_RETENTION_DAYS after they were written, whatever became of their
order: the order row keeps its state, and the reports read the last two weeks at most
(hence the setting's minimum). Orders themselves are records, not a log: they stay.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, delete_in_batches, run_each
from orders.models import OrderEvent, VenueActivity


def prune_order_events(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.ORDER_EVENT_RETENTION_DAYS)
    eligible = OrderEvent.objects.filter(created_at__lt=cutoff)
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune_venue_activity(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.VENUE_ACTIVITY_RETENTION_DAYS)
    eligible = VenueActivity.objects.filter(starts_at__lt=cutoff)
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Beat's run over this app's tables."""
    return run_each(
        [("order_events", prune_order_events), ("venue_activity", prune_venue_activity)],
        now or timezone.now(),
    )


def register() -> None:
    from inkwave import retention

    retention.register(OrderEvent, prune_order_events, "ORDER_EVENT_RETENTION_DAYS")
    retention.register(VenueActivity, prune_venue_activity, "VENUE_ACTIVITY_RETENTION_DAYS")
