"""A venue at a glance (a staff page linked from its admin page): its screens online now and
over the day, and its orders per hour today against the same hours a week before.

Screens come from the web processes' recorded counts (monitoring.screens: summed over
processes), orders from the Order rows; "today" is the venue's own day, in its time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.db.models.functions import TruncHour

from monitoring import screens
from monitoring.charts import ChartSpec, Line, epoch, spec
from orders.models import Order, Venue

WEEK = timedelta(days=7)


@dataclass
class VenueDay:
    start: datetime  # the venue's midnight
    now: datetime
    screens_now: int
    screens: ChartSpec
    orders: ChartSpec
    orders_today: int
    orders_last_week: int  # up to the same time of day


def local_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    return datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)


def orders_per_hour(venue: Venue, start: datetime, end: datetime) -> dict[int, int]:
    """Orders placed in [start, end), by the venue's local hour of the day."""
    zone = ZoneInfo(venue.timezone)
    rows = (
        Order.objects.filter(venue=venue, created_at__gte=start, created_at__lt=end)
        .annotate(hour=TruncHour("created_at", tzinfo=zone))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["hour"].astimezone(zone).hour: row["n"] for row in rows}


def venue_day(venue: Venue, now: datetime) -> VenueDay:
    zone = ZoneInfo(venue.timezone)
    start = local_midnight(now, zone)
    online = screens.screens_over(venue.pk, start, now)
    screens_chart = spec("Screens online", "", online, "screens (fewest in each minute)")
    screens_chart["height"] = 180

    # The hours of today so far, against the same hours of the same weekday a week before
    # (on the wall clock: a week before 19:00 is 19:00, across a change of summer time).
    week_before = start - WEEK  # wall-clock arithmetic: the local midnight a week before
    today = orders_per_hour(venue, start, now + timedelta(microseconds=1))
    before = orders_per_hour(venue, week_before, start - WEEK + timedelta(days=1))
    hours = list(range(now.astimezone(zone).hour + 1))
    times = [epoch(datetime.combine(start.date(), time(h), tzinfo=zone)) for h in hours]
    orders_chart = ChartSpec(
        title="Orders per hour",
        unit="",
        times=times,
        series=[
            Line(label="today", values=[float(today.get(h, 0)) for h in hours]),
            Line(label=f"{week_before:%A %-d %B}", values=[float(before.get(h, 0)) for h in hours]),
        ],
        thresholds=[],
        spans=[],
        marks=[],
        height=180,
    )
    same_time_last_week = orders_per_hour(
        venue, week_before, now.astimezone(zone) - WEEK + timedelta(microseconds=1)
    )
    return VenueDay(
        start=start,
        now=now,
        screens_now=screens.screens_now(venue.pk, now),
        screens=screens_chart,
        orders=orders_chart,
        orders_today=sum(today.values()),
        orders_last_week=sum(same_time_last_week.values()),
    )
