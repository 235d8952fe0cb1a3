"""/inkwave: status, open incidents (with their buttons), and ack <id>.

Answers are ephemeral (only the asker sees them) unless the text ends with "public". The
figures come from the functions the health and statistics endpoints use.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.utils import timezone

from inkwave.lib.formats import duration
from monitoring.alerting import messages
from monitoring.alerting.buttons import Action
from monitoring.models import Incident, IncidentStatus
from monitoring.slackapp import actions
from monitoring.stats import websocket_health
from notifications.formatting import fit, section_block
from notifications.slack import blocks_for
from notifications.slack_text import mrkdwn

USAGE = "Usage: /inkwave status [public] | /inkwave incidents [public] | /inkwave ack <incident id>"
MAX_LISTED = 10


class CommandAnswer(TypedDict, total=False):
    response_type: str
    text: str
    blocks: list[dict[str, Any]]


def answer(text: str, slack_user_id: str, slack_name: str) -> CommandAnswer:
    words = text.split()
    public = bool(words) and words[-1].lower() == "public"
    if public:
        words = words[:-1]
    verb = words[0].lower() if words else ""
    if verb == "status" and len(words) == 1:
        reply = _status()
    elif verb == "incidents" and len(words) == 1:
        reply = _incidents()
    elif verb == "ack" and len(words) == 2 and not public:
        reply = _ack(words[1], slack_user_id, slack_name)
    else:
        reply = {"text": USAGE}
    reply["response_type"] = "in_channel" if public else "ephemeral"
    return reply


def _status() -> CommandAnswer:
    health = websocket_health()
    latency = health["latency"]
    p95 = "-" if latency["p95Ms"] is None else f"{latency['p95Ms']:,.0f} ms"
    firing = Incident.objects.filter(status=IncidentStatus.FIRING).count()
    lines = [
        f"Health: {health['status']}"
        + (f" ({'; '.join(health['reasons'])})" if health["reasons"] else ""),
        f"Connections: {health['connections']:,} on {health['workers']} web process(es), "
        f"up {duration(health['uptime'])}",
        f"Error rate: {health['errorRate']:.2%}, delivery p95: {p95}, "
        f"memory: {health['memoryUsage']['percent']:.0f}%",
        f"Open incidents: {firing}",
    ]
    composed = fit("\n".join(lines), [section_block("\n".join(lines))])
    return {"text": composed.text, "blocks": composed.blocks}


def _incidents() -> CommandAnswer:
    open_ones = list(
        Incident.objects.filter(status=IncidentStatus.FIRING)
        .select_related("rule", "acknowledged_by", "resolved_by")
        .order_by("-opened_at")[: MAX_LISTED + 1]
    )
    if not open_ones:
        return {"text": "No open incidents."}
    blocks: list[dict[str, Any]] = []
    for incident in open_ones[:MAX_LISTED]:
        # The header becomes a line: a message has one header, at the top.
        _header, *rest = messages.incident_message([incident]).blocks
        blocks.extend([section_block(mrkdwn("*{}*", incident.title)), *rest])
    more = f" (the {MAX_LISTED} latest shown)" if len(open_ones) > MAX_LISTED else ""
    composed = fit(f"Open incidents{more}", [section_block(f"Open incidents{more}:"), *blocks])
    # Straight to Slack from here: buttons, not the note that stands in for them.
    return {"text": composed.text, "blocks": blocks_for(composed.blocks, interactive=True)}


def _ack(incident_id: str, slack_user_id: str, slack_name: str) -> CommandAnswer:
    outcome = actions.perform(
        Action.ACKNOWLEDGE, incident_id, slack_user_id, slack_name, timezone.now()
    )
    return {"text": outcome.text}
