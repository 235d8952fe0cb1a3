"""The daily summary per venue and the weekly report: figures computed in the database, per
venue, over the venue's local day. Each period is claimed once (`claim_once`), so two beats
or a retried task send it once."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import structlog
from django.db import transaction
from django.db.models import Count, QuerySet, Sum

from inkwave.lib.formats import money, plural
from monitoring.models import Incident
from notifications.formatting import Composed, fit, header_block, section_block
from notifications.models import Notification, NotificationKind
from notifications.outbox import claim_once, enqueue
from notifications.slack_text import Mrkdwn, escape_text, mrkdwn
from orders.models import NON_REVENUE_STATUSES, Order, OrderEvent, OrderEventKind, Venue

logger = structlog.get_logger(__name__)


# --- order figures ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueFigures:
    venue: Venue
    period: str
    orders: int
    revenue: Decimal
    failed: int
    # Incidents opened in the period that concern this venue (its own, or deployment-wide).
    incidents: int | None = None

    @property
    def average(self) -> Decimal:
        return average_order(self.revenue, self.orders)


def counted_orders(start: datetime, end: datetime) -> QuerySet[Order]:
    """The orders the reports (and the dashboard) count: placed in [start, end), not cancelled."""
    return Order.objects.filter(created_at__gte=start, created_at__lt=end).exclude(
        status__in=NON_REVENUE_STATUSES
    )


def average_order(revenue: Decimal, orders: int) -> Decimal:
    return (revenue / orders).quantize(Decimal("0.01")) if orders else Decimal(0)


def figures(venue: Venue, start: datetime, end: datetime, period: str) -> VenueFigures:
    counted = counted_orders(start, end).filter(venue=venue)
    totals = counted.aggregate(orders=Count("pk"), revenue=Sum("total", default=Decimal(0)))
    failed = OrderEvent.objects.filter(
        venue=venue, kind=OrderEventKind.CREATION_FAILED, created_at__gte=start, created_at__lt=end
    ).count()
    return VenueFigures(venue, period, totals["orders"], totals["revenue"], failed)


def local_day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def _summary_message(
    title: str, rows: list[VenueFigures], incidents: int | None, incidents_period: str = ""
) -> Composed:
    lines: list[str] = []
    blocks = [header_block(title)]

    def add(name: str, rest: str) -> None:
        # The name in bold in the block, plain in the fallback; both escaped.
        lines.append(mrkdwn("{}{}", name, rest))
        blocks.append(section_block(mrkdwn("*{}*{}", name, rest)))

    by_currency: dict[str, list[VenueFigures]] = defaultdict(list)
    for row in rows:
        by_currency[row.venue.currency].append(row)
        add(
            row.venue.name,
            f" ({row.period}): {plural(row.orders, 'order')}, "
            f"revenue {money(row.revenue, row.venue.currency)}, "
            f"avg order {money(row.average, row.venue.currency)}, "
            f"failed orders {row.failed}"
            + ("" if row.incidents is None else f", incidents {row.incidents}"),
        )
    for currency, group in sorted(by_currency.items()):
        orders = sum(r.orders for r in group)
        revenue = sum((r.revenue for r in group), Decimal(0))
        average = average_order(revenue, orders)
        add(
            f"Total ({currency})",
            f": {plural(orders, 'order')}, revenue {money(revenue, currency)}, "
            f"avg order {money(average, currency)}, failed orders {sum(r.failed for r in group)}",
        )
    if incidents is not None:
        add(f"Incidents opened {incidents_period}", f": {incidents}")
    return fit(Mrkdwn("\n".join([escape_text(title), *lines])), blocks)


def incidents_opened(start: datetime, end: datetime, venue: Venue | None = None) -> int:
    """Incidents opened in [start, end); for a venue, its own and the deployment-wide ones."""
    opened = Incident.objects.filter(opened_at__gte=start, opened_at__lt=end)
    if venue is not None:
        opened = opened.filter(scope__in=["", str(venue.pk)])
    return opened.count()


@transaction.atomic  # the claim commits only with the message it claims
def daily_summaries(now: datetime) -> list[Notification]:
    """For every venue whose local day has ended and is not summarised yet: one message."""
    rows = []
    for venue in Venue.objects.filter(is_active=True).order_by("name"):
        day = now.astimezone(ZoneInfo(venue.timezone)).date() - timedelta(days=1)
        if venue.created_at.astimezone(ZoneInfo(venue.timezone)).date() > day:
            continue  # the venue did not exist yet on that day
        if not claim_once(f"daily:{venue.pk}:{day.isoformat()}"):
            continue
        start, end = local_day_bounds(day, venue.timezone)
        row = figures(venue, start, end, day.isoformat())
        # The venue's own local day, as its orders are counted.
        rows.append(replace(row, incidents=incidents_opened(start, end, venue)))
    if not rows:
        return []
    message = _summary_message("📊 Daily Summary", rows, None)
    return enqueue(NotificationKind.DAILY_SUMMARY, message)


@transaction.atomic  # the claim commits only with the message it claims
def weekly_report(now: datetime) -> list[Notification]:
    """The ISO week before this one, in UTC, once."""
    this_monday = (now.astimezone(ZoneInfo("UTC")) - timedelta(days=now.weekday())).date()
    monday = this_monday - timedelta(days=7)
    year, week, _ = monday.isocalendar()
    start = datetime.combine(monday, time.min, tzinfo=ZoneInfo("UTC"))
    end = start + timedelta(days=7)
    venues = list(Venue.objects.filter(is_active=True, created_at__lt=end).order_by("name"))
    if not venues or not claim_once(f"weekly:{year}-W{week:02d}"):
        return []
    period = f"{year}-W{week:02d}"
    rows = [figures(venue, start, end, period) for venue in venues]
    return enqueue(
        NotificationKind.WEEKLY_REPORT,
        _summary_message(
            f"🗓️ Weekly Report {period}", rows, incidents_opened(start, end), "that week"
        ),
    )
