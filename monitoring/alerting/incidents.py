"""The incident state machine and its timeline: the one module that writes Incident and
IncidentEvent rows.

The engine decides when an incident opens and resolves (a rule's transitions), `notify`
decides what Slack hears, `recovery` records outages that were seen without the database;
each changes an incident only through these verbs, and each verb writes the timeline entry
that goes with its change. Transitions that two processes may attempt at once (resolve,
acknowledge, the end of a flapping run) are conditional updates: one wins, the other is
told (False, 0).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F

from inkwave.bulk import update_in_bulk
from monitoring.alerting.scopes import scope_name
from monitoring.models import (
    AlertRule,
    Comparison,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Severity,
)
from notifications.models import Notification


def record(
    incident: Incident,
    at: datetime,
    kind: str,
    message: str = "",
    *,
    actor: Any = None,
    notification: Notification | None = None,
) -> IncidentEvent:
    """One entry on the incident's timeline (append-only: entries are never edited)."""
    return IncidentEvent.objects.create(
        incident=incident,
        at=at,
        kind=kind,
        message=message,
        actor=actor,
        notification=notification,
    )


def title_for(rule: AlertRule, scope: str) -> str:
    """The rule and its venue, within the title's 300 characters (a venue's name is its
    owner's, up to 200)."""
    if not scope:
        return rule.name
    limit = Incident._meta.get_field("title").max_length or 300
    title = f"{rule.name} ({scope_name(scope)})"
    return title if len(title) <= limit else title[: limit - 2] + "…)"


def open_incident(
    rule: AlertRule, scope: str, value: float, now: datetime, condition: str
) -> Incident:
    incident = Incident.objects.create(
        rule=rule,
        scope=scope,
        title=title_for(rule, scope),
        severity=rule.severity,
        opened_at=now,
        last_seen_at=now,
        first_value=value,
        peak_value=value,
        last_value=value,
    )
    record(incident, now, IncidentEventKind.OPENED, condition)
    return incident


def _worse(rule: AlertRule, a: float, b: float) -> float:
    return min(a, b) if rule.comparison in (Comparison.LT, Comparison.LTE) else max(a, b)


def still_firing(incident: Incident, value: float, now: datetime) -> None:
    """Another evaluation over the threshold: counted, and the peak kept."""
    incident.peak_value = _worse(incident.rule, incident.peak_value, value)
    incident.last_value = value
    incident.last_seen_at = now
    Incident.objects.filter(pk=incident.pk).update(
        occurrences=F("occurrences") + 1,
        peak_value=incident.peak_value,
        last_value=value,
        last_seen_at=now,
    )


def still_firing_many(seen: list[tuple[Incident, float]], now: datetime) -> None:
    """still_firing for many at once (their rows locked by the caller), a statement per
    thousand."""
    for incident, value in seen:
        incident.peak_value = _worse(incident.rule, incident.peak_value, value)
        incident.last_value = value
        incident.last_seen_at = now
    changed = [incident for incident, _ in seen]
    update_in_bulk(changed, ["peak_value", "last_value", "last_seen_at"], plus_one=["occurrences"])
    for incident in changed:
        incident.occurrences += 1


def observed_many(seen: list[tuple[Incident, float]]) -> None:
    """observed for many at once."""
    for incident, value in seen:
        incident.last_value = value
    update_in_bulk([incident for incident, _ in seen], ["last_value"])


def observed(incident: Incident, value: float) -> None:
    """A value while it clears: shown as the latest, nothing else changes."""
    Incident.objects.filter(pk=incident.pk).update(last_value=value)
    incident.last_value = value


def resolve(incident: Incident, now: datetime, *, actor: Any = None, via: str = "") -> bool:
    """Close an open incident (by the engine, or by a person); False if it was not open."""
    updated = Incident.objects.filter(pk=incident.pk, status=IncidentStatus.FIRING).update(
        status=IncidentStatus.RESOLVED, resolved_at=now, resolved_by=actor
    )
    if not updated:
        return False
    incident.status, incident.resolved_at, incident.resolved_by = (
        IncidentStatus.RESOLVED,
        now,
        actor,
    )
    who = "resolved by hand" if actor else "the condition has been clear for its clear period"
    record(incident, now, IncidentEventKind.RESOLVED, f"{who} {via}".strip(), actor=actor)
    return True


def acknowledge(incident: Incident, actor: Any, now: datetime, *, via: str = "") -> bool:
    """False if it is not firing or someone acknowledged it first. `via` says where from
    when not the admin ("by @ana via Slack")."""
    updated = Incident.objects.filter(
        pk=incident.pk, status=IncidentStatus.FIRING, acknowledged_at__isnull=True
    ).update(acknowledged_at=now, acknowledged_by=actor)
    if not updated:
        return False
    record(incident, now, IncidentEventKind.ACKNOWLEDGED, via, actor=actor)
    incident.refresh_from_db()
    return True


def mark_flapping(incident: Incident) -> None:
    Incident.objects.filter(pk=incident.pk).update(flapping=True)
    incident.flapping = True


def end_flapping(rule: AlertRule, scope: str) -> int:
    """End the run of flapping of a rule and scope; 0 if another cycle already did."""
    return Incident.objects.filter(rule=rule, scope=scope, flapping=True).update(flapping=False)


def announced(incident: Incident, notification: Notification | None, now: datetime) -> None:
    """Slack was told of it (the row that told it, for threads and edits)."""
    Incident.objects.filter(pk=incident.pk).update(
        notification=notification, last_notified_at=now, announced_at=now
    )
    incident.notification, incident.last_notified_at, incident.announced_at = (
        notification,
        now,
        now,
    )


def notified(incident: Incident, now: datetime) -> None:
    """A follow-up (reminder, escalation) went out: the next reminder counts from here."""
    Incident.objects.filter(pk=incident.pk).update(last_notified_at=now)
    incident.last_notified_at = now


def silenced(incident: Incident, now: datetime, message: str, *, actor: Any) -> None:
    """A person silenced it (a silence made for this incident, from Slack)."""
    record(incident, now, IncidentEventKind.SILENCED, message, actor=actor)


def escalated(incident: Incident, now: datetime) -> None:
    Incident.objects.filter(pk=incident.pk).update(escalated_at=now)
    incident.escalated_at = now


# --- outages recorded after the fact (monitoring.alerting.recovery) -----------------------


def record_outage(
    rule: AlertRule,
    *,
    opened_at: datetime,
    last_seen_at: datetime,
    resolved_at: datetime,
    occurrences: int,
    notification: Notification | None,
    opened_message: str,
) -> Incident:
    """An outage of a dependency, seen while the database was down: recorded resolved."""
    incident = Incident.objects.create(
        rule=rule,
        title=rule.name,
        severity=Severity.CRITICAL,
        status=IncidentStatus.RESOLVED,
        opened_at=opened_at,
        last_seen_at=last_seen_at,
        resolved_at=resolved_at,
        occurrences=occurrences,
        first_value=1,
        peak_value=1,
        last_value=0,
        notification=notification,
        last_notified_at=last_seen_at,
    )
    record(incident, opened_at, IncidentEventKind.OPENED, opened_message)
    return incident


def close_outage(incident: Incident, at: datetime, message: str) -> None:
    record(incident, at, IncidentEventKind.RESOLVED, message)


def widen_outage(
    incident: Incident,
    *,
    first_at: datetime,
    last_at: datetime,
    occurrences: int,
    notification: Notification | None,
) -> None:
    """Another process saw the same outage: the incident spans what both saw."""
    Incident.objects.filter(pk=incident.pk).update(
        opened_at=min(incident.opened_at, first_at),
        last_seen_at=max(incident.last_seen_at, last_at),
        occurrences=F("occurrences") + occurrences,
    )
    if incident.notification_id is None and notification is not None:
        Incident.objects.filter(pk=incident.pk, notification__isnull=True).update(
            notification=notification
        )
    incident.refresh_from_db()
