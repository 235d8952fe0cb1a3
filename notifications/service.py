"""The specification's SlackService, as Python: each call builds a message and enqueues it.

    send_message(channel, message)       -> a plain message to one destination
    send_order_notification(order)       -> 🛒 New Order, routed to #orders
    send_error_alert(error, context)     -> ⚠️ <Kind> Error, routed to #operations
    send_health_update(metrics)          -> ✅ System Healthy, routed to #operations

Nothing here talks to Slack: rows go into the outbox in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from django.utils import timezone

from notifications.formatting import (
    Composed,
    compose,
    duration,
    fit,
    local_time,
    money,
    percent,
    plural,
    section_block,
    utc_time,
)
from notifications.models import Destination, Notification, NotificationKind
from notifications.outbox import enqueue

if TYPE_CHECKING:
    from orders.models import Order


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


def order_message(order: Order) -> Composed:
    items = order.item_count
    return compose(
        f"🛒 New Order #{order.number}",
        [
            ("Venue", order.venue.name),
            ("Table", order.table),
            ("Items", plural(items, "item")),
            ("Total", money(order.total, order.currency)),
            ("Time", local_time(order.created_at, order.venue.timezone)),
        ],
    )


def send_order_notification(order: Order) -> list[Notification]:
    return enqueue(
        NotificationKind.ORDER_PLACED,
        order_message(order),
        context={"order": order.pk, "venue": order.venue_id},
    )


class ErrorContext(TypedDict, total=False):
    source: str  # "WebSocket", "API", "Database", ...: the title's first word
    type: str  # what failed, e.g. "Connection Failed"
    affected_clients: int
    action: str  # what the reader should do
    kind: str  # a NotificationKind, to route elsewhere than system alerts
    time: datetime


def error_message(error: BaseException | str, context: ErrorContext) -> Composed:
    source = context.get("source", "System")
    pairs = [("Type", context.get("type") or type(error).__name__)]
    if "affected_clients" in context:
        pairs.append(("Affected Clients", str(context["affected_clients"])))
    pairs += [
        ("Error", str(error) or type(error).__name__),
        ("Time", utc_time(context.get("time") or timezone.now())),
        ("Action Required", context.get("action", "Check server status")),
    ]
    return compose(f"⚠️ {source} Error", pairs)


def send_error_alert(
    error: BaseException | str, context: ErrorContext | None = None
) -> list[Notification]:
    context = context or {}
    kind = context.get("kind") or (
        NotificationKind.WEBSOCKET_ALERT
        if context.get("source") == "WebSocket"
        else NotificationKind.SYSTEM_ALERT
    )
    serialisable = {k: v for k, v in context.items() if k != "time"}
    return enqueue(kind, error_message(error, context), context=dict(serialisable))


class HealthMetrics(TypedDict):
    activeConnections: int
    messagesPerMinute: float
    errorRate: float
    uptime: float


def health_message(metrics: HealthMetrics | dict[str, Any]) -> Composed:
    return compose(
        "✅ System Healthy",
        [
            ("Active Connections", str(metrics["activeConnections"])),
            ("Messages/min", f"{metrics['messagesPerMinute']:g}"),
            ("Error Rate", percent(metrics["errorRate"])),
            ("Uptime", duration(metrics["uptime"])),
        ],
    )


def send_health_update(metrics: HealthMetrics | dict[str, Any]) -> list[Notification]:
    return enqueue(NotificationKind.HEALTH_UPDATE, health_message(metrics))
