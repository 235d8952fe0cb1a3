"""What a click does: who clicked, may they, and the admin's own code path for the action."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from monitoring.alerting import buttons, engine, silences
from monitoring.alerting.buttons import Action
from monitoring.models import Incident
from notifications import slack_users
from notifications.models import SlackUser

logger = structlog.get_logger(__name__)

# The permission each admin action needs (the incident admin's actions need "change"; a
# silence is added in the silence admin).
PERMISSIONS: dict[Action, str] = {
    Action.ACKNOWLEDGE: "monitoring.change_incident",
    Action.RESOLVE: "monitoring.change_incident",
    Action.SILENCE_HOUR: "monitoring.add_silence",
    Action.SILENCE_MORNING: "monitoring.add_silence",
}

REFUSED = (
    "You can't do that: your Slack account is not linked to an Inkwave Ops user who may "
    "(ask an admin to add you under Notifications → Slack users)."
)
NO_PERMISSION = (
    "You can't do that: your Inkwave Ops user may not {what} (ask an admin for the permission)."
)
WHAT = {
    "monitoring.change_incident": "change incidents",
    "monitoring.add_silence": "add silences",
}
SLACK_UNREACHABLE = (
    "Inkwave couldn't ask Slack who you are, so nothing changed: try again in a moment, "
    "or use the admin."
)

# Slack gives up after 3 s: a row lock held longer (an evaluation cycle on this incident)
# fails the click cleanly rather than late. A first click also waits for Slack's users.info
# (1 s at most), which comes off this.
LOCK_TIMEOUT_MS = 2000
MIN_LOCK_TIMEOUT_MS = 500


@dataclass(frozen=True)
class Outcome:
    done: bool
    text: str  # for whoever clicked


def django_user(slack_user_id: str) -> Any | None:
    link = SlackUser.objects.select_related("user").filter(slack_user_id=slack_user_id).first()
    return link.user if link is not None and link.user.is_active else None


def allowed(user: AbstractBaseUser | None, action: Action) -> bool:
    return user is not None and user.has_perm(PERMISSIONS[action])  # type: ignore[attr-defined]


def refuse(slack_user_id: str, action: str, reason: str, incident_id: str = "") -> Outcome:
    """Nothing changes; the refusal is logged (ids only: no names, nothing of the payload)."""
    logger.warning(
        "slack_action_refused",
        slack_user=slack_user_id,
        action=action,
        incident=incident_id,
        reason=str(reason),  # a NotLinked member logs as its text, not its repr
    )
    if reason == slack_users.NotLinked.SLACK_UNREACHABLE:
        return Outcome(False, SLACK_UNREACHABLE)
    if reason == "no_permission" and action in set(Action):
        # Linked, so "not linked" would send them to the wrong admin page.
        what = WHAT.get(PERMISSIONS[Action(action)], "do that")
        return Outcome(False, NO_PERMISSION.format(what=what))
    refused = reason == "unlinked" or reason in set(slack_users.NotLinked)
    return Outcome(False, REFUSED if refused else reason)


def perform(
    action: Action, incident_id: str, slack_user_id: str, slack_name: str, now: datetime
) -> Outcome:
    """Link the member if nobody has (a Web API call, made before any transaction so that no
    lock waits on Slack), then act in one short transaction."""
    started = time.monotonic()
    not_linked = slack_users.link(slack_user_id)
    if not_linked is not None:
        return refuse(slack_user_id, action, not_linked, incident_id)
    spent_ms = int((time.monotonic() - started) * 1000)
    with transaction.atomic():
        _lock_timeout(max(MIN_LOCK_TIMEOUT_MS, LOCK_TIMEOUT_MS - spent_ms))
        return _perform(action, incident_id, slack_user_id, slack_name, now)


def _lock_timeout(ms: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {int(ms)}")


def _perform(
    action: Action, incident_id: str, slack_user_id: str, slack_name: str, now: datetime
) -> Outcome:
    user = django_user(slack_user_id)
    if not allowed(user, action):
        return refuse(
            slack_user_id, action, "unlinked" if user is None else "no_permission", incident_id
        )
    incident = (
        Incident.objects.select_related("rule", "acknowledged_by", "resolved_by")
        .filter(pk=int(incident_id))
        .first()
        if incident_id.isdigit() and len(incident_id) < 12
        else None
    )
    if incident is None:
        return refuse(slack_user_id, action, f"There is no incident {incident_id[:20]}.")
    via = f"by @{slack_name or slack_user_id} via Slack"
    outcome = _do(action, incident, user, via, now)
    logger.info(
        "slack_action",
        slack_user=slack_user_id,
        action=action,
        incident=incident.pk,
        done=outcome.done,
    )
    return outcome


def _do(action: Action, incident: Incident, user: Any, via: str, now: datetime) -> Outcome:
    title = incident.title
    if action == Action.ACKNOWLEDGE:
        if engine.acknowledge(incident, user, now, via=via):
            return Outcome(True, f"You acknowledged {title}.")
        return Outcome(False, f"{title} was already {_state(incident)}.")
    if action == Action.RESOLVE:
        if engine.resolve_by_hand(incident, user, now, via=via):
            return Outcome(True, f"You resolved {title}.")
        return Outcome(False, f"{title} was already {_state(incident)}.")
    until = buttons.silence_end(action, now)
    if silences.silence_incident(incident, user, until, now, via=via) is not None:
        local = until.astimezone(buttons.operator_zone())
        return Outcome(True, f"You silenced {title} until {local:%Y-%m-%d %H:%M} {local.tzname()}.")
    return Outcome(False, f"{title} was already silenced or resolved: nothing changed.")


def _state(incident: Incident) -> str:
    incident.refresh_from_db()
    if not incident.is_open:
        return f"resolved{f' by {incident.resolved_by}' if incident.resolved_by else ''}"
    return f"acknowledged by {incident.acknowledged_by or 'someone'}"
