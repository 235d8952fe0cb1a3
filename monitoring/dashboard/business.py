"""The figures of the business (orders, revenue) on the dashboard.

Monitoring cannot import the orders app (a layer above it); the orders app hands it its
figures at start-up (orders/dashboard.py), as it hands /metrics its gauge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from typing_extensions import TypedDict


class CurrencyJSON(TypedDict):
    currency: str
    orders: int
    revenue: str  # a decimal amount, as text: no float rounding
    average: str


class OrdersLiveJSON(TypedDict):
    """The last hour's orders: counted as the daily and weekly reports count them."""

    ordersPerHour: int
    byCurrency: list[CurrencyJSON]


class OrdersHistoryJSON(TypedDict):
    # One value per bucket of the history's times (null: none counted).
    ordersPerHour: list[float | None]
    revenuePerHour: dict[str, list[float | None]]  # by currency


@dataclass(frozen=True)
class OrderFigures:
    live: Callable[[datetime], OrdersLiveJSON]
    # (start, end, step seconds, bucket numbers) -> one value per bucket
    history: Callable[[datetime, datetime, int, list[int]], OrdersHistoryJSON]


_figures: OrderFigures | None = None


def register(figures: OrderFigures) -> None:
    global _figures
    _figures = figures


def registered() -> OrderFigures | None:
    return _figures
