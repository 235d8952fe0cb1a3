"""The quarter-hour rollup of each venue's orders, takes, payments and screens.

A beat task (`orders.activity_rollup`) writes VenueActivity rows for the quarter hours
that ended since the last run, and again for the hour before (an order taken or paid a
little after its quarter hour ended is counted with the quarter it was placed in). It is
idempotent (an upsert per venue and quarter) and catches up after downtime, at most
ACTIVITY_CATCH_UP back. The live metrics never wait for it: they read the current hour
from the orders themselves, and only the baseline (past weeks) from these rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.db import connection
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Q,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, Ln, Power
from django.utils import timezone

from monitoring.alerting.replay import EpochFloor
from monitoring.models import VenueScreenSample
from orders import hours
from orders.baseline import local_slot, quarter_floor
from orders.models import Order, PaymentStatus, VenueActivity
from orders.models.activity import SLOT_SECONDS

logger = structlog.get_logger(__name__)

QUARTER = timedelta(seconds=SLOT_SECONDS)
# Quarters written again on every run: late takes and payments of recent orders.
REDO = timedelta(hours=1)
ACTIVITY_CATCH_UP = timedelta(days=63)
# A catch-up is written a day at a time, so memory stays bounded.
CHUNK = timedelta(days=1)


def week_slot(starts_at: datetime, schedule: hours.Schedule) -> int:
    return local_slot(starts_at, schedule.zone)


# PostgreSQL's advisory lock key of the periodic roll-up ("inkwrlup"): one runs at a time.
ROLLUP_LOCK = 0x696E6B77726C7570


@contextmanager
def _single_flight() -> Iterator[bool]:
    """Whether this process holds the roll-up's lock (always, on SQLite: one writer)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ROLLUP_LOCK])
        (held,) = cursor.fetchone() or (False,)
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ROLLUP_LOCK])


def roll_up_recent(now: datetime | None = None) -> int:
    """The periodic run: from an hour before the last quarter written to the last ended one.
    One at a time: two at once would write the same rows twice, and rows committed out of
    id order are not seen by the baselines a process keeps (orders.baseline.moved)."""
    with _single_flight() as held:
        if not held:
            logger.info("venue_activity_rollup_skipped", reason="another roll-up is running")
            return 0
        return _roll_up_recent(now)


def _roll_up_recent(now: datetime | None) -> int:
    now = now or timezone.now()
    end = quarter_floor(now)
    last = VenueActivity.objects.aggregate(last=Max("starts_at"))["last"]
    start = (last + QUARTER - REDO) if last is not None else end - REDO
    start = max(start, end - ACTIVITY_CATCH_UP)
    return roll_up(start, end)


def roll_up(start: datetime, end: datetime) -> int:
    """Write the rows of the quarters in [start, end) (rounded down to quarters)."""
    start, end = quarter_floor(start), quarter_floor(end)
    written = 0
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(end, chunk_start + CHUNK)
        written += _roll_up_chunk(chunk_start, chunk_end)
        chunk_start = chunk_end
    if written:
        logger.info("venue_activity_rolled_up", start=start.isoformat(), rows=written)
    return written


Key = tuple[int, int]  # (venue id, quarter index since the epoch)


def _roll_up_chunk(start: datetime, end: datetime) -> int:
    rows: dict[Key, dict[str, Any]] = defaultdict(dict)
    for row in _orders(start, end):
        taken = row.pop("taken")
        row["accept_seconds"] = taken.total_seconds() if taken else 0.0
        row["accept_log_sum"] = row["accept_log_sum"] or 0.0
        row["accept_log_squares"] = row["accept_log_squares"] or 0.0
        rows[(row.pop("venue_id"), row.pop("quarter"))].update(row)
    for venue, quarter, screens in _screens(start, end):
        rows[(venue, quarter)]["screens"] = screens
    schedules = hours.schedules()
    open_quarters = _open_quarters(schedules, start, end)
    for key in open_quarters:
        rows.setdefault(key, {})
    objects = []
    for (venue, quarter), values in rows.items():
        schedule = schedules.get(venue)
        if schedule is None:
            continue  # a venue deleted since
        starts_at = datetime.fromtimestamp(quarter * SLOT_SECONDS, tz=UTC)
        objects.append(
            VenueActivity(
                venue_id=venue,
                starts_at=starts_at,
                week_slot=week_slot(starts_at, schedule),
                open=(venue, quarter) in open_quarters,
                **values,
            )
        )
    VenueActivity.objects.bulk_create(
        objects,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["venue", "starts_at"],
        update_fields=[
            "week_slot",
            "open",
            "orders",
            "accepted",
            "accept_seconds",
            "accept_log_sum",
            "accept_log_squares",
            "payments_paid",
            "payments_failed",
            "screens",
        ],
    )
    return len(objects)


class WaitSeconds(Func):
    """Seconds from the second datetime to the first, as a float, on either database."""

    output_field = FloatField()
    arity = 2

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(EXTRACT(EPOCH FROM (%(expressions)s)) AS double precision)"
        return self.as_sql(compiler, connection, template=template, arg_joiner=" - ", **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        (later, first), (earlier, second) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        return f"((julianday({later}) - julianday({earlier})) * 86400.0)", (*first, *second)


def log_wait() -> Any:
    """The natural log of an order's seconds from placed to taken (a second at least)."""
    return Ln(Greatest(WaitSeconds(F("accepted_at"), F("created_at")), Value(1.0)))


def _orders(start: datetime, end: datetime) -> Any:
    wait = ExpressionWrapper(F("accepted_at") - F("created_at"), output_field=DurationField())
    taken = Q(accepted_at__isnull=False)
    return (
        Order.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(quarter=EpochFloor("created_at", SLOT_SECONDS))
        .values("venue_id", "quarter")
        .annotate(
            orders=Count("pk"),
            accepted=Count("pk", filter=taken),
            taken=Sum(wait, filter=taken),
            accept_log_sum=Sum(log_wait(), filter=taken),
            accept_log_squares=Sum(Power(log_wait(), 2), filter=taken),
            payments_paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
            payments_failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
        )
        .order_by()
    )


def _screens(start: datetime, end: datetime) -> Any:
    return (
        VenueScreenSample.objects.filter(recorded_at__gte=start, recorded_at__lt=end)
        .annotate(quarter=EpochFloor("recorded_at", SLOT_SECONDS))
        .values_list("venue_id", "quarter")
        .annotate(most=Max("screens"))
        .order_by()
    )


def _open_quarters(
    schedules: dict[int, hours.Schedule], start: datetime, end: datetime
) -> set[Key]:
    """The quarters in [start, end) each venue was open for, whole."""
    found: set[Key] = set()
    for venue, schedule in schedules.items():
        for begin, finish in schedule.spans(start, end):
            first = -(-int(max(begin, start).timestamp()) // SLOT_SECONDS)
            last = int(min(finish, end).timestamp()) // SLOT_SECONDS
            found.update((venue, q) for q in range(first, last))
    return found
