"""Celery tasks: thin wrappers that call plain functions the tests call directly."""

from __future__ import annotations

from datetime import timedelta

import structlog
from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from notifications import delivery, retention
from notifications.models import Destination

logger = structlog.get_logger(__name__)


def schedule_wake(destination_id: int, wait: float) -> None:
    """Run the destination's drain again in `wait` seconds, once, however many ask."""
    now = timezone.now()
    at = now + timedelta(seconds=wait)
    claimed = (
        Destination.objects.filter(pk=destination_id)
        .filter(Q(wake_at__isnull=True) | Q(wake_at__lte=now) | Q(wake_at__gt=at))
        .update(wake_at=at)
    )
    if claimed:
        drain_destination.apply_async((destination_id,), countdown=max(0.0, wait))


@shared_task(name="notifications.drain", ignore_result=True)
def drain_destination(destination_id: int) -> int:
    Destination.objects.filter(pk=destination_id).update(drain_requested=False)
    result = delivery.drain(destination_id)
    if result.wait is not None:
        schedule_wake(destination_id, result.wait)
    return result.sent


@shared_task(name="notifications.sweep", ignore_result=True)
def sweep() -> int:
    result = delivery.sweep()
    for destination_id in result.due_destinations:
        schedule_wake(destination_id, 0.0)
    return result.recovered


@shared_task(name="notifications.prune", ignore_result=True)
def prune() -> dict[str, int]:
    return retention.prune()
