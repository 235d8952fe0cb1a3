"""Celery tasks: thin wrappers that call plain functions the tests call directly."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from notifications import delivery, retention
from notifications.models import Destination
from notifications.slack import TransportError, transport_from_settings

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


@shared_task(name="notifications.respond", ignore_result=True)
def respond(response_url: str, body: dict[str, Any]) -> bool:
    """An answer to a click or a command, through its response_url (an ephemeral note)."""
    try:
        transport_from_settings().respond(response_url, body)
    except TransportError as exc:
        # Not retried: the answer is about a click made moments ago; late, it would confuse.
        logger.warning("slack_response_failed", error=str(exc))
        return False
    return True
