"""Synthetic venue history with known anomalies, for the anomaly benchmark (bench/anomaly.py).

Weeks of orders for venues of different sizes, opening hours and time zones: a daily
rhythm (lunch and dinner peaks, or a café's morning), a weekly one (busier at the weekend),
an evening-to-evening level that varies (lognormal, 15%), a slow drift, holidays (some
venues closed, the others busier), kitchens that take orders in their own time, payments
that fail now and then, and kitchen screens that staff switch on around opening (some a
little late) with short Wi-Fi drops.

Into the last weeks it injects anomalies of each kind, at random times while the venue is
open, and returns them with their true times:

- outage: no order at all for 15 to 90 minutes (the ordering path is broken);
- surge: three times the usual orders for 30 to 90 minutes;
- screens_dark: no kitchen screen connected for 15 to 90 minutes (venues that use them);
- slow_kitchen: orders taken five times slower than usual for 30 to 90 minutes;
- tickets_ignored: nobody takes any order for 15 to 60 minutes (taken all at once after);
- payment_burst: a third of payments fail for 20 to 60 minutes.

Everything is drawn from one seeded random generator: the same seed, the same history.
Rows are written with PostgreSQL's COPY.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ZONES = [
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
]
# Services per day, local time: (opens, closes); a closing at or before opening is next day.
PATTERNS: dict[str, list[tuple[time, time]]] = {
    "lunch_and_dinner": [(time(11, 30), time(14, 30)), (time(18), time(22, 30))],
    "all_day": [(time(11), time(23))],
    "late": [(time(17), time(1))],
    "cafe": [(time(7), time(16))],
}
# Local hours of the peaks (and their spread, in hours) per pattern.
PEAKS = {
    "lunch_and_dinner": [(12.75, 0.75, 1.0), (19.75, 1.0, 1.3)],
    "all_day": [(12.75, 1.0, 1.0), (19.5, 1.25, 1.2)],
    "late": [(20.0, 1.5, 1.0), (23.5, 1.0, 0.6)],
    "cafe": [(8.5, 1.0, 1.0), (12.75, 1.0, 0.9)],
}
WEEKDAY_LEVEL = [0.8, 0.85, 0.9, 1.0, 1.25, 1.35, 1.1]
# A kitchen takes an order in a log-normal time around its venue's median (accept_seconds), of
# this spread (the log's standard deviation); a slow kitchen takes SLOWDOWN times as long.
WAIT_SPREAD = 0.5
SLOWDOWN = 5.0
KINDS = ("outage", "surge", "screens_dark", "slow_kitchen", "tickets_ignored", "payment_burst")
DURATIONS = {
    "outage": (15, 90),
    "surge": (30, 90),
    "screens_dark": (15, 90),
    "slow_kitchen": (30, 90),
    "tickets_ignored": (15, 60),
    "payment_burst": (20, 60),
}


@dataclass(eq=False)
class VenuePlan:
    index: int
    name: str
    zone: str
    pattern: str
    closed_weekdays: tuple[int, ...]
    orders_per_day: float
    accept_seconds: float  # the kitchen's median time to take an order
    failure_rate: float
    screens: int  # 0: the venue does not use kitchen screens
    pk: int = 0


@dataclass(frozen=True)
class Anomaly:
    venue: int  # the plan's index
    kind: str
    start: datetime
    end: datetime
    # The orders a usual evening brings in that time (the rhythm, without the day's noise):
    # below a handful, no method can tell an anomaly of orders from a quiet spell.
    usual_orders: float = 0.0

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60


@dataclass
class History:
    start: datetime
    end: datetime
    evaluated_from: datetime
    venues: list[VenuePlan]
    holidays: dict[date, list[int]]  # local date -> indexes of the venues closed that day
    anomalies: list[Anomaly] = field(default_factory=list)
    # Filled by write(): rows written.
    counts: dict[str, int] = field(default_factory=dict)
    # Filled by write(): each service's level (venue index, local date), for a bound that
    # knows the true rate (bench/anomaly.py); recorded, never drawn again.
    levels: dict[tuple[int, date], float] = field(default_factory=dict)


def plan(
    rng: random.Random, venues: int, weeks: int, evaluated_weeks: int, end: datetime
) -> History:
    start = end - timedelta(weeks=weeks)
    plans = []
    for i in range(venues):
        pattern = rng.choice(list(PATTERNS))
        plans.append(
            VenuePlan(
                index=i,
                name=f"Venue {i + 1:03d}",
                zone=ZONES[i % len(ZONES)],
                pattern=pattern,
                closed_weekdays=(0,) if rng.random() < 0.3 else (),
                # Log-uniform between 60 and 600 orders a day.
                orders_per_day=math.exp(rng.uniform(math.log(60), math.log(600))),
                accept_seconds=rng.uniform(60, 180),
                failure_rate=rng.uniform(0.005, 0.03),
                screens=0 if rng.random() < 0.15 else rng.randint(1, 3),
            )
        )
    days = (end - start).days
    holidays = {
        (start + timedelta(days=d)).date(): [p.index for p in plans if rng.random() < 0.4]
        for d in (days // 3, 2 * days // 3 + 2)
    }
    return History(start, end, end - timedelta(weeks=evaluated_weeks), plans, holidays)


# --- when each venue is open, and how busy ------------------------------------------------


def services(history: History, venue: VenuePlan) -> Iterator[tuple[datetime, datetime, date]]:
    """(opens, closes, local date) of each service in the history, in UTC."""
    zone = ZoneInfo(venue.zone)
    day = (history.start.astimezone(zone) - timedelta(days=1)).date()
    last = history.end.astimezone(zone).date()
    while day <= last:
        closed = day.weekday() in venue.closed_weekdays or venue.index in history.holidays.get(
            day, []
        )
        if not closed:
            for opens, closes in PATTERNS[venue.pattern]:
                begin = datetime.combine(day, opens, tzinfo=zone).astimezone(UTC)
                next_day = day + timedelta(days=1) if closes <= opens else day
                finish = datetime.combine(next_day, closes, tzinfo=zone).astimezone(UTC)
                if finish > history.start and begin < history.end:
                    yield max(begin, history.start), min(finish, history.end), day
        day += timedelta(days=1)


def _shape(venue: VenuePlan, local: datetime) -> float:
    hour = local.hour + local.minute / 60
    return 0.15 + sum(
        weight * math.exp(-(((hour - peak) / spread) ** 2) / 2)
        for peak, spread, weight in PEAKS[venue.pattern]
    )


@functools.cache
def _per_day_shape(venue: VenuePlan) -> float:
    """The sum of the shape over a day's open minutes (to scale it to orders per day)."""
    total = 0.0
    for opens, closes in PATTERNS[venue.pattern]:
        minutes = (closes.hour * 60 + closes.minute - opens.hour * 60 - opens.minute) % 1440
        for m in range(minutes):
            at = datetime.combine(date(2026, 1, 5), opens) + timedelta(minutes=m)
            total += _shape(venue, at)
    return total


def rate_per_minute(venue: VenuePlan, local: datetime, level: float, scale: float) -> float:
    return venue.orders_per_day * _shape(venue, local) / scale * level


# --- anomalies ------------------------------------------------------------------------------


def inject(rng: random.Random, history: History, per_venue_and_kind: int = 2) -> None:
    """Anomalies at random open times in the evaluated weeks, never two at once at a venue."""
    warmup = timedelta(minutes=30)
    for venue in history.venues:
        spans = [
            (a, b)
            for a, b, _ in services(history, venue)
            if a >= history.evaluated_from and b - a > timedelta(hours=2)
        ]
        taken: list[tuple[datetime, datetime]] = []
        for kind in KINDS:
            if kind == "screens_dark" and not venue.screens:
                continue
            placed = 0
            for _ in range(200):
                if placed == per_venue_and_kind or not spans:
                    break
                begin, finish = rng.choice(spans)
                low, high = DURATIONS[kind]
                minutes = rng.randint(low, high)
                latest = finish - timedelta(minutes=minutes + 10)
                earliest = begin + warmup
                if latest <= earliest:
                    continue
                start = earliest + (latest - earliest) * rng.random()
                start = start.replace(second=0, microsecond=0)
                end = start + timedelta(minutes=minutes)
                margin = timedelta(minutes=30)
                if any(start < b + margin and a - margin < end for a, b in taken):
                    continue
                taken.append((start, end))
                usual = usual_orders(venue, start, end)
                history.anomalies.append(Anomaly(venue.index, kind, start, end, usual))
                placed += 1


def usual_orders(venue: VenuePlan, start: datetime, end: datetime) -> float:
    zone, scale = ZoneInfo(venue.zone), _per_day_shape(venue)
    total, at = 0.0, start
    while at < end:
        local = at.astimezone(zone)
        total += rate_per_minute(venue, local, WEEKDAY_LEVEL[local.weekday()], scale)
        at += timedelta(minutes=1)
    return total


def _during(anomalies: list[Anomaly], kind: str, at: datetime) -> Anomaly | None:
    for anomaly in anomalies:
        if anomaly.kind == kind and anomaly.start <= at < anomaly.end:
            return anomaly
    return None


# --- the rows -------------------------------------------------------------------------------


@dataclass
class OrderRow:
    created: datetime
    accepted: datetime | None
    status: str
    payment: str


def calendar_level(history: History, day: date) -> float:
    """A day's level as its calendar sets it (the weekday, the drift, a holiday), before the
    evening's own noise: what a detector could in principle learn ahead of the evening."""
    days = max(1, (history.end - history.start).days)
    drift = 1 + 0.1 * math.sin(2 * math.pi * (day - history.start.date()).days / days)
    holiday = 1.5 if day in history.holidays else 1.0
    return WEEKDAY_LEVEL[day.weekday()] * drift * holiday


def orders(rng: random.Random, history: History, venue: VenuePlan) -> list[OrderRow]:
    zone = ZoneInfo(venue.zone)
    scale = _per_day_shape(venue)
    mine = [a for a in history.anomalies if a.venue == venue.index]
    levels: dict[date, float] = {}
    rows: list[OrderRow] = []
    for begin, finish, day in services(history, venue):
        if day not in levels:
            levels[day] = calendar_level(history, day) * rng.lognormvariate(0, 0.15)
            history.levels[(venue.index, day)] = levels[day]
        at = begin
        while at < finish:
            rate = rate_per_minute(venue, at.astimezone(zone), levels[day], scale)
            if _during(mine, "surge", at):
                rate *= 3
            for _ in range(_poisson(rng, rate)):
                created = at + timedelta(seconds=rng.uniform(0, 60))
                if created >= finish or _during(mine, "outage", created):
                    continue
                rows.append(_order(rng, venue, mine, created))
            at += timedelta(minutes=1)
    rows.sort(key=lambda r: r.created)
    return rows


def _order(
    rng: random.Random, venue: VenuePlan, mine: list[Anomaly], created: datetime
) -> OrderRow:
    failure = venue.failure_rate
    if _during(mine, "payment_burst", created):
        failure = 0.33
    payment = "failed" if rng.random() < failure else "paid"
    if rng.random() < 0.03:
        return OrderRow(created, None, "cancelled", payment)
    wait = venue.accept_seconds * rng.lognormvariate(0, WAIT_SPREAD)
    if _during(mine, "slow_kitchen", created):
        wait *= SLOWDOWN
    accepted = created + timedelta(seconds=wait)
    ignored = _during(mine, "tickets_ignored", accepted)
    if ignored is not None:
        accepted = ignored.end + timedelta(seconds=rng.uniform(10, 120))
    return OrderRow(created, accepted, "completed", payment)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, n, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        n += 1
        product *= rng.random()
    return n


def screen_samples(
    rng: random.Random, history: History, venue: VenuePlan
) -> list[tuple[datetime, int]]:
    """(when, screens) as one web process writes them: a row a minute while screens are
    connected in the evaluated weeks (every 5 minutes before: enough for the quarter-hour
    baseline), and a 0 when the last one leaves."""
    if not venue.screens:
        return []
    mine = [a for a in history.anomalies if a.venue == venue.index and a.kind == "screens_dark"]
    found: list[tuple[datetime, int]] = []
    for begin, finish, _ in services(history, venue):
        on = begin + timedelta(minutes=rng.uniform(-10, 15))
        off = finish + timedelta(minutes=rng.uniform(0, 10))
        step = timedelta(minutes=1 if begin >= history.evaluated_from else 5)
        # A Wi-Fi drop now and then: all screens gone for a minute or two.
        drops = [on + (off - on) * rng.random() for _ in range(rng.randint(0, 2))]
        at = on
        while at < off:
            dark = _during(mine, "screens_dark", at) or any(
                d <= at < d + timedelta(minutes=2) for d in drops
            )
            found.append((at, 0 if dark else venue.screens))
            at += step
        found.append((off, 0))
    return found


def write(rng: random.Random, history: History, worker_id: int) -> None:
    """Venues (with their hours and holidays), orders and screen samples, into the database."""
    from django.db import connection

    from orders.models import OpeningException, OpeningHours, Venue

    for venue in history.venues:
        made = Venue.objects.create(
            name=venue.name, slug=f"venue-{venue.index + 1:03d}", timezone=venue.zone
        )
        venue.pk = made.pk
        OpeningHours.objects.bulk_create(
            OpeningHours(venue=made, weekday=d, opens=opens, closes=closes)
            for d in range(7)
            if d not in venue.closed_weekdays
            for opens, closes in PATTERNS[venue.pattern]
        )
    OpeningException.objects.bulk_create(
        OpeningException(venue_id=history.venues[i].pk, date=day, closed=True, note="Holiday")
        for day, closed in history.holidays.items()
        for i in closed
    )
    orders_written = samples_written = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor
        for venue in history.venues:
            with raw.copy(
                'COPY orders_order (venue_id, number, "table", status, payment_status, '
                "currency, total, created_at, updated_at, accepted_at) FROM STDIN"
            ) as copy:
                for number, row in enumerate(orders(rng, history, venue), start=1):
                    copy.write_row((
                        venue.pk, number, f"T{number % 20 + 1}", row.status, row.payment,
                        "USD", "18.50", row.created, row.accepted or row.created, row.accepted,
                    ))  # fmt: skip
                    orders_written += 1
            with raw.copy(
                "COPY monitoring_venuescreensample (worker_id, recorded_at, venue_id, screens) "
                "FROM STDIN"
            ) as copy:
                for at, screens in screen_samples(rng, history, venue):
                    copy.write_row((worker_id, at, venue.pk, screens))
                    samples_written += 1
        cursor.execute(
            "UPDATE orders_venue v SET order_counter = "
            "(SELECT coalesce(max(number), 0) FROM orders_order o WHERE o.venue_id = v.id)"
        )
    history.counts = {"orders": orders_written, "screen samples": samples_written}


def true_rates(
    history: History, venue: VenuePlan, start: datetime, calendar: bool = False
) -> list[float]:
    """The generator's order rate, per minute from `start` (a whole minute) to the end: what
    a venue's orders would arrive at with no anomaly (0 while it is closed). Calendar: at
    the day's calendar_level(), without the evening's own noise."""
    zone, scale = ZoneInfo(venue.zone), _per_day_shape(venue)
    rates = [0.0] * int((history.end - start).total_seconds() // 60)
    for begin, finish, day in services(history, venue):
        at = max(begin, start)
        while at < finish:
            local = at.astimezone(zone)
            level = calendar_level(history, day) if calendar else history.levels[(venue.index, day)]
            rates[int((at - start).total_seconds() // 60)] = rate_per_minute(
                venue, local, level, scale
            )
            at += timedelta(minutes=1)
    return rates
