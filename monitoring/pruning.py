"""Retention: old sample rows go, the running totals stay."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from monitoring.models import WebSocketSample, Worker

BATCH_SIZE = 5000


def prune_samples(now: datetime | None = None, *, retention_days: int | None = None) -> int:
    """Delete samples older than the retention, in batches so no lock is held for long."""
    now = now or timezone.now()
    days = settings.METRICS_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = now - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(
            WebSocketSample.objects.filter(recorded_at__lt=cutoff).values_list("pk", flat=True)[
                :BATCH_SIZE
            ]
        )
        if not ids:
            break
        deleted += WebSocketSample.objects.filter(pk__in=ids).delete()[0]
    # Workers that stopped reporting before the cutoff have nothing left to show.
    Worker.objects.filter(Q(last_seen_at__lt=cutoff)).delete()
    return deleted
