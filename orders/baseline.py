"""What a venue usually does in a quarter hour of its week: read from VenueActivity rows.

The baseline of a (venue, week slot) is taken over the past BASELINE_WEEKS weeks, only the
weeks in which the venue was open for that quarter hour (a holiday or a closure does not
count as a quiet evening). Orders per quarter hour are a trimmed mean: the busiest and the
quietest week are left out, so a single odd week (a festival, an outage) moves nothing.
With fewer than BASELINE_MIN_WEEKS weeks there is no baseline: the venue is still learned.

One query for every venue and slot asked: an index range on (week_slot, starts_at).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NamedTuple

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.expressions import RawSQL

from orders.models import VenueActivity
from orders.models.activity import SLOT_SECONDS, SLOTS_PER_DAY

BASELINE_WEEKS = 8
BASELINE_MIN_WEEKS = 3


class SlotBaseline(NamedTuple):  # a tuple: a cycle builds some 100,000 of them
    weeks: int  # weeks the venue was open for the quarter hour
    orders: float  # usual orders in the quarter hour (trimmed mean)
    accepted: int  # over those weeks: orders the kitchen took, and the seconds it took
    accept_seconds: float
    accept_log_sum: float  # the sums of those seconds' natural logs and of their squares
    accept_log_squares: float
    payments_paid: int
    payments_failed: int
    screen_weeks: int  # weeks with a screen connected in the quarter hour

    @property
    def known(self) -> bool:
        return self.weeks >= BASELINE_MIN_WEEKS


def quarter_floor(at: datetime) -> datetime:
    seconds = int(at.timestamp()) // SLOT_SECONDS * SLOT_SECONDS
    return datetime.fromtimestamp(seconds, tz=UTC)


def among(ids: Iterable[int]) -> Any:
    """The right side of `venue_id__in` for thousands of ids: one array parameter on
    PostgreSQL (a list is a parameter per id, each resolved by Django), a list elsewhere."""
    values = [int(i) for i in ids]
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", (values,))
    return values


def local_slot(starts_at: datetime, zone: tzinfo) -> int:
    """The week slot of a quarter hour in a zone: local weekday * 96 + quarter of the day."""
    local = starts_at.astimezone(zone)
    return local.weekday() * SLOTS_PER_DAY + (local.hour * 60 + local.minute) // 15


def trimmed_mean(total: float, highest: float, lowest: float, n: int) -> float:
    """The mean without the highest and lowest values (the median of three)."""
    if n >= 3:
        return (total - highest - lowest) / (n - 2)
    return total / n if n else 0.0


# The rows a baseline at `now` reads: the past weeks' same local slot, not this week's. The
# bounds move a quarter hour at a time, so a baseline holds for the whole quarter hour, and
# into the next unless moved() names it (a process keeps them: orders.anomaly.live).
def since(now: datetime) -> datetime:
    return quarter_floor(now) - timedelta(weeks=BASELINE_WEEKS, hours=2)


def until(now: datetime) -> datetime:
    # The same local slot a week ago is at least 6 days and 23 hours back (a clock change).
    return quarter_floor(now) - timedelta(days=6, hours=12)


class ActivityRow(NamedTuple):
    orders: int
    accepted: int
    accept_seconds: float
    accept_log_sum: float
    accept_log_squares: float
    payments_paid: int
    payments_failed: int
    screens: int


ROW_FIELDS = ActivityRow._fields


def summarize(rows: Sequence[ActivityRow]) -> SlotBaseline:
    """The baseline of one slot from its open rows (what baselines() has the database do)."""
    orders = [r.orders for r in rows]
    return SlotBaseline(
        weeks=len(rows),
        orders=trimmed_mean(sum(orders), max(orders, default=0), min(orders, default=0), len(rows)),
        accepted=sum(r.accepted for r in rows),
        accept_seconds=sum(r.accept_seconds for r in rows),
        accept_log_sum=sum(r.accept_log_sum for r in rows),
        accept_log_squares=sum(r.accept_log_squares for r in rows),
        payments_paid=sum(r.payments_paid for r in rows),
        payments_failed=sum(r.payments_failed for r in rows),
        screen_weeks=sum(1 for r in rows if r.screens > 0),
    )


def plain_rows(queryset: Any) -> list[tuple[Any, ...]]:
    """A values_list() of ids, counts, sums and float seconds as the database returns them:
    without Django's per-value converters, which cost more than the query at tens of
    thousands of rows (both databases already give ints and floats for these)."""
    try:
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:  # an empty `__in` list (SQLite): no row, as Django would give
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def newest_row() -> int:
    """The id of the newest activity row written (0 for none)."""
    return VenueActivity.objects.aggregate(newest=Max("pk"))["newest"] or 0


def moved(old: datetime, new: datetime, after_row: int) -> set[tuple[int, int]]:
    """The (venue id, week slot)s whose baseline at `new` may differ from the one at `old`,
    an earlier time: those of the rows that left or entered the weeks read in between, and
    of rows written into those weeks after row `after_row` (a late roll-up). Every other
    baseline read at `old` holds at `new`. (A row of those weeks rewritten in place is not
    seen: the roll-up rewrites only its last hour, younger than any row read, except when it
    catches up after more than 6.5 days down: then the hour before where it stopped. It stays
    until the venue closes or the process restarts. Rows come in id order: the periodic
    roll-up runs one at a time.)"""
    rows = VenueActivity.objects.values_list("venue_id", "week_slot").order_by()
    left = rows.filter(starts_at__gte=since(old), starts_at__lt=since(new))
    entered = rows.filter(starts_at__gte=until(old), starts_at__lt=until(new))
    late = rows.filter(pk__gt=after_row, starts_at__gte=since(new), starts_at__lt=until(new))
    return {(venue, slot) for venue, slot in plain_rows(left.union(entered, late))}


def baselines(
    slots: Iterable[int], now: datetime, venues: Iterable[int] | None = None
) -> dict[tuple[int, int], SlotBaseline]:
    """{(venue id, week slot): its baseline} for the slots asked, from the weeks before now."""
    wanted = sorted(set(slots))
    if not wanted:
        return {}
    rows = VenueActivity.objects.filter(
        week_slot__in=wanted,
        open=True,
        starts_at__gte=since(now),
        starts_at__lt=until(now),
    )
    if venues is not None:
        rows = rows.filter(venue_id__in=among(venues))
    found = {}
    for venue, slot, weeks, total, highest, lowest, *taken, paid, failed, screens in plain_rows(
        rows.values_list("venue_id", "week_slot")
        .annotate(
            weeks=Count("pk"),
            total=Sum("orders"),
            highest=Max("orders"),
            lowest=Min("orders"),
            accepted=Sum("accepted"),
            accept_seconds=Sum("accept_seconds"),
            accept_log_sum=Sum("accept_log_sum"),
            accept_log_squares=Sum("accept_log_squares"),
            paid=Sum("payments_paid"),
            failed=Sum("payments_failed"),
            screen_weeks=Count("pk", filter=Q(screens__gt=0)),
        )
        .order_by()
    ):
        accepted, seconds, logs, squares = taken
        found[(venue, slot)] = SlotBaseline(
            weeks, trimmed_mean(total, highest, lowest, weeks), accepted, seconds, logs, squares,
            paid, failed, screens,
        )  # fmt: skip
    return found
