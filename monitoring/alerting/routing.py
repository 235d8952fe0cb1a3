"""Where an alert goes: its notification kind and its destinations."""

from __future__ import annotations

import structlog

from monitoring.alerting.metrics import SLACK_FAILING
from monitoring.models import (
    AlertRule,
)
from notifications.models import Destination, NotificationKind
from notifications.outbox import routed_destinations

logger = structlog.get_logger(__name__)


def kind_for(rule: AlertRule) -> NotificationKind:
    if rule.metric.startswith("ws."):
        return NotificationKind.WEBSOCKET_ALERT
    return NotificationKind.SYSTEM_ALERT


def destinations_for(rule: AlertRule) -> list[Destination]:
    targets = list(rule.destinations.all()) or routed_destinations(kind_for(rule))
    if rule.metric == SLACK_FAILING:
        # News of Slack failing goes only where Slack still takes messages; the failing
        # channels get a summary once they are back (notifications.delivery).
        targets = [d for d in targets if d.failing_since is None]
    return targets
