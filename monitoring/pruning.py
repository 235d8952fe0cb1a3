"""Retention: old sample rows (WebSocket and HTTP) and slow records go, the totals stay."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, PruneFunction, delete_in_batches
from monitoring.models import (
    RequestSample,
    SlowQuery,
    SlowRequest,
    SlowStatement,
    VenueScreenSample,
    WebSocketSample,
    Worker,
)


def _cutoff(now: datetime | None, retention_days: int | None) -> datetime:
    days = settings.METRICS_RETENTION_DAYS if retention_days is None else retention_days
    return (now or timezone.now()) - timedelta(days=days)


def prune_samples(
    now: datetime | None = None,
    *,
    retention_days: int | None = None,
    dry_run: bool = False,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete samples older than the retention, in bounded batches (inkwave.retention)."""
    cutoff = _cutoff(now, retention_days)
    old = WebSocketSample.objects.filter(recorded_at__lt=cutoff)
    deleted = delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)
    if not dry_run:
        # Workers that stopped reporting before the cutoff have nothing left to show; one
        # whose samples are not all deleted yet waits (its delete would cascade to them).
        Worker.objects.filter(last_seen_at__lt=cutoff).exclude(
            Exists(WebSocketSample.objects.filter(worker=OuterRef("pk")))
        ).exclude(Exists(RequestSample.objects.filter(worker=OuterRef("pk")))).exclude(
            Exists(VenueScreenSample.objects.filter(worker=OuterRef("pk")))
        ).delete()
    return deleted


def _recorded_before(model: type[Any]) -> PruneFunction:
    """The prune of a table of records with nothing hanging off them: rows recorded before
    the cutoff go, in bounded batches."""

    def prune(
        now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
    ) -> int:
        old = model.objects.filter(recorded_at__lt=_cutoff(now, None))
        return delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)

    return prune


prune_request_samples = _recorded_before(RequestSample)
prune_slow_requests = _recorded_before(SlowRequest)
prune_screen_samples = _recorded_before(VenueScreenSample)
_prune_runs = _recorded_before(SlowQuery)


def prune_slow_queries(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    deleted = _prune_runs(now, dry_run=dry_run, max_batches=max_batches)
    if not dry_run:
        # A statement with no slow run left is forgotten; one that is slow again comes back.
        SlowStatement.objects.filter(last_seen_at__lt=_cutoff(now, None)).exclude(
            Exists(SlowQuery.objects.filter(statement=OuterRef("pk")))
        ).delete()
    return deleted


def prune_all_samples(now: datetime | None = None) -> int:
    """Beat's run: every table of measurements, with METRICS_RETENTION_DAYS."""
    # Screen counts first: a worker is deleted once nothing of it is left (a cascade would
    # otherwise take its screen rows along unbatched).
    prunes = (prune_request_samples, prune_slow_queries, prune_slow_requests)
    screens = prune_screen_samples(now)
    return screens + prune_samples(now) + sum(prune(now) for prune in prunes)
