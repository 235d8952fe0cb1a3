from __future__ import annotations

from monitoring.models.alerting import (
    AlertRule,
    AlertState,
    Comparison,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Inhibition,
    OnCallShift,
    Severity,
    Silence,
)
from monitoring.models.samples import MetricTotals, WebSocketSample, Worker, WorkerRole

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
    "Severity",
    "Silence",
    "WebSocketSample",
    "Worker",
    "WorkerRole",
]
