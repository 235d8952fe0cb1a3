"""Where the dashboard's trends are read from: the samples, or their hourly rollups.

The hour and day ranges group the raw samples by bucket in the database (one GROUP BY per
table). The week and month ranges would group a million rows each that way, so a beat task
(roll_up) sums every complete hour of samples into one TrendRollup row, and those ranges
read the rollups for the hours they cover (720 rows for a month) plus the raw samples for
what is not rolled up yet: the partial hour at the range's start and the newest minutes
after the last rollup. Both paths give the same sums for the same samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, FloatField, Min, QuerySet, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, delete_in_batches
from monitoring import figures
from monitoring.alerting.replay import EpochBucket
from monitoring.models import RequestSample, TrendRollup, WebSocketSample

logger = structlog.get_logger(__name__)

HOUR = 3600
# Hours summed per statement when catching up (a day of samples per GROUP BY).
CATCH_UP_HOURS = 24

WS_HISTORY_SUMS = {
    "connection_seconds": Sum(
        Cast(F("active_connections"), FloatField()) * F("interval_seconds"), default=0.0
    ),
    "memory_seconds": Sum(
        Cast(F("memory_rss_bytes"), FloatField()) * F("interval_seconds"), default=0.0
    ),
    "sent": Sum("messages_sent", default=0),
    "received": Sum("messages_received", default=0),
    "connections": Sum("connections", default=0),
    "rejected": Sum("rejected_connections", default=0),
    "errors": Sum("errors", default=0),
    "delivery_count": Sum("delivery_count", default=0),
    "delivery_sum": Sum("delivery_sum_ms", default=0.0),
}
# TrendRollup's columns are named after these sums.
WS_FIELDS = list(WS_HISTORY_SUMS)
HTTP_FIELDS = list(figures.HTTP_SUMS)

Buckets = dict[int, figures.Sums]


def websocket_query(start: datetime, end: datetime, step: int) -> QuerySet[Any]:
    """One row per bucket: the sums of the web processes' samples (one GROUP BY)."""
    return (
        figures.samples(start, end)
        .annotate(bucket=EpochBucket("recorded_at", step))
        .order_by()
        .values("bucket")
        .annotate(**WS_HISTORY_SUMS)
    )


def http_query(start: datetime, end: datetime, step: int) -> QuerySet[Any]:
    return (
        figures.served_requests(start, end)
        .annotate(bucket=EpochBucket("recorded_at", step))
        .order_by()
        .values("bucket")
        .annotate(**figures.HTTP_SUMS)
    )


def raw_buckets(start: datetime, end: datetime, step: int) -> tuple[Buckets, Buckets]:
    """The WebSocket and HTTP sums of (start, end] by bucket, from the samples."""
    if end <= start:
        return {}, {}
    ws = {row.pop("bucket"): row for row in websocket_query(start, end, step)}
    http = {row.pop("bucket"): row for row in http_query(start, end, step)}
    return ws, http


def rollup_query(start: datetime, end: datetime, step: int) -> QuerySet[Any]:
    """One row per bucket of `step` (a multiple of an hour): the rollups of the hours
    ending in (start, end], summed."""
    sums = {name: Sum(name) for name in ["ws_samples", *WS_FIELDS, "http_samples", *HTTP_FIELDS]}
    return (
        TrendRollup.objects.filter(ends_at__gt=start, ends_at__lte=end)
        .annotate(bucket=EpochBucket("ends_at", step))
        .order_by()
        .values("bucket")
        .annotate(**sums)
    )


def rolled_buckets(start: datetime, end: datetime, step: int) -> tuple[Buckets, Buckets]:
    """As raw_buckets, from the rollups: a bucket without samples is left out, as the raw
    GROUP BY leaves it out."""
    ws: Buckets = {}
    http: Buckets = {}
    for row in rollup_query(start, end, step):
        if row["ws_samples"]:
            ws[row["bucket"]] = {name: row[name] for name in WS_FIELDS}
        if row["http_samples"]:
            http[row["bucket"]] = {name: row[name] for name in HTTP_FIELDS}
    return ws, http


def rolled_up_until(end: datetime) -> datetime | None:
    """The end of the last rolled-up hour at or before `end` (None: nothing rolled up)."""
    return (
        TrendRollup.objects.filter(ends_at__lte=end)
        .order_by("-ends_at")
        .values_list("ends_at", flat=True)
        .first()
    )


def _merge(*parts: Buckets) -> Buckets:
    merged: Buckets = {}
    for part in parts:
        for bucket, sums in part.items():
            if bucket in merged:
                merged[bucket] = {name: merged[bucket][name] + sums[name] for name in sums}
            else:
                merged[bucket] = dict(sums)
    return merged


def trend_buckets(start: datetime, end: datetime, step: int) -> tuple[Buckets, Buckets]:
    """The sums of (start, end] by bucket of `step` (a multiple of an hour): rollups for the
    whole hours up to the last one rolled up, the samples before and after them."""
    first_hour = _ceil_hour(start)
    until = rolled_up_until(end)
    if step % HOUR or until is None or until <= first_hour:
        return raw_buckets(start, end, step)
    head = raw_buckets(start, first_hour, step)
    rolled = rolled_buckets(first_hour, until, step)
    tail = raw_buckets(until, end, step)
    return _merge(head[0], rolled[0], tail[0]), _merge(head[1], rolled[1], tail[1])


# --- writing ---------------------------------------------------------------------------


def _floor_hour(moment: datetime) -> datetime:
    return datetime.fromtimestamp(int(moment.timestamp()) // HOUR * HOUR, tz=UTC)


def _ceil_hour(moment: datetime) -> datetime:
    return datetime.fromtimestamp(-(-int(moment.timestamp()) // HOUR) * HOUR, tz=UTC)


def lag_seconds() -> float:
    """How long after an hour ends its last samples may still be on their way: a process
    writes what it counted every METRICS_FLUSH_SECONDS."""
    return max(2 * settings.METRICS_FLUSH_SECONDS, 30.0)


def _first_hour_to_write(last: datetime, now: datetime) -> datetime:
    """The end of the first hour not rolled up yet; after downtime, no older than the
    samples' retention (older ones may be pruned already)."""
    done = TrendRollup.objects.order_by("-ends_at").values_list("ends_at", flat=True).first()
    if done is not None:
        first = done + timedelta(hours=1)
    else:
        oldest = [
            model.objects.aggregate(oldest=Min("recorded_at"))["oldest"]
            for model in (WebSocketSample, RequestSample)
        ]
        known = [moment for moment in oldest if moment is not None]
        first = _ceil_hour(min(known)) if known else last
    retained = now - timedelta(days=settings.METRICS_RETENTION_DAYS)
    return max(first, _ceil_hour(retained))


def _rows(after: datetime, through: datetime, now: datetime) -> Iterable[TrendRollup]:
    """The rollups of the hours ending in (after, through], recomputed from the samples."""
    ws = figures.samples(after, through).annotate(bucket=EpochBucket("recorded_at", HOUR))
    ws_rows = ws.order_by().values("bucket").annotate(ws_samples=Count("pk"), **WS_HISTORY_SUMS)
    http = figures.served_requests(after, through).annotate(bucket=EpochBucket("recorded_at", HOUR))
    http_rows = (
        http.order_by().values("bucket").annotate(http_samples=Count("pk"), **figures.HTTP_SUMS)
    )
    by_bucket: dict[int, dict[str, Any]] = {}
    for row in [*ws_rows, *http_rows]:
        by_bucket.setdefault(row.pop("bucket"), {}).update(row)
    first = int(after.timestamp()) // HOUR
    for bucket in range(first, int(through.timestamp()) // HOUR):
        ends_at = datetime.fromtimestamp((bucket + 1) * HOUR, tz=UTC)
        yield TrendRollup(ends_at=ends_at, computed_at=now, **by_bucket.get(bucket, {}))


UPDATED = ["computed_at", "ws_samples", *WS_FIELDS, "http_samples", *HTTP_FIELDS]


def roll_up(now: datetime | None = None) -> int:
    """Write the rollup of every complete hour not written yet; returns the hours written.

    An hour is complete once lag_seconds() have passed since it ended. Each row is an
    upsert of sums recomputed from the samples, so two beats, or a retried task, write the
    same figures and never add an hour twice. A day of hours per statement and transaction:
    a catch-up after downtime keeps what it has done if it is interrupted.
    """
    now = now or timezone.now()
    last = _floor_hour(now - timedelta(seconds=lag_seconds()))
    first = _first_hour_to_write(last, now)
    written = 0
    while first <= last:
        through = min(first + timedelta(hours=CATCH_UP_HOURS - 1), last)
        rows = list(_rows(first - timedelta(hours=1), through, now))
        with transaction.atomic():
            TrendRollup.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["ends_at"], update_fields=UPDATED
            )
        written += len(rows)
        first = through + timedelta(hours=1)
    if written:
        logger.info("trend_rollups_written", hours=written, through=last.isoformat())
    return written


def prune_trend_rollups(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Rollups older than TREND_RETENTION_DAYS go, in bounded batches."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.TREND_RETENTION_DAYS)
    old = TrendRollup.objects.filter(ends_at__lt=cutoff)
    return delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)


def first_data(start: datetime, end: datetime) -> float | None:
    """When the web processes began reporting within (start, end], in epoch seconds: an
    hour-true answer from the rollups, a sample-true one from the samples. A bucket's
    per-minute and time-weighted figures are over the part of it that has data, so a
    deployment started ten minutes ago does not read as one sixth of itself over a
    6-hour bucket."""
    rolled = (
        TrendRollup.objects.filter(ends_at__gt=start, ends_at__lte=end, ws_samples__gt=0)
        .order_by("ends_at")
        .values_list("ends_at", flat=True)
        .first()
    )
    sample = (
        figures.samples(start, end)
        .order_by("recorded_at")
        .values_list("recorded_at", "interval_seconds")
        .first()
    )
    # The samples' answer while they reach back that far (the same whether or not the hour
    # is rolled up yet); the rollups' where the samples were pruned.
    if sample is not None and (rolled is None or sample[0] <= rolled):
        return sample[0].timestamp() - sample[1]
    return None if rolled is None else rolled.timestamp() - HOUR
