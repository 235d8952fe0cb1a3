"""Putting notifications in the outbox: rows first, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from django.db import transaction

from notifications.formatting import Composed
from notifications.models import Destination, Notification, NotificationKind

logger = structlog.get_logger(__name__)


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
) -> list[Notification]:
    """One row per destination (the kind's routes unless given), committed with the caller.

    Delivery is started after the transaction commits; if that fails (broker down), the
    periodic sweep picks the rows up. Nothing is lost either way.
    """
    targets = list(destinations) if destinations is not None else routed_destinations(kind)
    rows = [
        Notification.objects.create(
            kind=kind,
            destination=destination,
            text=message.text,
            blocks=message.blocks,
            context=context or {},
            thread_parent=thread_parent,
            update_target=update_target,
            **({"next_attempt_at": not_before} if not_before is not None else {}),
        )
        for destination in targets
    ]
    if not rows:
        logger.warning("notification_has_no_route", kind=str(kind))
    destination_ids = sorted({row.destination_id for row in rows})
    transaction.on_commit(lambda: start_delivery(destination_ids))
    return rows


def start_delivery(destination_ids: Iterable[int]) -> None:
    """Queue one drain per destination, unless one is already queued and not yet started.

    The drain clears the flag before it reads the outbox, so a row committed before the
    flag was cleared is seen by it, and a row committed after queues a new drain. A lost
    task leaves the flag set; the periodic sweep drains such destinations regardless.
    """
    from notifications.tasks import drain_destination

    for destination_id in destination_ids:
        if not Destination.objects.filter(pk=destination_id, drain_requested=False).update(
            drain_requested=True
        ):
            continue
        try:
            drain_destination.delay(destination_id)
        except Exception:
            # The broker is unreachable: the sweep will deliver these rows later.
            Destination.objects.filter(pk=destination_id).update(drain_requested=False)
            logger.warning(
                "notification_dispatch_failed", destination=destination_id, exc_info=True
            )
