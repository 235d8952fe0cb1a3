"""Orders on /metrics: monitoring cannot import this app, so it is handed a gauge to read."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from monitoring.scrape import ExtraGauge, register_gauge
from orders.models import Order, OrderStatus

# Only recent orders are counted: a scrape every few seconds must not count the whole table,
# which keeps every order ever placed (created_at is indexed, so this stays a range scan).
RECENT = timedelta(hours=24)


def recent_orders_by_status() -> dict[str, float]:
    counts = dict.fromkeys(OrderStatus.values, 0.0)
    since = timezone.now() - RECENT
    rows = (
        Order.objects.filter(created_at__gte=since)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    for status, n in rows:
        counts[status] = float(n)
    return counts


def register() -> None:
    register_gauge(
        ExtraGauge(
            name="recent_orders",
            documentation="Orders placed in the last 24 hours, by their status now.",
            label="status",
            read=recent_orders_by_status,
        )
    )
