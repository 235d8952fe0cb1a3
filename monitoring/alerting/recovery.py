"""Taking spooled direct alerts into the database once it answers again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Severity,
)
from notifications.formatting import duration, fit, section_block
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue

OPERATIONS = "operations"


def record(dependency: str, entries: list[dict[str, Any]], now: datetime) -> Incident | None:
    entries = sorted(entries, key=lambda e: e["at"])
    first_at = datetime.fromisoformat(entries[0]["at"])
    last_at = datetime.fromisoformat(entries[-1]["at"])
    rule = AlertRule.objects.filter(metric=f"dependency.{dependency}_down").order_by("pk").first()
    destination = Destination.objects.filter(name=OPERATIONS).first()
    with transaction.atomic():
        rows = []
        if destination is not None:
            for entry in entries:
                rows.append(
                    Notification.objects.create(
                        kind=NotificationKind.SYSTEM_ALERT,
                        destination=destination,
                        text=entry["text"],
                        blocks=entry["blocks"],
                        context={"direct": True, "dependency": dependency, "host": entry["host"]},
                        # Sent directly: recorded as sent. Not sent: the outbox sends it now.
                        status=NotificationStatus.SENT
                        if entry["sent"]
                        else NotificationStatus.PENDING,
                        slack_ts=entry["ts"],
                        slack_channel=entry["channel"],
                        sent_at=datetime.fromisoformat(entry["at"]) if entry["sent"] else None,
                        attempts=1 if entry["sent"] else 0,
                    )
                )
        if rule is None:
            return None
        incident = Incident.objects.create(
            rule=rule,
            title=rule.name,
            severity=Severity.CRITICAL,
            status=IncidentStatus.RESOLVED,
            opened_at=first_at,
            last_seen_at=last_at,
            resolved_at=now,
            occurrences=len(entries),
            first_value=1,
            peak_value=1,
            last_value=0,
            notification=rows[0] if rows else None,
            last_notified_at=last_at,
        )
        IncidentEvent.objects.create(
            incident=incident,
            at=first_at,
            kind=IncidentEventKind.OPENED,
            message=f"detected by {entries[0]['host']} while {dependency} was down: "
            f"{entries[0]['error']}",
        )
        for row, entry in zip(rows, entries, strict=False):
            how = "sent directly" if entry["sent"] else "could not be sent directly; queued now"
            IncidentEvent.objects.create(
                incident=incident,
                at=datetime.fromisoformat(entry["at"]),
                kind=IncidentEventKind.NOTIFIED,
                message=f"{how} by {entry['host']}",
                notification=row,
            )
        IncidentEvent.objects.create(
            incident=incident,
            at=now,
            kind=IncidentEventKind.RESOLVED,
            message=f"{dependency} answers again",
        )
        if rows:
            down_for = duration((now - first_at).total_seconds())
            text = f"✅ Resolved: {rule.name}; down for about {down_for}"
            enqueue(
                NotificationKind.SYSTEM_ALERT,
                fit(text, [section_block(text)]),
                destinations=[rows[0].destination],
                thread_parent=rows[0],
            )
    return incident
