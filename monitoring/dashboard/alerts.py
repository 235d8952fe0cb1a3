"""The dashboard's alert history and the status of each component.

Statuses come from the health checks (/health's shared, cached run) and from the processes'
own reports (Celery worker and beat heartbeats); nothing is estimated. A component's last good
check is the latest moment something showed it working: a healthy check seen by this process,
a heartbeat, a message Slack accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.urls import reverse
from typing_extensions import TypedDict

from monitoring.health import CheckResult, Status
from monitoring.models import Incident, IncidentStatus, Worker, WorkerRole
from notifications.models import Notification

# Resolved incidents listed under the open ones.
RESOLVED_SHOWN = 15


class IncidentJSON(TypedDict):
    id: int
    title: str
    severity: str
    status: str
    openedAt: str
    resolvedAt: str | None
    acknowledgedAt: str | None
    acknowledgedBy: str | None
    url: str


def _admin_url(incident: Incident) -> str:
    return reverse("admin:monitoring_incident_change", args=[incident.pk])


def incidents_between(start: datetime, end: datetime, limit: int) -> list[tuple[Incident, str]]:
    """Incidents that were open at some moment of (start, end], newest first."""
    rows = (
        Incident.objects.filter(opened_at__lte=end)
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gt=start))
        .order_by("-opened_at")[:limit]
    )
    return [(incident, _admin_url(incident)) for incident in rows]


def _incident_json(incident: Incident) -> IncidentJSON:
    who = incident.acknowledged_by
    return {
        "id": incident.pk,
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "openedAt": incident.opened_at.isoformat(),
        "resolvedAt": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "acknowledgedAt": incident.acknowledged_at.isoformat()
        if incident.acknowledged_at
        else None,
        "acknowledgedBy": (who.get_full_name() or who.get_username()) if who else None,
        "url": _admin_url(incident),
    }


def alert_history() -> list[IncidentJSON]:
    """Every open incident (the most severe, then the oldest, first), then the latest resolved."""
    base = Incident.objects.select_related("acknowledged_by")
    firing = list(base.filter(status=IncidentStatus.FIRING))
    firing.sort(key=lambda i: (i.severity != "critical", i.opened_at))
    resolved = base.filter(status=IncidentStatus.RESOLVED).order_by("-resolved_at")
    return [_incident_json(i) for i in [*firing, *resolved[:RESOLVED_SHOWN]]]


class ComponentJSON(TypedDict):
    name: str
    label: str
    status: str  # healthy, degraded, unhealthy, disabled
    lastGoodAt: str | None
    detail: str


class ProcessReport(TypedDict):
    """What the database says about Celery and Slack (read on a thread with the figures)."""

    celery_live: int
    celery_last_seen: datetime | None
    beat_live: int
    beat_last_seen: datetime | None
    slack_last_sent: datetime | None


def process_report(now: datetime) -> ProcessReport:
    cutoff = now - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    report: dict[str, object] = {}
    for role, key in ((WorkerRole.CELERY, "celery"), (WorkerRole.BEAT, "beat")):
        rows = Worker.objects.filter(role=role, stopped_at__isnull=True)
        found = rows.aggregate(last=Max("last_seen_at"))
        report[f"{key}_live"] = rows.filter(last_seen_at__gte=cutoff).count()
        report[f"{key}_last_seen"] = found["last"]
    report["slack_last_sent"] = Notification.objects.aggregate(last=Max("sent_at"))["last"]
    return report  # type: ignore[return-value]


LABELS = {
    "database": "Database",
    "redis": "Redis",
    "channel_layer": "Channel layer",
    "celery": "Celery workers",
    "beat": "Celery beat",
    "slack": "Slack delivery",
}


class LastGood:
    """When this process last saw each check healthy (a process remembers since it started)."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}

    def note(self, results: Iterable[CheckResult], at: datetime) -> None:
        for result in results:
            if result.status == Status.HEALTHY:
                self.seen[result.name] = at


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def components(
    results: list[CheckResult], last_good: LastGood, report: ProcessReport | None
) -> list[ComponentJSON]:
    by_name = {r.name: r for r in results}
    out: list[ComponentJSON] = []
    for name in ("database", "redis", "channel_layer"):
        result = by_name.get(name)
        if result is None:
            continue
        detail = result.reason
        if result.status == Status.DISABLED:
            detail = "not configured: this deployment runs without it"
        out.append(
            {
                "name": name,
                "label": LABELS[name],
                "status": result.status.value,
                "lastGoodAt": _iso(last_good.seen.get(name)),
                "detail": detail,
            }
        )
    liveness = settings.WORKER_LIVENESS_SECONDS
    for key in ("celery", "beat"):
        if report is None:
            out.append(_unknown(key))
            continue
        live = report[f"{key}_live"]  # type: ignore[literal-required]
        last_seen = report[f"{key}_last_seen"]  # type: ignore[literal-required]
        out.append(
            {
                "name": key,
                "label": LABELS[key],
                "status": Status.HEALTHY.value if live else Status.UNHEALTHY.value,
                "lastGoodAt": _iso(last_seen),
                "detail": f"{live} reporting"
                if live
                else f"none has reported in the last {liveness:.0f} s",
            }
        )
    slack = by_name.get("slack")
    if slack is not None:
        last_sent = report["slack_last_sent"] if report else None
        checked = last_good.seen.get("slack")
        if not (settings.SLACK_BOT_TOKEN or settings.SLACK_WEBHOOK_URL):
            out.append(
                {
                    "name": "slack",
                    "label": LABELS["slack"],
                    "status": Status.DISABLED.value,
                    "lastGoodAt": _iso(last_sent),
                    "detail": "not configured: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL",
                }
            )
            return out
        out.append(
            {
                "name": "slack",
                "label": LABELS["slack"],
                "status": slack.status.value,
                "lastGoodAt": _iso(max((m for m in (last_sent, checked) if m), default=None)),
                "detail": slack.reason
                or (
                    f"last message delivered {last_sent:%Y-%m-%d %H:%M:%S %Z}" if last_sent else ""
                ),
            }
        )
    return out


def _unknown(key: str) -> ComponentJSON:
    return {
        "name": key,
        "label": LABELS[key],
        "status": Status.UNHEALTHY.value,
        "lastGoodAt": None,
        "detail": "unknown: the database cannot be read",
    }
