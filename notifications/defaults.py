"""The specification's channels and routes, and filling them in from the environment."""

from __future__ import annotations

from typing import Any

from django.conf import settings

OPERATIONS = "operations"
ORDERS = "orders"

# #operations: health, errors, deployments, general alerts. #orders: orders and their analytics.
DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "websocket_alert": (OPERATIONS,),
    "system_alert": (OPERATIONS,),
    "health_update": (OPERATIONS,),
    "deployment": (OPERATIONS,),
    "venue_signup": (OPERATIONS,),
    "message": (OPERATIONS,),
    "test": (OPERATIONS,),
    "order_placed": (ORDERS,),
    "order_status_changed": (ORDERS,),
    "order_failed": (ORDERS, OPERATIONS),
    "payment_issue": (ORDERS, OPERATIONS),
    "daily_summary": (ORDERS, OPERATIONS),
    "weekly_report": (ORDERS, OPERATIONS),
}


def create_default_routes(destination_model: Any, route_model: Any) -> None:
    """Used by the data migration (with historical models) and by tests."""
    destinations = {
        name: destination_model.objects.get_or_create(name=name)[0] for name in (OPERATIONS, ORDERS)
    }
    for kind, names in DEFAULT_ROUTES.items():
        for name in names:
            route_model.objects.get_or_create(kind=kind, destination=destinations[name])


def fill_destinations_from_environment(**kwargs: Any) -> None:
    """On every migrate: fill blank channel ids and webhook from the spec's variables.

    Only blank fields are filled, so what an operator set in the admin is never overwritten.
    """
    from notifications.models import Destination

    wanted = {
        OPERATIONS: {
            "slack_channel_id": settings.SLACK_OPERATIONS_CHANNEL_ID,
            "webhook_url": settings.SLACK_WEBHOOK_URL,
        },
        ORDERS: {"slack_channel_id": settings.SLACK_ORDERS_CHANNEL_ID},
    }
    for name, values in wanted.items():
        destination = Destination.objects.filter(name=name).first()
        if destination is None:
            continue
        changed = []
        for field, value in values.items():
            if value and not getattr(destination, field):
                setattr(destination, field, value)
                changed.append(field)
        if changed:
            destination.save(update_fields=changed)
