"""What incidents look like in Slack."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from monitoring.alerting.metrics import format_value
from monitoring.models import Incident, IncidentStatus, OnCallShift, Severity
from notifications.formatting import (
    Composed,
    context_block,
    duration,
    fields_block,
    fit,
    header_block,
    lines,
    section_block,
    utc_time,
)
from notifications.slack_text import TEXT_LIMIT, Mrkdwn, escape_text, mrkdwn, safe_link

ICONS: dict[str, str] = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}


def value_text(incident: Incident, value: float) -> str:
    return format_value(incident.rule.metric, value)


def _line(incident: Incident) -> str:
    state = "✅ resolved" if incident.status == IncidentStatus.RESOLVED else "firing"
    if incident.acknowledged_at and incident.is_open:
        state = f"acknowledged by {incident.acknowledged_by or 'someone'}"
    scope = f" [venue {incident.scope}]" if incident.scope else ""
    now = value_text(incident, incident.last_value)
    peak = value_text(incident, incident.peak_value)
    return (
        f"{ICONS.get(incident.severity, '')} [{incident.severity.upper()}] {incident.rule.name}"
        f"{scope}: {incident.rule.condition_text()} (now {now}, peak {peak}) — {state}"
    )


def incident_message(incidents: Sequence[Incident]) -> Composed:
    """One incident, or a group that fired together: the opening message and its updates."""
    if len(incidents) == 1:
        return _single(incidents[0])
    firing = sum(1 for i in incidents if i.is_open)
    title = f"⚠️ {len(incidents)} alerts ({firing} firing)"
    lines = [_line(i) for i in incidents]
    blocks = [header_block(title), *(section_block(line) for line in lines)]
    blocks.append(context_block(f"Opened {utc_time(min(i.opened_at for i in incidents))}"))
    return fit("\n".join([title, *lines]), blocks)


def _single(incident: Incident) -> Composed:
    rule = incident.rule
    resolved = incident.status == IncidentStatus.RESOLVED
    icon = "✅" if resolved else ICONS.get(incident.severity, "⚠️")
    title = f"{icon} {'Resolved: ' if resolved else ''}{rule.name}"
    pairs = [
        ("Severity", incident.severity.capitalize()),
        ("Condition", rule.condition_text()),
        ("Value", value_text(incident, incident.last_value)),
        ("Peak", value_text(incident, incident.peak_value)),
        ("Since", utc_time(incident.opened_at)),
    ]
    if incident.scope:
        pairs.insert(0, ("Venue", incident.scope))
    if incident.acknowledged_at and not resolved:
        pairs.append(("Acknowledged", f"by {incident.acknowledged_by or 'someone'}"))
    if resolved and incident.resolved_at:
        pairs.append(
            ("Duration", duration((incident.resolved_at - incident.opened_at).total_seconds()))
        )
    if rule.runbook_url:
        pairs.append(("Runbook", safe_link(rule.runbook_url)))
    text = lines(title, pairs)
    blocks = [header_block(title), fields_block(pairs)]
    if rule.description:
        description = escape_text(rule.description_text(), TEXT_LIMIT, multiline=True)
        blocks.append(context_block(description))
        text = Mrkdwn(f"{text}\n{description}")
    return fit(text, blocks)


def resolved_reply(incident: Incident) -> Composed:
    took = duration(((incident.resolved_at or timezone.now()) - incident.opened_at).total_seconds())
    who = f" by {incident.resolved_by}" if incident.resolved_by else ""
    text = f"✅ Resolved{who} after {took}: {incident.rule.name}"
    return fit(text, [section_block(text)])


def reminder(incident: Incident) -> Composed:
    open_for = duration((timezone.now() - incident.opened_at).total_seconds())
    text = (
        f"⏰ Still firing after {open_for}, unacknowledged: {incident.rule.name} "
        f"(now {value_text(incident, incident.last_value)})"
    )
    return fit(text, [section_block(text)])


def escalation(incident: Incident, shift: OnCallShift | None) -> Composed:
    # The only mention the system ever writes: the on-call rota's, never user text.
    who = shift.mention if shift else "nobody is on call (add shifts in the admin)"
    open_for = duration((timezone.now() - incident.opened_at).total_seconds())
    text = mrkdwn(
        "🚨 Escalation: {} has been firing for {} unacknowledged. On call: {}",
        incident.rule.name,
        open_for,
        who,
    )
    detail = _single(incident)
    # detail.text was escaped by fit() above.
    return fit(Mrkdwn(f"{text}\n{detail.text}"), [section_block(text), *detail.blocks[1:]])


def flapping(incident: Incident, changes: int, window_seconds: int) -> Composed:
    text = (
        f"🔁 Flapping: {incident.rule.name} opened and resolved {changes} times in "
        f"{duration(window_seconds)}; it stays quiet until it settles."
    )
    return fit(text, [section_block(text)])
