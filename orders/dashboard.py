"""Orders on the staff dashboard: monitoring cannot import this app, so it is handed these.

Counted as the daily and weekly reports count them (reports.counted_orders): cancelled
orders are no revenue. Revenue is per currency, never added across currencies.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Sum

from monitoring.alerting.replay import EpochBucket
from monitoring.dashboard.business import (
    CurrencyJSON,
    OrderFigures,
    OrdersHistoryJSON,
    OrdersLiveJSON,
)
from monitoring.dashboard.business import (
    register as register_figures,
)
from orders.reports import average_order, counted_orders

HOUR = timedelta(hours=1)


def last_hour(now: datetime) -> OrdersLiveJSON:
    rows = (
        counted_orders(now - HOUR, now)
        .order_by("currency")
        .values("currency")
        .annotate(orders=Count("pk"), revenue=Sum("total", default=Decimal(0)))
    )
    by_currency: list[CurrencyJSON] = [
        {
            "currency": row["currency"],
            "orders": row["orders"],
            "revenue": str(row["revenue"]),
            "average": str(average_order(row["revenue"], row["orders"])),
        }
        for row in rows
    ]
    return {"ordersPerHour": sum(c["orders"] for c in by_currency), "byCurrency": by_currency}


def history(start: datetime, end: datetime, step: int, buckets: list[int]) -> OrdersHistoryJSON:
    """Orders and revenue per hour in each bucket, grouped by the database."""
    rows = (
        counted_orders(start, end)
        .annotate(bucket=EpochBucket("created_at", step))
        .order_by()
        .values("bucket", "currency")
        .annotate(orders=Count("pk"), revenue=Sum("total", default=Decimal(0)))
    )
    per_hour = 3600 / step
    orders: dict[int, float] = defaultdict(float)
    revenue: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        orders[row["bucket"]] += row["orders"] * per_hour
        revenue[row["currency"]][row["bucket"]] = round(float(row["revenue"]) * per_hour, 2)
    return {
        # A bucket without orders had none: zero, not a gap (the reports count it as 0 too).
        "ordersPerHour": [round(orders.get(b, 0.0), 2) for b in buckets],
        "revenuePerHour": {
            currency: [values.get(b, 0.0) for b in buckets]
            for currency, values in sorted(revenue.items())
        },
    }


def register() -> None:
    register_figures(OrderFigures(live=last_hour, history=history))
