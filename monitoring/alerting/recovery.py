"""Taking spooled direct alerts into the database once it answers again.

One outage is one incident, whichever processes saw it: every host spools its own alerts
and records them when it can, so the second host to recover finds the first one's incident
for the same outage (their windows overlap) and adds itself to it. The direct Slack
message is one where the other store could be asked (`direct.claim`): hosts that found it
claimed spool that they saw the outage, and are named in the timeline and the reply. The
recovery reply is one: it waits a flush interval, so that the other processes' reports
join it before it goes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from inkwave.lib.formats import duration
from monitoring.alerting import incidents
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEventKind,
    IncidentStatus,
)
from notifications.formatting import Composed, fit, section_block
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue, record_direct, rewrite_pending

OPERATIONS = "operations"


def process_of(entry: dict[str, Any]) -> str:
    """Who saw it: the host, and the process where the entry says (older spools do not)."""
    pid = entry.get("pid")
    return f"{entry['host']} (pid {pid})" if pid else str(entry["host"])


def record(dependency: str, entries: list[dict[str, Any]], now: datetime) -> Incident | None:
    entries = sorted(entries, key=lambda e: e["at"])
    rule = AlertRule.objects.filter(metric=f"dependency.{dependency}_down").order_by("pk").first()
    destination = Destination.objects.filter(name=OPERATIONS).first()
    with transaction.atomic():
        rows = [
            _recorded(entry, destination, dependency)
            if destination is not None and not entry.get("elsewhere")
            else None
            for entry in entries
        ]
        if rule is None:
            return None
        # Hosts recovering at the same moment take turns, so they find each other's incident.
        AlertRule.objects.select_for_update().filter(pk=rule.pk).first()
        incident = _same_outage(rule, datetime.fromisoformat(entries[0]["at"]), now)
        if incident is None:
            return _new_incident(rule, dependency, entries, rows, now)
        _join(incident, dependency, entries, rows, now)
        return incident


def _recorded(entry: dict[str, Any], destination: Destination, dependency: str) -> Notification:
    return record_direct(
        NotificationKind.SYSTEM_ALERT,
        Composed(entry["text"], entry["blocks"]),
        destination,
        sent_at=datetime.fromisoformat(entry["at"]) if entry["sent"] else None,
        slack_ts=entry["ts"],
        slack_channel=entry["channel"],
        context={"direct": True, "dependency": dependency, "host": entry["host"]},
    )


def _same_outage(rule: AlertRule, first_at: datetime, now: datetime) -> Incident | None:
    """An incident of this dependency whose outage this host's alerts overlap.

    This host first failed at `first_at`; the outage another host recorded ended when its
    dependency answered it (`resolved_at`). A flush interval of slack covers hosts' clocks.
    """
    slack = timedelta(seconds=settings.METRICS_FLUSH_SECONDS)
    return (
        Incident.objects.filter(rule=rule, opened_at__lte=now)
        .filter(Q(status=IncidentStatus.FIRING) | Q(resolved_at__gte=first_at - slack))
        .order_by("-opened_at")
        .first()
    )


def _notified_events(
    incident: Incident, entries: list[dict[str, Any]], rows: list[Notification | None]
) -> None:
    for row, entry in zip(rows, entries, strict=True):
        at = datetime.fromisoformat(entry["at"])
        if row is None:
            seen = f"seen by {process_of(entry)}; another process had told Slack"
            incidents.record(incident, at, IncidentEventKind.NOTE, seen)
            continue
        how = "sent directly" if entry["sent"] else "could not be sent directly; queued now"
        message = f"{how} by {process_of(entry)}"
        incidents.record(incident, at, IncidentEventKind.NOTIFIED, message, notification=row)


def _new_incident(
    rule: AlertRule,
    dependency: str,
    entries: list[dict[str, Any]],
    rows: list[Notification | None],
    now: datetime,
) -> Incident:
    first_at = datetime.fromisoformat(entries[0]["at"])
    posted = [row for row in rows if row is not None]
    incident = incidents.record_outage(
        rule,
        opened_at=first_at,
        last_seen_at=datetime.fromisoformat(entries[-1]["at"]),
        resolved_at=now,
        occurrences=len(entries),
        notification=posted[0] if posted else None,
        opened_message=f"detected by {process_of(entries[0])} while {dependency} was down: "
        f"{entries[0]['error']}",
    )
    _notified_events(incident, entries, rows)
    incidents.close_outage(incident, now, f"{dependency} answers again")
    _reply_once(incident, entries, now)
    return incident


def _join(
    incident: Incident,
    dependency: str,
    entries: list[dict[str, Any]],
    rows: list[Notification | None],
    now: datetime,
) -> None:
    """Another process saw the same outage: its alerts become part of the one incident."""
    first_at = datetime.fromisoformat(entries[0]["at"])
    also = f"also seen by {process_of(entries[0])} while {dependency} was down: "
    incidents.record(incident, first_at, IncidentEventKind.NOTE, also + entries[0]["error"])
    _notified_events(incident, entries, rows)
    posted = [row for row in rows if row is not None]
    incidents.widen_outage(
        incident,
        first_at=first_at,
        last_at=datetime.fromisoformat(entries[-1]["at"]),
        occurrences=len(entries),
        notification=posted[0] if posted else None,
    )
    _reply_once(incident, entries, now)


def _seen_by(incident: Incident) -> list[str]:
    """The processes the timeline names, in order: those that told Slack and those that
    found another had."""
    names = []
    for kind, message in incident.events.order_by("at", "pk").values_list("kind", "message"):
        if kind == IncidentEventKind.NOTIFIED and " by " in message:
            names.append(message.rsplit(" by ", 1)[1])
        elif message.startswith("seen by "):
            names.append(message.removeprefix("seen by ").split(";")[0])
    return names


def _processes(entries: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(process_of(entry) for entry in entries))


def _reply(rule: AlertRule, incident: Incident, processes: list[str], now: datetime) -> Composed:
    down_for = duration((now - incident.opened_at).total_seconds())
    seen_by = processes[0] if len(processes) == 1 else f"{len(processes)} processes"
    text = f"✅ Resolved: {rule.name}; down for about {down_for}; seen by {seen_by}"
    if len(processes) > 1:
        text += f" ({', '.join(processes)})"
    return fit(text, [section_block(text)])


def _reply_once(incident: Incident, entries: list[dict[str, Any]], now: datetime) -> None:
    """One recovery reply under the direct message, naming every process that saw the
    outage: started by the first host that recovers with a message to reply to, rewritten
    by the others until it goes."""
    processes = _processes(entries)
    end = incident.resolved_at or now
    key = f"recovery:{incident.pk}"  # the outbox's indexed key, not a scan of its JSON
    reply = Notification.objects.select_for_update().filter(coalesce_key=key).order_by("pk").first()
    if reply is not None:
        if reply.status != NotificationStatus.PENDING or reply.attempts:
            return  # it went: the timeline names the latecomers
        processes = list(dict.fromkeys([*reply.context.get("processes", []), *processes]))
        message = _reply(incident.rule, incident, processes, end)
        rewrite_pending(reply, message, context={**reply.context, "processes": processes})
        return
    parent = incident.notification
    if parent is None:
        return  # nobody told Slack yet (the host that did records later, and replies then)
    processes = list(dict.fromkeys([*_seen_by(incident), *processes]))
    enqueue(
        NotificationKind.SYSTEM_ALERT,
        _reply(incident.rule, incident, processes, end),
        destinations=[parent.destination],
        thread_parent=parent,
        context={"recovery": incident.pk, "processes": processes},
        coalesce_key=key,
        # The other processes that saw this outage report within a flush: one reply.
        not_before=now + timedelta(seconds=settings.METRICS_FLUSH_SECONDS),
    )
