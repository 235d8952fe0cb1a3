"""When a silence window ends: one message per channel with what changed while it was on."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from monitoring.alerting import groups, incidents, messages, routing, suppression
from monitoring.models import (
    Incident,
    IncidentEventKind,
    IncidentStatus,
    Silence,
)
from notifications.models import Destination, NotificationKind
from notifications.outbox import enqueue

logger = structlog.get_logger(__name__)


def summarize_ended_silences(now: datetime) -> int:
    """For each silence window that ended since the last look: one message per destination
    with what changed while it was on. What still fires is then announced as usual."""
    sent = 0
    for silence in Silence.objects.all():
        seen = silence.summarized_until or silence.created_at
        windows = silence.windows_ended(max(seen, now - timedelta(days=1)), now)
        if not windows:
            continue
        with transaction.atomic():  # the claim commits with the summary it claims
            sent += _summarize(silence, windows, now)
    return sent


def _summarize(silence: Silence, windows: list[tuple[datetime, datetime]], now: datetime) -> int:
    claimed = Silence.objects.filter(
        pk=silence.pk,
        **(
            {"summarized_until": silence.summarized_until}
            if silence.summarized_until
            else {"summarized_until__isnull": True}
        ),
    ).update(summarized_until=windows[-1][1])
    if not claimed:
        return 0  # another cycle took it
    return sum(_summarize_window(silence, start, end, now) for start, end in windows)


def _summarize_window(silence: Silence, start: datetime, end: datetime, now: datetime) -> int:
    changed = [
        incident
        for incident in Incident.objects.filter(
            Q(opened_at__gte=start, opened_at__lt=end)
            | Q(resolved_at__gte=start, resolved_at__lt=end)
        )
        .select_related("rule")
        .order_by("opened_at")
        if silence.matches(incident.rule, incident.scope)
    ]
    by_destination: dict[int, tuple[Destination, list[Incident]]] = {}
    for incident in changed:
        for destination in routing.destinations_for(incident.rule):
            by_destination.setdefault(destination.pk, (destination, []))[1].append(incident)
    for destination, listed in by_destination.values():
        (row,) = enqueue(
            NotificationKind.SYSTEM_ALERT,
            messages.silence_summary(silence.reason, start, end, listed),
            destinations=[destination],
        )
        for incident in listed:
            incidents.record(
                incident,
                now,
                IncidentEventKind.NOTE,
                f"listed in the summary of silence '{silence.reason}'",
                notification=row,
            )
    logger.info("silence_summarized", silence=silence.pk, changed=len(changed))
    return len(by_destination)


def silence_incident(
    incident: Incident, actor: object, until: datetime, now: datetime, *, via: str = ""
) -> Silence | None:
    """A one-off silence for this incident's rule and venue until `until`, made as the admin's
    silence form makes one (validated, created_by the person); None if one already holds it
    (two people clicking at once: the incident's row is locked, the second finds the first's).
    """
    with transaction.atomic():
        locked = (
            Incident.objects.select_for_update(of=("self",))
            .select_related("rule")
            .filter(pk=incident.pk, status=IncidentStatus.FIRING)
            .first()
        )
        if locked is None or suppression.silence_on(locked, now) is not None:
            return None
        silence = Silence(
            reason=f"{locked.title}: silenced {via}".strip()[:200],
            rule=locked.rule,
            scope=locked.scope,
            starts_at=now,
            ends_at=until,
            timezone=settings.TIME_ZONE,
            created_by=actor,  # type: ignore[misc]  # a user, as the admin passes it
        )
        silence.full_clean()
        silence.save()
        incidents.silenced(
            locked, now, f"until {until:%Y-%m-%d %H:%M %Z} {via}".strip(), actor=actor
        )
        groups.refresh_announcements(locked, now)
    return silence
