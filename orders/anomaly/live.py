"""The venue metrics now: a few SQL aggregates over every open venue, then the formulas.

Every value of a cycle shares what it can through the window's memo: the open venues, the
baselines of their slots, the orders of the window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Count, Max, Min, Q

from monitoring.alerting.metrics import Values, Window
from monitoring.models import VenueScreenSample
from orders import hours
from orders.activity import quarter_floor, week_slot
from orders.anomaly.formulas import (
    SILENCE_LOOKBACK,
    WAITING_LOOKBACK,
    OpenVenue,
    accept_value,
    payment_value,
    screens_value,
    silence_value,
    slots_back,
    span_start,
    volume_value,
    waiting_value,
)
from orders.baseline import SlotBaseline, baselines
from orders.models import Order, OrderStatus, PaymentStatus

T = TypeVar("T")
Known = dict[tuple[int, int], SlotBaseline]


def _memo(window: Window, key: tuple[object, ...], compute: Callable[[], T]) -> T:
    if key not in window.memo:
        window.memo[key] = compute()
    return window.memo[key]  # type: ignore[return-value]


def open_venues(now: datetime) -> dict[int, OpenVenue]:
    """Venues open now, and for at least the warm-up."""
    warmup = timedelta(minutes=settings.VENUE_WARMUP_MINUTES)
    found = {}
    for venue, schedule in hours.schedules().items():
        since = schedule.open_since(now)
        if since is not None and now - since >= warmup:
            found[venue] = OpenVenue(venue, since, week_slot(quarter_floor(now), schedule))
    return found


def _open(window: Window) -> dict[int, OpenVenue]:
    return _memo(window, ("open_venues", window.end), lambda: open_venues(window.end))


def _baselines(window: Window, lookback: timedelta) -> Known:
    """The baselines of every open venue's slots over the lookback (memoised per cycle)."""

    def load() -> Known:
        venues = _open(window)
        slots: set[int] = set()
        for venue in venues.values():
            slots.add(venue.slot)
            slots.update(s for s, _ in slots_back(venue, window.end - lookback, window.end))
        return baselines(slots, window.end, venues)

    return _memo(window, ("baselines", window.end, lookback), load)


def _window_baselines(window: Window) -> Known:
    return _baselines(window, timedelta(seconds=window.seconds))


def silence(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _baselines(window, SILENCE_LOOKBACK)
    last = dict(
        Order.objects.filter(
            venue_id__in=list(venues), created_at__gt=now - SILENCE_LOOKBACK, created_at__lte=now
        )
        .values_list("venue_id")
        .annotate(last=Max("created_at"))
        .order_by()
    )
    values = {}
    for venue in venues.values():
        value = silence_value(venue, last.get(venue.id), now, known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def _orders_in_window(window: Window) -> dict[int, dict[str, Any]]:
    """Per open venue: orders, paid and failed since span_start (one query, or two when a
    venue opened inside the window)."""

    def load() -> dict[int, dict[str, Any]]:
        venues = _open(window)
        if not venues:
            return {}
        found: dict[int, dict[str, Any]] = {}
        for venue_id, created, payment in Order.objects.filter(
            venue_id__in=list(venues), created_at__gt=window.start, created_at__lte=window.end
        ).values_list("venue_id", "created_at", "payment_status"):
            if created > venues[venue_id].since:
                row = found.setdefault(venue_id, {"n": 0, "paid": 0, "failed": 0})
                row["n"] += 1
                row["paid"] += payment == PaymentStatus.PAID
                row["failed"] += payment == PaymentStatus.FAILED
        return found

    return _memo(window, ("orders_in_window", window.end, window.seconds), load)


def volume(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    counts = _orders_in_window(window)
    values = {}
    for venue in venues.values():
        seen = counts.get(venue.id, {}).get("n", 0)
        value = volume_value(venue, seen, window.start, window.end, known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def screens(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    most = dict(
        VenueScreenSample.objects.filter(
            venue_id__in=list(venues), recorded_at__gt=window.start, recorded_at__lte=window.end
        )
        .values_list("venue_id")
        .annotate(most=Max("screens"))
        .order_by()
    )
    values = {}
    for venue in venues.values():
        value = screens_value(venue, most.get(venue.id, 0), known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def oldest_waiting(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    oldest = dict(
        Order.objects.filter(
            status=OrderStatus.PLACED,
            created_at__gt=now - WAITING_LOOKBACK,
            created_at__lte=now,
            venue_id__in=list(venues),
        )
        .values_list("venue_id")
        .annotate(oldest=Min("created_at"))
        .order_by()
    )
    return {str(v): waiting_value(oldest.get(v), now) for v in venues}


def accept_ratio(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    waits: dict[int, list[float]] = {}
    for venue_id, created, accepted in Order.objects.filter(
        venue_id__in=list(venues), created_at__gt=window.start, created_at__lte=now
    ).values_list("venue_id", "created_at", "accepted_at"):
        if created > span_start(venues[venue_id], window.start):
            waits.setdefault(venue_id, []).append(((accepted or now) - created).total_seconds())
    values = {}
    for venue_id, seen in waits.items():
        value = accept_value(venues[venue_id], seen, window.start, now, known)
        if value is not None:
            values[str(venue_id)] = value
    return values


def platform_payments(start: datetime, end: datetime) -> tuple[int, int]:
    """(paid, failed) over every venue's orders placed in (start, end]."""
    totals = Order.objects.filter(created_at__gt=start, created_at__lte=end).aggregate(
        paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
        failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
    )
    return totals["paid"], totals["failed"]


def payment_failures(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    platform = platform_payments(window.start, window.end)
    values = {}
    for venue_id, row in _orders_in_window(window).items():
        own = (row["paid"], row["failed"])
        value = payment_value(venues[venue_id], own, platform, window.start, window.end, known)
        if value is not None:
            values[str(venue_id)] = value
    return values
