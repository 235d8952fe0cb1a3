from __future__ import annotations

from monitoring.models.incidents import (
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
)
from monitoring.models.requests import (
    RequestSample,
    RouteTotals,
    SlowQuery,
    SlowRequest,
    SlowStatement,
)
from monitoring.models.rules import AlertRule, AlertState, Comparison, Inhibition, Severity
from monitoring.models.samples import (
    MetricTotals,
    VenueScreenSample,
    WebSocketSample,
    Worker,
    WorkerRole,
)
from monitoring.models.schedules import OnCallShift, Silence
from monitoring.models.status import ComponentDay, MaintenanceWindow, PublicComponent
from monitoring.models.trends import TrendRollup

__all__ = [
    "AlertRule",
    "AlertState",
    "Comparison",
    "ComponentDay",
    "Incident",
    "IncidentEvent",
    "IncidentEventKind",
    "IncidentStatus",
    "Inhibition",
    "MaintenanceWindow",
    "MetricTotals",
    "OnCallShift",
    "PublicComponent",
    "RequestSample",
    "RouteTotals",
    "Severity",
    "Silence",
    "SlowQuery",
    "SlowRequest",
    "SlowStatement",
    "TrendRollup",
    "VenueScreenSample",
    "WebSocketSample",
    "Worker",
    "WorkerRole",
]
