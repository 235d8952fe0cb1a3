"""The buttons on an incident's Slack messages, and the note that replaces them where a
message cannot carry any (a webhook's). The clicks arrive at monitoring.slackapp."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.urls import reverse

from monitoring.alerting import suppression
from monitoring.models import Incident
from notifications.formatting import actions_block, button
from notifications.slack_requests import interactive
from notifications.slack_text import Mrkdwn, safe_link

# Morning in the operators' time zone (TIME_ZONE): "until tomorrow 09:00" is the next
# working morning of whoever reads the channel, not of the venue the alert names.
MORNING_HOUR = 9


class Action(StrEnum):
    ACKNOWLEDGE = "incident.acknowledge"
    RESOLVE = "incident.resolve"
    SILENCE_HOUR = "incident.silence_1h"
    SILENCE_MORNING = "incident.silence_morning"


def admin_url(incident: Incident) -> str:
    path = reverse("admin:monitoring_incident_change", args=[incident.pk])
    return f"{settings.PUBLIC_URL}{path}"


def operator_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def silence_end(action: Action, now: datetime) -> datetime:
    if action == Action.SILENCE_HOUR:
        return now + timedelta(hours=1)
    local = now.astimezone(operator_zone())
    tomorrow = (local + timedelta(days=1)).date()
    return datetime(
        tomorrow.year, tomorrow.month, tomorrow.day, MORNING_HOUR, tzinfo=operator_zone()
    )


def incident_blocks(incident: Incident, now: datetime) -> list[dict[str, Any]]:
    """What an open incident's message offers: buttons for what still applies (none left
    once it is resolved), and for webhooks a link to its page in the admin instead."""
    if not incident.is_open:
        return []
    buttons = []
    if interactive():
        value = str(incident.pk)
        if incident.acknowledged_at is None:
            buttons.append(button("Acknowledge", Action.ACKNOWLEDGE, value, style="primary"))
        buttons.append(button("Resolve", Action.RESOLVE, value, style="danger"))
        if suppression.silence_on(incident, now) is None:
            buttons.append(button("Silence 1 h", Action.SILENCE_HOUR, value))
            morning = f"Silence until {MORNING_HOUR:02d}:00 {settings.TIME_ZONE}"
            buttons.append(button(morning, Action.SILENCE_MORNING, value))
    link = safe_link(admin_url(incident), f"incident {incident.pk}")
    instead = Mrkdwn(f"Acknowledge, resolve or silence it in the admin: {link}")
    return actions_block(f"incident:{incident.pk}", buttons, instead=instead)
