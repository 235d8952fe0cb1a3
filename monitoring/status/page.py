"""The status snapshot: every public fact the page, /status.json and the badge show.

Only what this module puts in it is public: component names and states, day figures, the
public title and summary an operator wrote (or a plain sentence per component), and
maintenance windows. Never an incident's own title, rule, scope, values or a check's reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from typing_extensions import TypedDict

from monitoring.alerting.suppression import inhibited
from monitoring.health import CheckResult, Status
from monitoring.models import Incident, IncidentStatus, MaintenanceWindow, PublicComponent
from monitoring.status.rollup import (
    DAYS_SHOWN,
    LEVEL_OF_SEVERITY,
    RANK,
    DayFigures,
    DayState,
    history,
    utc_date,
)

DESCRIPTIONS: dict[str, str] = {
    PublicComponent.ORDERING: "Guests placing orders, and venues reading and updating them.",
    PublicComponent.LIVE_UPDATES: "New orders and status changes reaching venue screens live.",
    PublicComponent.NOTIFICATIONS: "Messages about orders and the service in venues' Slack.",
}

# What a venue may notice, when an operator has written nothing.
PLAIN_WORDS: dict[tuple[str, str], str] = {
    (PublicComponent.ORDERING, DayState.OUTAGE): "Some guests may not be able to place orders.",
    (PublicComponent.ORDERING, DayState.DEGRADED): "Some guests may find ordering slow or see "
    "errors.",
    (PublicComponent.LIVE_UPDATES, DayState.OUTAGE): "Some venues may not see new orders arrive "
    "on their screens.",
    (PublicComponent.LIVE_UPDATES, DayState.DEGRADED): "Some venues may see live order updates "
    "arrive late.",
    (PublicComponent.NOTIFICATIONS, DayState.OUTAGE): "Notifications are delayed; they will be "
    "sent once the service is back.",
    (PublicComponent.NOTIFICATIONS, DayState.DEGRADED): "Some notifications may arrive late.",
}

STATE_WORDS = {
    DayState.OPERATIONAL: "Operational",
    DayState.MAINTENANCE: "Maintenance",
    DayState.DEGRADED: "Degraded",
    DayState.OUTAGE: "Outage",
    DayState.NO_DATA: "No data",
}

OVERALL_WORDS = {
    DayState.OPERATIONAL: "All systems operational",
    DayState.MAINTENANCE: "Scheduled maintenance in progress",
    DayState.DEGRADED: "Some services are degraded",
    DayState.OUTAGE: "Service outage",
}

# The health checks that speak for a component (monitoring.health.default_checks).
CHECKS_OF = {
    "database": PublicComponent.ORDERING,
    "websocket": PublicComponent.LIVE_UPDATES,
    "redis": PublicComponent.LIVE_UPDATES,
    "channel_layer": PublicComponent.LIVE_UPDATES,
    "slack": PublicComponent.NOTIFICATIONS,
}
STATE_OF_CHECK = {Status.UNHEALTHY: DayState.OUTAGE, Status.DEGRADED: DayState.DEGRADED}


class DayJSON(TypedDict):
    date: str
    state: str
    uptimePercent: float | None


class ComponentJSON(TypedDict):
    id: str
    name: str
    description: str
    state: str
    stateText: str
    uptimePercent: float | None
    days: list[DayJSON]


class IncidentJSON(TypedDict):
    component: str
    componentName: str
    state: str
    since: str
    title: str
    summary: str


class MaintenanceJSON(TypedDict):
    title: str
    text: str
    components: list[str]
    componentNames: list[str]
    startsAt: str
    endsAt: str
    inProgress: bool


class StatusJSON(TypedDict):
    status: str
    statusText: str
    components: list[ComponentJSON]
    incidents: list[IncidentJSON]
    maintenance: list[MaintenanceJSON]
    historyAvailable: bool
    generatedAt: str


def worst(states: Iterable[str]) -> str:
    return max(states, key=RANK.__getitem__, default=DayState.OPERATIONAL)


def component_name(component: str) -> str:
    return str(PublicComponent(component).label)


def _days(component: str, found: dict[tuple[str, date], DayFigures], today: date) -> list[DayJSON]:
    days: list[DayJSON] = []
    for n in range(DAYS_SHOWN - 1, -1, -1):
        day = today - timedelta(days=n)
        figures = found.get((component, day))
        days.append(
            {
                "date": day.isoformat(),
                "state": figures.state if figures else DayState.NO_DATA,
                "uptimePercent": round(figures.uptime_percent, 2) if figures else None,
            }
        )
    return days


def _uptime(component: str, found: dict[tuple[str, date], DayFigures]) -> float | None:
    mine = [f for (c, _), f in found.items() if c == component]
    counted = sum(f.counted_seconds for f in mine)
    if not counted:
        return None if not mine else 100.0
    return round(100.0 * (counted - sum(f.outage_seconds for f in mine)) / counted, 2)


def _open_incidents(now: datetime) -> list[IncidentJSON]:
    """One entry per affected component: venues care what is affected, not how many rules
    noticed. The newest public text an operator wrote for one of its incidents, if any."""
    firing = (
        Incident.objects.filter(status=IncidentStatus.FIRING, severity__in=list(LEVEL_OF_SEVERITY))
        .exclude(rule__public_component="")
        .select_related("rule")
        .order_by("opened_at")
    )
    rows = [
        (i.rule.public_component, i.severity, i.opened_at, i.public_title, i.public_summary)
        for i in firing
        # Held back by its cause (the error rate that a Redis outage shaped, firing after
        # Redis is back while the outage is still in its window): Slack was not told, and
        # the public page would say "outage" minutes after everything recovered.
        if not inhibited(i, now)
    ]
    grouped: dict[str, IncidentJSON] = {}
    for component, severity, opened_at, title, summary in rows:
        state = LEVEL_OF_SEVERITY[severity]
        entry = grouped.get(component)
        if entry is None:
            entry = grouped[component] = {
                "component": component,
                "componentName": component_name(component),
                "state": state,
                "since": opened_at.isoformat(),
                "title": "",
                "summary": "",
            }
        entry["state"] = worst([entry["state"], state])
        entry["title"] = title.strip() or entry["title"]
        entry["summary"] = summary.strip() or entry["summary"]
    for entry in grouped.values():
        component = entry["component"]
        entry["title"] = entry["title"] or f"{entry['componentName']}: {entry['state']}"
        entry["summary"] = entry["summary"] or PLAIN_WORDS[component, entry["state"]]
    return [grouped[c] for c in PublicComponent.values if c in grouped]


def _maintenance(now: datetime) -> list[MaintenanceJSON]:
    windows = MaintenanceWindow.objects.filter(ends_at__gt=now).order_by("starts_at")[:20]
    return [
        {
            "title": window.title,
            "text": window.public_text,
            "components": [c for c in PublicComponent.values if c in window.components],
            "componentNames": [
                component_name(c) for c in PublicComponent.values if c in window.components
            ],
            "startsAt": window.starts_at.isoformat(),
            "endsAt": window.ends_at.isoformat(),
            "inProgress": window.starts_at <= now,
        }
        for window in windows
    ]


def _from_checks(checks: list[CheckResult]) -> dict[str, str]:
    states: dict[str, str] = {}
    for check in checks:
        component = CHECKS_OF.get(check.name)
        state = STATE_OF_CHECK.get(check.status)
        if component is not None and state is not None:
            states[component] = worst([states.get(component, DayState.OPERATIONAL), state])
    return states


def build(now: datetime, checks: list[CheckResult]) -> StatusJSON:
    """The snapshot, read from the database (a handful of queries whatever the history)."""
    found = history(now)
    incidents = _open_incidents(now)
    maintenance = _maintenance(now)
    return assemble(now, checks, found, incidents, maintenance, history_available=True)


def build_without_database(now: datetime, checks: list[CheckResult]) -> StatusJSON:
    """What can be said when the database does not answer: the health checks' states."""
    return assemble(now, checks, {}, [], [], history_available=False)


def assemble(
    now: datetime,
    checks: list[CheckResult],
    found: dict[tuple[str, date], DayFigures],
    incidents: list[IncidentJSON],
    maintenance: list[MaintenanceJSON],
    *,
    history_available: bool,
) -> StatusJSON:
    today = utc_date(now)
    from_checks = _from_checks(checks)
    from_incidents = {entry["component"]: entry["state"] for entry in incidents}
    in_maintenance = {c for m in maintenance if m["inProgress"] for c in m["components"]}
    components: list[ComponentJSON] = []
    for component in PublicComponent.values:
        if component in in_maintenance:
            state = DayState.MAINTENANCE
        else:
            found_states = (from_checks.get(component), from_incidents.get(component))
            state = worst(s for s in found_states if s)
        components.append(
            {
                "id": component,
                "name": component_name(component),
                "description": DESCRIPTIONS[component],
                "state": state,
                "stateText": STATE_WORDS[state],
                "uptimePercent": _uptime(component, found),
                "days": _days(component, found, today) if history_available else [],
            }
        )
    overall = worst(c["state"] for c in components)
    return {
        "status": overall,
        "statusText": OVERALL_WORDS[overall],
        "components": components,
        "incidents": incidents,
        "maintenance": maintenance,
        "historyAvailable": history_available,
        "generatedAt": now.isoformat(),
    }
