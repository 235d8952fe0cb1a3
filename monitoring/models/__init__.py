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

__all__ = [
    "AlertRule",
    "AlertState",
    "Comparison",
    "Incident",
    "IncidentEvent",
    "IncidentEventKind",
    "IncidentStatus",
    "Inhibition",
    "MetricTotals",
    "OnCallShift",
    "RequestSample",
    "RouteTotals",
    "Severity",
    "Silence",
    "SlowQuery",
    "SlowRequest",
    "SlowStatement",
    "VenueScreenSample",
    "WebSocketSample",
    "Worker",
    "WorkerRole",
]
