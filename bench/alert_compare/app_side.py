"""What the application's own alerting did, read at the end from its database (directly, not
through the proxy) and from the local Slack server's posts: each incident with its rule,
severity, opening and resolution, the Slack posts its notifications became, and why it was
held back when it was (the timeline's `suppressed` entries)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bench.fault_run.observer import query
from notifications.local_slack import SlackServer


def alertname(rule: str) -> str:
    """The rule's name as rules.yml spells it: "HTTP errors critical" -> HTTPErrorsCritical."""
    return "".join(word[0].upper() + word[1:] for word in rule.split())


@dataclass(frozen=True)
class RuleSpec:
    """An enabled rule as the application has it (the model's defaults filled in)."""

    severity: str
    window: int
    pending: int
    clear: int


def rules(url: str) -> dict[str, RuleSpec]:
    return {
        alertname(name): RuleSpec(severity, window, pending, clear)
        for name, severity, window, pending, clear in query(
            "SELECT name, severity, window_seconds, pending_seconds, clear_seconds "
            "FROM monitoring_alertrule WHERE enabled",
            url=url,
        )
    }


@dataclass
class AppIncident:
    id: int
    alert: str  # the rule as an alertname
    severity: str
    scope: str
    opened: float
    resolved: float | None
    posted: float | None = None  # the first Slack post that announced it
    resolution_posted: float | None = None  # the reply that said it resolved
    direct: bool = False  # announced past the database (a dependency outage)
    held: list[str] = field(default_factory=list)  # why nothing was sent, when it was not


def incidents(url: str, slack: SlackServer) -> list[AppIncident]:
    posts = [p for p in slack.posts if p.path.endswith("chat.postMessage") and p.ts]
    posted = {post.ts: post.at for post in posts}
    rows = {
        i: (ts, bool((context or {}).get("direct")))
        for i, ts, context in query(
            "SELECT id, slack_ts, context FROM notifications_notification", url=url
        )
    }
    events: dict[int, list[tuple[str, str, int | None]]] = defaultdict(list)
    for incident, kind, message, notification in query(
        "SELECT incident_id, kind, message, notification_id FROM monitoring_incidentevent "
        "ORDER BY at, id",
        url=url,
    ):
        events[incident].append((kind, message, notification))
    found = []
    for i, rule, title, severity, scope, opened, resolved, notification in query(
        "SELECT i.id, r.name, i.title, i.severity, i.scope, i.opened_at, i.resolved_at, "
        "i.notification_id FROM monitoring_incident i "
        "JOIN monitoring_alertrule r ON r.id = i.rule_id ORDER BY i.id",
        url=url,
    ):
        incident = AppIncident(
            i,
            alertname(rule),
            severity,
            scope,
            opened.timestamp(),
            None if resolved is None else resolved.timestamp(),
        )
        announcing = [n for n in (notification, *(n for k, _, n in events[i] if k == "notified"))]
        known = [rows[n] for n in announcing if n in rows]
        threads = {ts for ts, _ in known if ts in posted}
        incident.direct = any(direct for _, direct in known)
        # The announcement is the first post of its thread that names it: the group's post
        # when it opened the group, the reply saying it joined when the post was there.
        said = [
            (post.at, str(post.body.get("text", "")))
            for post in posts
            if (post.ts in threads or post.body.get("thread_ts") in threads)
            and post.at >= incident.opened - 1
            and title in str(post.body.get("text", ""))
        ]
        incident.posted = next((at for at, text in said if "Resolved" not in text), None)
        incident.resolution_posted = next((at for at, text in said if "Resolved" in text), None)
        incident.held = [message for kind, message, _ in events[i] if kind == "suppressed"]
        found.append(incident)
    return found
