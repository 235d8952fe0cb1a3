"""Venue-aware metrics: alerts that cost a venue money, and none for a venue that is closed.

Each is a per-venue metric in the alert registry (scope: the venue's id), so rules, scopes,
silences and the preview treat it as any other. Each has a value only for a venue that is
open now (orders.hours) and has been for VENUE_WARMUP_MINUTES; a closed venue, an inactive
one or one that just opened is absent, which the engine reads as clear.

What a venue usually does comes from its baseline (orders.baseline): the same local
quarter hours of the same weekday over the past weeks. Counts are modelled as negative
binomial around the baseline (inkwave.lib.counts): Poisson arrivals whose evening-to-evening
level varies, so a quiet Tuesday is not an outage.

- venue.orders_silence_chance: the chance that the venue, behaving as usual, would go as
  long without an order as it has now (since its last order, or since it opened), in %.
  20 quiet minutes are usual for a venue with 2 orders a night and very unlikely for one
  with 200.
- venue.order_volume_chance: the chance of an order count at least this far from the
  usual for the rule's window (either way), in %.
- venue.screens_online: the most screens connected to the venue's room at once during the
  window, for a venue that usually has one at this hour; below 1: dark for the window.
- venue.oldest_waiting_minutes: how long the oldest order nobody has taken has waited.
- venue.accept_time_ratio: the median wait from placed to taken of the window's orders
  (a wait still going counts as long as it is so far), as a multiple of the venue's usual.
- venue.payment_failure_chance: the chance of at least this many failed payments among the
  window's settled ones, were the venue failing at its own usual rate or the platform's
  rate in the same window (every other venue's), whichever is higher, in %.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Count, Max, Min, Q

from inkwave.lib.counts import binomial_sf, nb_two_sided, nb_zero
from monitoring.alerting.metrics import Metric, Values, Window, register
from monitoring.models import VenueScreenSample
from orders import hours
from orders.activity import quarter_floor, week_slot
from orders.baseline import SlotBaseline, baselines
from orders.models import Order, OrderStatus, PaymentStatus
from orders.models.activity import SLOT_SECONDS, SLOTS_PER_WEEK

# Negative binomial dispersion of a venue's orders in a stretch of an evening: the larger,
# the closer to Poisson. 16 allows a day 25% busier or quieter than usual (1 / 0.25²).
ORDER_DISPERSION = 16.0
# A silence is looked back at this far at most: by then any rule has long fired.
SILENCE_LOOKBACK = timedelta(hours=4)
# Below this many orders in the window, a median wait says little.
ACCEPT_MIN_ORDERS = 3
# ... and below this many taken orders in the baseline, the venue's usual is unknown.
ACCEPT_MIN_BASELINE = 10
# Failures are judged against at least this rate (a card declined now and then is normal).
PAYMENT_FLOOR_RATE = 0.02
# The platform's rate needs this many settled payments in the window to be a yardstick.
PLATFORM_MIN_PAYMENTS = 20
# An order still waiting after this long is abandoned, not waiting (left out of the metrics).
WAITING_LOOKBACK = timedelta(hours=12)


@dataclass(frozen=True)
class OpenVenue:
    id: int
    since: datetime  # when its current opening began
    slot: int  # its week slot now


T = TypeVar("T")


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


def _slots_back(venue: OpenVenue, start: datetime, now: datetime) -> list[tuple[int, float]]:
    """(week slot, seconds of it inside [start, now]) for each quarter hour of the span.

    The slots of earlier quarters are counted back from now's (within a clock change's
    hour this is off by one quarter, which the baseline's smoothness absorbs)."""
    found = []
    quarter = quarter_floor(now)
    i = 0
    while quarter + timedelta(seconds=SLOT_SECONDS) > start:
        overlap = min(now, quarter + timedelta(seconds=SLOT_SECONDS)) - max(start, quarter)
        seconds = overlap.total_seconds()
        if seconds > 0:
            found.append(((venue.slot - i) % SLOTS_PER_WEEK, seconds))
        quarter -= timedelta(seconds=SLOT_SECONDS)
        i += 1
    return found


Baselines = dict[tuple[int, int], SlotBaseline]


def _baselines(window: Window, lookback: timedelta) -> Baselines:
    """The baselines of every open venue's slots over the lookback (memoised per cycle)."""

    def load() -> Baselines:
        venues = _open(window)
        slots: set[int] = set()
        for venue in venues.values():
            slots.add(venue.slot)
            slots.update(s for s, _ in _slots_back(venue, window.end - lookback, window.end))
        return baselines(slots, window.end, venues)

    return _memo(window, ("baselines", window.end, lookback), load)


def expected_orders(
    venue: OpenVenue, start: datetime, now: datetime, known: Baselines
) -> float | None:
    """The orders the venue usually gets in [start, now]; None while it is still learned."""
    spans = _slots_back(venue, start, now)
    current = known.get((venue.id, venue.slot))
    if current is None or not current.known:
        return None
    total = 0.0
    for slot, seconds in spans:
        base = known.get((venue.id, slot))
        if base is not None:  # never open then in past weeks: nothing expected
            total += base.orders * seconds / SLOT_SECONDS
    return total


# --- orders stopped -----------------------------------------------------------------------


def silence_chance(expected: float) -> float:
    """In %: the chance of no order at all when `expected` were usual."""
    return 100.0 * nb_zero(expected, ORDER_DISPERSION)


def _silence(window: Window) -> Values:
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
        since = max(last.get(venue.id, venue.since), venue.since, now - SILENCE_LOOKBACK)
        expected = expected_orders(venue, since, now, known)
        if expected is not None:
            values[str(venue.id)] = silence_chance(expected)
    return values


# --- unusual volume -----------------------------------------------------------------------


def _span(venue: OpenVenue, window: Window) -> datetime:
    """The window's start, or the opening if that came later."""
    return max(window.start, venue.since)


def _orders_in_window(window: Window) -> dict[int, dict[str, Any]]:
    def load() -> dict[int, dict[str, Any]]:
        venues = _open(window)
        if not venues:
            return {}
        rows = (
            Order.objects.filter(
                venue_id__in=list(venues),
                created_at__gt=window.start,
                created_at__lte=window.end,
            )
            .values("venue_id")
            .annotate(
                n=Count("pk"),
                paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
                failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
            )
            .order_by()
        )
        return {row["venue_id"]: row for row in rows}

    return _memo(window, ("orders_in_window", window.end, window.seconds), load)


def _volume(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _baselines(window, timedelta(seconds=window.seconds))
    counts = _orders_in_window(window)
    late_opened = [v for v in venues.values() if v.since > window.start]
    if late_opened:  # counted from their opening only
        counts = {**counts, **_counts_since(late_opened, window.end)}
    values = {}
    for venue in venues.values():
        expected = expected_orders(venue, _span(venue, window), window.end, known)
        if expected is not None:
            seen = counts.get(venue.id, {}).get("n", 0)
            values[str(venue.id)] = 100.0 * nb_two_sided(seen, expected, ORDER_DISPERSION)
    return values


def _counts_since(venues: list[OpenVenue], now: datetime) -> dict[int, dict[str, Any]]:
    """Orders since each venue opened (one query for all of them)."""
    since = {v.id: v.since for v in venues}
    found: dict[int, dict[str, Any]] = {v.id: {"n": 0} for v in venues}
    for venue_id, created in Order.objects.filter(
        venue_id__in=list(since), created_at__gt=min(since.values()), created_at__lte=now
    ).values_list("venue_id", "created_at"):
        if created > since[venue_id]:
            found[venue_id]["n"] += 1
    return found


# --- kitchen screens dark -----------------------------------------------------------------


def _screens(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _baselines(window, timedelta(seconds=window.seconds))
    # Venues whose room usually has a screen now (in at least half of the weeks).
    users = [
        v
        for v in venues.values()
        if (base := known.get((v.id, v.slot))) is not None
        and base.known
        and 2 * base.screen_weeks >= base.weeks
    ]
    if not users:
        return {}
    most = dict(
        VenueScreenSample.objects.filter(
            venue_id__in=[v.id for v in users],
            recorded_at__gt=max(window.start, min(v.since for v in users)),
            recorded_at__lte=window.end,
        )
        .values_list("venue_id")
        .annotate(most=Max("screens"))
        .order_by()
    )
    return {str(v.id): float(most.get(v.id, 0)) for v in users}


# --- tickets nobody takes -----------------------------------------------------------------


def _oldest_waiting(window: Window) -> Values:
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
    values = {}
    for venue in venues.values():
        placed = oldest.get(venue.id)
        waited = 0.0 if placed is None else (now - placed).total_seconds() / 60.0
        values[str(venue.id)] = waited
    return values


def usual_accept_seconds(
    venue: OpenVenue, start: datetime, now: datetime, known: Baselines
) -> float | None:
    accepted, seconds = 0, 0.0
    for slot, _ in _slots_back(venue, start, now):
        base = known.get((venue.id, slot))
        if base is not None:
            accepted += base.accepted
            seconds += base.accept_seconds
    if accepted < ACCEPT_MIN_BASELINE or seconds <= 0:
        return None
    return seconds / accepted


def _accept_ratio(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _baselines(window, timedelta(seconds=window.seconds))
    waits: dict[int, list[float]] = {}
    for venue_id, created, accepted in Order.objects.filter(
        venue_id__in=list(venues), created_at__gt=window.start, created_at__lte=now
    ).values_list("venue_id", "created_at", "accepted_at"):
        if created > venues[venue_id].since:
            waits.setdefault(venue_id, []).append(((accepted or now) - created).total_seconds())
    values = {}
    for venue_id, seen in waits.items():
        venue = venues[venue_id]
        usual = usual_accept_seconds(venue, _span(venue, window), now, known)
        if usual is not None and len(seen) >= ACCEPT_MIN_ORDERS:
            values[str(venue_id)] = statistics.median(seen) / usual
    return values


# --- payment failures ---------------------------------------------------------------------


def _platform_payments(window: Window) -> tuple[int, int]:
    """(paid, failed) over every venue in the window."""
    totals = Order.objects.filter(
        created_at__gt=window.start, created_at__lte=window.end
    ).aggregate(
        paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
        failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
    )
    return totals["paid"], totals["failed"]


def others_failure_rate(platform: tuple[int, int], own: dict[str, Any]) -> float | None:
    """The failure rate of every other venue in the window, if they settled enough."""
    paid, failed = platform[0] - own["paid"], platform[1] - own["failed"]
    return failed / (paid + failed) if paid + failed >= PLATFORM_MIN_PAYMENTS else None


def usual_failure_rate(venue: OpenVenue, start: datetime, now: datetime, known: Baselines) -> float:
    paid = failed = 0
    for slot, _ in _slots_back(venue, start, now):
        base = known.get((venue.id, slot))
        if base is not None:
            paid, failed = paid + base.payments_paid, failed + base.payments_failed
    # One failure in a few payments is no rate: shrink towards the floor.
    return (failed + PAYMENT_FLOOR_RATE * 20) / (paid + failed + 20)


def _payment_failures(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _baselines(window, timedelta(seconds=window.seconds))
    platform = _platform_payments(window)
    values = {}
    for venue_id, row in _orders_in_window(window).items():
        venue = venues[venue_id]
        settled = row["paid"] + row["failed"]
        if not settled:
            continue
        own = usual_failure_rate(venue, _span(venue, window), window.end, known)
        others = others_failure_rate(platform, row) or 0.0
        rate = max(own, others, PAYMENT_FLOOR_RATE)
        values[str(venue_id)] = 100.0 * binomial_sf(row["failed"], settled, rate)
    return values


SILENCE = "venue.orders_silence_chance"
VOLUME = "venue.order_volume_chance"
SCREENS = "venue.screens_online"
WAITING = "venue.oldest_waiting_minutes"
ACCEPT_RATIO = "venue.accept_time_ratio"
PAYMENTS = "venue.payment_failure_chance"


def register_metrics() -> None:
    database = ("database",)
    for metric in (
        Metric(SILENCE, "Venue: chance of so long without an order", "%", _silence,
               maximum=100, depends_on=database, per_venue=True),
        Metric(VOLUME, "Venue: chance of an order count this far from usual", "%", _volume,
               maximum=100, depends_on=database, per_venue=True),
        Metric(SCREENS, "Venue: kitchen screens online (venues that use them)", "screens",
               _screens, depends_on=("database", "redis"), per_venue=True),
        Metric(WAITING, "Venue: oldest order nobody has taken", "minutes", _oldest_waiting,
               depends_on=database, per_venue=True),
        Metric(ACCEPT_RATIO, "Venue: time to take an order, against its usual", "× usual",  # noqa: RUF001 -- a multiplication sign, as printed
               _accept_ratio, depends_on=database, per_venue=True),
        Metric(PAYMENTS, "Venue: chance of this many failed payments", "%", _payment_failures,
               maximum=100, depends_on=database, per_venue=True),
    ):  # fmt: skip
        register(metric)
