"""What incidents look like in Slack."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypedDict

from django.utils import timezone

from inkwave.lib.formats import duration, utc_time
from monitoring.alerting import buttons, rules, suppression
from monitoring.alerting.metrics import format_value
from monitoring.alerting.scopes import scope_name
from monitoring.models import Incident, IncidentStatus, OnCallShift, Severity
from notifications.formatting import (
    Composed,
    context_block,
    fields_block,
    fit,
    header_block,
    lines,
    section_block,
)
from notifications.slack_text import TEXT_LIMIT, Mrkdwn, escape_text, mrkdwn, safe_link

ICONS: dict[str, str] = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}


def value_text(incident: Incident, value: float) -> str:
    return format_value(incident.rule.metric, value)


def _line(incident: Incident) -> str:
    if not incident.is_open:
        # An ended alert reads as ended: no severity badge left to alarm anyone.
        lasted = duration(_lasted(incident))
        return f"✅ {incident.title}: resolved after {lasted} (peak {_peak(incident)})"
    state = "firing"
    if incident.acknowledged_at:
        state = f"acknowledged by {incident.acknowledged_by or 'someone'}"
    now = value_text(incident, incident.last_value)
    return (
        f"{ICONS.get(incident.severity, '')} [{incident.severity.upper()}] {incident.title}: "
        f"{rules.condition_text(incident.rule)} (now {now}, peak {_peak(incident)}) — {state}"
    )


def _peak(incident: Incident) -> str:
    return value_text(incident, incident.peak_value)


def _lasted(incident: Incident) -> float:
    return ((incident.resolved_at or timezone.now()) - incident.opened_at).total_seconds()


def _titles(incidents: Sequence[Incident]) -> str:
    return ", ".join(i.title for i in incidents)


def incident_message(incidents: Sequence[Incident]) -> Composed:
    """One incident, or a group that fired together: the opening message and its updates."""
    if len(incidents) == 1:
        return _single(incidents[0])
    firing = sum(1 for i in incidents if i.is_open)
    if firing:
        title = f"⚠️ {len(incidents)} alerts ({firing} firing)"
    else:
        title = f"✅ {len(incidents)} alerts, all resolved"
    # Firing first (worst first), then what ended.
    ordered = sorted(incidents, key=lambda i: (not i.is_open, _RANK.get(i.severity, 9), i.pk))
    lines = [_line(i) for i in ordered]
    now = timezone.now()
    blocks = [header_block(title)]
    # Each member with buttons takes three blocks (its line, its buttons, the note that
    # stands in for them on a webhook); Slack takes 50 in a message. The first members, the
    # worst firing ones, get theirs; the rest are listed together.
    shown = MAX_MEMBERS_WITH_BUTTONS
    for incident, line in zip(ordered[:shown], lines[:shown], strict=True):
        blocks.append(section_block(line))
        blocks.extend(buttons.incident_blocks(incident, now))
    if lines[shown:]:
        blocks.append(section_block("\n".join(lines[shown:])))
        more = sum(1 for i in ordered[shown:] if i.is_open)
        if more:
            blocks.append(
                context_block(
                    f"and {more} more firing without buttons here — /inkwave incidents (or the "
                    "admin) to act on them"
                )
            )
    blocks.append(context_block(f"Opened {utc_time(min(i.opened_at for i in incidents))}"))
    return fit("\n".join([title, *lines]), blocks)


# Members of a group message that get a button row each: 1 + 3 x 12 + 3 blocks, within 50.
MAX_MEMBERS_WITH_BUTTONS = 12


_RANK: dict[str, int] = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _single(incident: Incident, *, note: str = "") -> Composed:
    rule = incident.rule
    resolved = incident.status == IncidentStatus.RESOLVED
    icon = "✅" if resolved else ICONS.get(incident.severity, "⚠️")
    title = f"{icon} {'Resolved: ' if resolved else ''}{incident.title}"
    pairs = [
        ("Severity", incident.severity.capitalize()),
        ("Condition", rules.condition_text(rule)),
        ("Value", value_text(incident, incident.last_value)),
        ("Peak", _peak(incident)),
        ("Since", utc_time(incident.opened_at)),
    ]
    if incident.scope:
        pairs.insert(0, ("Venue", scope_name(incident.scope)))
    if incident.acknowledged_at and not resolved:
        pairs.append(("Acknowledged", f"by {incident.acknowledged_by or 'someone'}"))
    silence = None if resolved else suppression.silence_on(incident, timezone.now())
    if silence is not None and silence.ends_at is not None:
        until = silence.ends_at.astimezone(buttons.operator_zone())
        by = f" by {silence.created_by}" if silence.created_by else ""
        pairs.append(("Silenced", f"until {until:%Y-%m-%d %H:%M} {until.tzname()}{by}"))
    if resolved and incident.resolved_at:
        pairs.append(("Duration", duration(_lasted(incident))))
    if rule.runbook_url:
        pairs.append(("Runbook", safe_link(rule.runbook_url)))
    text = lines(title, pairs)
    blocks = [header_block(title), fields_block(pairs)]
    if rule.description:
        description = escape_text(rules.description_text(rule), TEXT_LIMIT, multiline=True)
        blocks.append(context_block(description))
        text = Mrkdwn(f"{text}\n{description}")
    if note:
        blocks.append(context_block(note))
        text = Mrkdwn(f"{text}\n{escape_text(note, TEXT_LIMIT, multiline=True)}")
    blocks.extend(buttons.incident_blocks(incident, timezone.now()))
    return fit(text, blocks)


def settled_firing(incident: Incident, changes: int) -> Composed:
    """The opening message of an alert that flapped and then held: it is firing now."""
    return _single(
        incident,
        note=f"It flapped ({changes} changes) and has now been firing for "
        f"{duration(incident.rule.settle_seconds)} without a break.",
    )


def resolved_reply(incident: Incident) -> Composed:
    who = f" by {incident.resolved_by}" if incident.resolved_by else ""
    text = f"✅ Resolved{who} after {duration(_lasted(incident))}: {incident.title}"
    return fit(text, [section_block(text)])


def group_resolved_reply(ended: Sequence[Incident], firing: Sequence[Incident]) -> Composed:
    """One reply for the members of a group that ended together, and what still fires."""
    parts = [
        f"✅ Resolved: {i.title} (after {duration(_lasted(i))}"
        f"{f', by {i.resolved_by}' if i.resolved_by else ''})"
        for i in ended
    ]
    if firing:
        parts.append(f"Still firing: {_titles(firing)}")
    else:
        parts.append("Every alert of this group has resolved.")
    text = "\n".join(parts)
    return fit(text, [section_block(text)])


def joined_reply(joined: Sequence[Incident]) -> Composed:
    text = "\n".join(
        f"🆕 Joined this group: {ICONS.get(i.severity, '')} [{i.severity.upper()}] {i.title}: "
        f"{rules.condition_text(i.rule)} (now {value_text(i, i.last_value)})"
        for i in joined
    )
    return fit(text, [section_block(text)])


def reminder(incident: Incident) -> Composed:
    open_for = duration((timezone.now() - incident.opened_at).total_seconds())
    text = (
        f"⏰ Still firing after {open_for}, unacknowledged: {incident.title} "
        f"(now {value_text(incident, incident.last_value)})"
    )
    return fit(text, [section_block(text)])


def escalation(incident: Incident, shift: OnCallShift | None) -> Composed:
    return escalation_again(incident, escalation_head(incident, shift))


class EscalationHead(TypedDict):
    """What an escalation said when it was sent, kept in its row's context: edits in place
    (the incident acknowledged, resolved or silenced) keep it and renew the rest."""

    header: str
    text: str  # mrkdwn, escaped when it was composed


def escalation_head(incident: Incident, shift: OnCallShift | None) -> EscalationHead:
    open_for = duration((timezone.now() - incident.opened_at).total_seconds())
    if shift is None:
        # Nobody to page is itself an emergency: said first, in the header.
        header = "🚨 Escalation: nobody is on call"
        text = mrkdwn(
            "🚨 Escalation: {} has been firing for {} unacknowledged, and nobody is on call "
            "(add shifts in the admin).",
            incident.title,
            open_for,
        )
    else:
        header = "🚨 Escalation"
        # The only mention the system ever writes: the on-call rota's, never user text.
        text = mrkdwn(
            "🚨 Escalation: {} has been firing for {} unacknowledged. On call: {}",
            incident.title,
            open_for,
            shift.mention,
        )
    return {"header": header, "text": text}


def escalation_again(incident: Incident, head: EscalationHead) -> Composed:
    """The escalation with the incident as it is now: its state, and the buttons that still
    apply (none once it is resolved)."""
    text = Mrkdwn(head["text"])
    detail = _single(incident)
    # detail.text was escaped by fit() above.
    return fit(
        Mrkdwn(f"{text}\n{detail.text}"),
        [header_block(head["header"]), section_block(text), *detail.blocks[1:]],
    )


def flapping(incident: Incident, changes: int, span_seconds: float) -> Composed:
    text = (
        f"🔁 Flapping: {incident.title} opened and resolved {changes} times in "
        f"{duration(span_seconds)}. Updates are held until it holds one state for "
        f"{duration(incident.rule.settle_seconds)}; then this channel hears which."
    )
    return fit(text, [section_block(text)])


def flap_notice_settled(incident: Incident, changes: int, state: str, at: datetime) -> Composed:
    """The flapping notice, edited in place once the alert settled."""
    text = (
        f"🔁 Flapped: {incident.title} opened and resolved {changes} times; "
        f"settled {state} at {utc_time(at)}."
    )
    return fit(text, [section_block(text)])


def settled_resolved(incident: Incident, changes: int) -> Composed:
    text = (
        f"✅ Settled: {incident.title} has been clear for "
        f"{duration(incident.rule.settle_seconds)} after flapping ({changes} changes). Resolved."
    )
    return fit(text, [section_block(text)])


def silence_summary(
    reason: str, start: datetime, end: datetime, changes: Sequence[Incident]
) -> Composed:
    """What changed while a silence was on, said once when it ends."""
    title = f"🔕 Silence ended: {reason}"
    rows = []
    for i in changes:
        if i.opened_at >= start and i.is_open:
            rows.append(f"{i.title}: fired at {utc_time(i.opened_at)} and is still firing")
        elif i.opened_at >= start and i.resolved_at:
            rows.append(
                f"{i.title}: fired at {utc_time(i.opened_at)}, resolved at "
                f"{utc_time(i.resolved_at)}"
            )
        elif i.resolved_at:
            rows.append(f"{i.title}: resolved at {utc_time(i.resolved_at)}")
    intro = f"From {utc_time(start)} to {utc_time(end)}, while it was on:"
    body = "\n".join([intro, *(f"• {row}" for row in rows)])
    return fit(f"{title}\n{body}", [header_block(title), section_block(body)])
