"""What orders look like in Slack: composed here, handed to the outbox."""

from __future__ import annotations

from inkwave.lib.formats import local_time, money, plural
from notifications.formatting import Composed, compose
from notifications.models import Notification, NotificationKind
from notifications.outbox import enqueue
from orders.models import Order


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
