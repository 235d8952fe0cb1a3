"""Operations news that is not an incident: the periodic health update, error alerts
(the specification's send_error_alert), deployments. Each is composed here and handed to
the outbox; nothing here talks to Slack."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

import structlog
from django.db import transaction
from django.utils import timezone

from inkwave.lib.formats import duration, percent, utc_time
from monitoring.models import Incident, IncidentStatus
from monitoring.stats import websocket_health, websocket_stats
from notifications.formatting import Composed, compose
from notifications.models import Notification, NotificationKind
from notifications.outbox import claim_once, enqueue

logger = structlog.get_logger(__name__)


class ErrorContext(TypedDict, total=False):
    source: str  # "WebSocket", "API", "Database", ...: the title's first word
    type: str  # what failed, e.g. "Connection Failed"
    affected_clients: int
    action: str  # what the reader should do
    kind: str  # a NotificationKind, to route elsewhere than system alerts
    time: datetime


def error_message(error: BaseException | str, context: ErrorContext) -> Composed:
    source = context.get("source", "System")
    pairs = [("Type", context.get("type") or type(error).__name__)]
    if "affected_clients" in context:
        pairs.append(("Affected Clients", str(context["affected_clients"])))
    pairs += [
        ("Error", str(error) or type(error).__name__),
        ("Time", utc_time(context.get("time") or timezone.now())),
        ("Action Required", context.get("action", "Check server status")),
    ]
    return compose(f"⚠️ {source} Error", pairs)


def send_error_alert(
    error: BaseException | str, context: ErrorContext | None = None
) -> list[Notification]:
    context = context or {}
    kind = context.get("kind") or (
        NotificationKind.WEBSOCKET_ALERT
        if context.get("source") == "WebSocket"
        else NotificationKind.SYSTEM_ALERT
    )
    serialisable = {k: v for k, v in context.items() if k != "time"}
    return enqueue(kind, error_message(error, context), context=dict(serialisable))


class HealthMetrics(TypedDict):
    activeConnections: int
    messagesPerMinute: float
    errorRate: float
    uptime: float


def health_message(metrics: HealthMetrics | dict[str, Any]) -> Composed:
    return compose(
        "✅ System Healthy",
        [
            ("Active Connections", str(metrics["activeConnections"])),
            ("Messages/min", f"{metrics['messagesPerMinute']:g}"),
            ("Error Rate", percent(metrics["errorRate"])),
            ("Uptime", duration(metrics["uptime"])),
        ],
    )


def send_health_update(metrics: HealthMetrics | dict[str, Any]) -> list[Notification]:
    return enqueue(NotificationKind.HEALTH_UPDATE, health_message(metrics))


# --- the periodic health update --------------------------------------------------


@transaction.atomic  # the claim commits only with the message it claims
def health_update(now: datetime, interval_seconds: int) -> list[Notification]:
    """✅ System Healthy, once per interval, and only when the system is healthy."""
    if Incident.objects.filter(status=IncidentStatus.FIRING).exists():
        logger.info("health_update_skipped", reason="an incident is open")
        return []
    health = websocket_health(now)
    if health["status"] != "healthy":
        logger.info("health_update_skipped", status=health["status"], reasons=health["reasons"])
        return []
    bucket = int(now.timestamp()) // interval_seconds
    if not claim_once(f"health:{bucket}"):
        return []
    stats = websocket_stats(now)
    return send_health_update(
        {
            "activeConnections": stats["activeConnections"],
            "messagesPerMinute": stats["window"]["messagesPerMinute"],
            "errorRate": stats["errorRate"],
            "uptime": stats["uptime"],
        }
    )


def deployment(release: str, environment: str, note: str = "") -> list[Notification]:
    pairs = [("Release", release), ("Environment", environment)]
    message = compose(f"🚀 Deployed {release}", pairs, note=note)
    with transaction.atomic():
        return enqueue(NotificationKind.DEPLOYMENT, message, context={"release": release})
