"""Retention of incidents and their timelines, and what an open incident keeps in the outbox.

A resolved incident and its timeline go INCIDENT_RETENTION_DAYS after it resolved. Kept
whatever their age: an open incident (firing, or a run of flapping that has not settled)
with its events; a resolved incident that shares a Slack message with an open one (a
member of a group post whose group is still open: the post is rewritten from its
members); an incident with a postmortem (what an operator wrote is not lost to a timer).

The outbox's prune learns from here, through keep_notifications, which messages the open
incidents still use (they thread replies under them and edit them).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from inkwave.retention import MAX_BATCHES, delete_in_batches, run_each
from monitoring.models import (
    Incident,
    IncidentEvent,
    IncidentStatus,
    RequestSample,
    SlowQuery,
    SlowRequest,
    VenueScreenSample,
    WebSocketSample,
)

OPEN = Q(status=IncidentStatus.FIRING) | Q(flapping=True)


def open_incident_messages() -> models.QuerySet[Any]:
    """Messages that announced an open incident (Incident.notification)."""
    return Incident.objects.filter(OPEN, notification__isnull=False).values("notification_id")


def open_timeline_messages() -> models.QuerySet[Any]:
    """Messages an open incident's timeline refers to (group posts, flap notices, replies)."""
    return IncidentEvent.objects.filter(
        incident__in=Incident.objects.filter(OPEN), notification__isnull=False
    ).values("notification_id")


def eligible_incidents(now: datetime) -> models.QuerySet[Incident]:
    cutoff = now - timedelta(days=settings.INCIDENT_RETENTION_DAYS)
    shares_a_message_with_an_open_one = IncidentEvent.objects.filter(
        Q(notification_id__in=open_incident_messages())
        | Q(notification_id__in=open_timeline_messages())
    ).values("incident_id")
    return Incident.objects.filter(
        status=IncidentStatus.RESOLVED, resolved_at__lt=cutoff, flapping=False, postmortem=""
    ).exclude(pk__in=shares_a_message_with_an_open_one)


def prune_incident_events(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    eligible = IncidentEvent.objects.filter(incident__in=eligible_incidents(now or timezone.now()))
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune_incidents(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    """Only once their timeline is gone: the events' prune goes first, in bounded batches,
    so deleting an incident never cascades to an unbounded number of rows."""
    eligible = eligible_incidents(now or timezone.now())
    if not dry_run:
        eligible = eligible.exclude(Exists(IncidentEvent.objects.filter(incident=OuterRef("pk"))))
    return delete_in_batches(eligible, dry_run=dry_run, max_batches=max_batches)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Beat's run over incidents, the status page's history and the dashboard's hourly
    trends (samples have their own task, monitoring.prune_samples)."""
    from monitoring.dashboard import trends
    from monitoring.status import rollup

    return run_each(
        [
            ("incident_events", prune_incident_events),
            ("incidents", prune_incidents),
            ("component_days", rollup.prune_component_days),
            ("maintenance_windows", rollup.prune_maintenance_windows),
            ("trend_rollups", trends.prune_trend_rollups),
        ],
        now or timezone.now(),
    )


def register() -> None:
    from inkwave import retention
    from monitoring import pruning
    from notifications.retention import keep_notifications

    keep_notifications(open_incident_messages)
    keep_notifications(open_timeline_messages)
    # Before the samples: their prune deletes a gone worker only once none of its rows is left.
    retention.register(VenueScreenSample, pruning.prune_screen_samples, "METRICS_RETENTION_DAYS")
    retention.register(WebSocketSample, pruning.prune_samples, "METRICS_RETENTION_DAYS")
    retention.register(RequestSample, pruning.prune_request_samples, "METRICS_RETENTION_DAYS")
    retention.register(SlowQuery, pruning.prune_slow_queries, "METRICS_RETENTION_DAYS")
    retention.register(SlowRequest, pruning.prune_slow_requests, "METRICS_RETENTION_DAYS")
    retention.register(IncidentEvent, prune_incident_events, "INCIDENT_RETENTION_DAYS")
    retention.register(Incident, prune_incidents, "INCIDENT_RETENTION_DAYS")

    from monitoring.models import ComponentDay, MaintenanceWindow
    from monitoring.status import rollup

    retention.register(ComponentDay, rollup.prune_component_days, "STATUS_HISTORY_DAYS")
    retention.register(MaintenanceWindow, rollup.prune_maintenance_windows, "STATUS_HISTORY_DAYS")

    from monitoring.dashboard import trends
    from monitoring.models import TrendRollup

    retention.register(TrendRollup, trends.prune_trend_rollups, "TREND_RETENTION_DAYS")
