"""Retention: old sample rows go, the running totals stay."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, delete_in_batches
from monitoring.models import WebSocketSample, Worker


def prune_samples(
    now: datetime | None = None,
    *,
    retention_days: int | None = None,
    dry_run: bool = False,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete samples older than the retention, in bounded batches (inkwave.retention)."""
    now = now or timezone.now()
    days = settings.METRICS_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = now - timedelta(days=days)
    old = WebSocketSample.objects.filter(recorded_at__lt=cutoff)
    deleted = delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)
    if not dry_run:
        # Workers that stopped reporting before the cutoff have nothing left to show; one
        # whose samples are not all deleted yet waits (its delete would cascade to them).
        Worker.objects.filter(last_seen_at__lt=cutoff).exclude(
            Exists(WebSocketSample.objects.filter(worker=OuterRef("pk")))
        ).delete()
    return deleted
