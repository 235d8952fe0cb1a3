"""The specification's thresholds, shipped as rules (by a data migration; tests reuse it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# name, metric, comparison, threshold, window, pending, severity, description
DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "Connection spike",
        "metric": "ws.new_connections_per_minute",
        "comparison": "gte",
        "threshold": 50,
        "window_seconds": 60,
        "severity": "warning",
        "description": "{threshold} new WebSocket connections or more over {window}.",
    },
    {
        "name": "Disconnection spike",
        "metric": "ws.disconnections_per_minute",
        "comparison": "gte",
        "threshold": 50,
        "window_seconds": 60,
        "severity": "warning",
        "description": "{threshold} WebSocket disconnections or more over {window}.",
    },
    {
        "name": "High error rate",
        "metric": "ws.error_rate",
        "comparison": "gt",
        "threshold": 5,
        "window_seconds": 300,
        "severity": "critical",
        "description": "More than {threshold} of WebSocket operations failed on the server's side "
        "over {window}.",
    },
    {
        "name": "Elevated error rate",
        "metric": "ws.error_rate",
        "comparison": "gt",
        "threshold": 1,
        "window_seconds": 300,
        "severity": "warning",
        "description": "More than {threshold} of WebSocket operations failed on the server's side "
        "over {window}.",
    },
    {
        # Anyone can send refusals and bad frames; they are an attack signal, not a failure.
        "name": "Refused connections and bad frames",
        "metric": "ws.client_errors_per_minute",
        "comparison": "gte",
        "threshold": 120,
        "window_seconds": 300,
        "severity": "warning",
        "description": "{threshold} or more refused WebSocket connections and malformed frames "
        "over {window}: a misbehaving client or an attack.",
    },
    {
        "name": "HTTP errors critical",
        "metric": "http.error_rate",
        "comparison": "gt",
        "threshold": 5,
        "window_seconds": 300,
        "severity": "critical",
        "description": "More than {threshold} of HTTP requests answered with a server error "
        "(5xx) over {window}.",
    },
    {
        "name": "HTTP errors elevated",
        "metric": "http.error_rate",
        "comparison": "gt",
        "threshold": 1,
        "window_seconds": 300,
        "severity": "warning",
        "description": "More than {threshold} of HTTP requests answered with a server error "
        "(5xx) over {window}.",
    },
    {
        "name": "Slow responses",
        "metric": "http.avg_response_ms",
        "comparison": "gt",
        "threshold": 2000,
        "window_seconds": 300,
        "severity": "warning",
        "description": "HTTP requests took {threshold} on average or longer over {window}.",
    },
    {
        "name": "Slow queries",
        "metric": "http.slow_queries",
        "comparison": "gte",
        "threshold": 10,
        "window_seconds": 300,
        "severity": "warning",
        "description": "{threshold} or more database queries over SLOW_QUERY_MS over {window}: "
        "see Slow statements in the admin.",
    },
    {
        "name": "Memory critical",
        "metric": "process.memory_percent",
        "comparison": "gt",
        "threshold": 90,
        "window_seconds": 60,
        "severity": "critical",
        "description": "A process uses more than {threshold} of its memory limit.",
    },
    {
        "name": "Memory high",
        "metric": "process.memory_percent",
        "comparison": "gt",
        "threshold": 80,
        "window_seconds": 60,
        "severity": "warning",
        "description": "A process uses more than {threshold} of its memory limit.",
    },
    {
        "name": "WebSocket latency",
        "metric": "ws.latency_avg_ms",
        "comparison": "gt",
        "threshold": 1000,
        "window_seconds": 300,
        "severity": "warning",
        "description": "Average delivery latency above {threshold} over {window}.",
    },
    {
        "name": "Database connection lost",
        "metric": "dependency.database_down",
        "comparison": "gte",
        "threshold": 1,
        "window_seconds": 60,
        "severity": "critical",
        "clear_seconds": 60,
        "description": "The database does not answer.",
    },
    {
        "name": "Redis unreachable",
        "metric": "dependency.redis_down",
        "comparison": "gte",
        "threshold": 1,
        "window_seconds": 60,
        "severity": "critical",
        "clear_seconds": 60,
        "description": "Redis (channel layer and broker) does not answer.",
    },
    {
        "name": "API server down",
        "metric": "workers.web_live",
        "comparison": "lt",
        "threshold": 1,
        "window_seconds": 60,
        "pending_seconds": 60,
        "severity": "critical",
        "description": "No web process is reporting.",
    },
    {
        # Replaced or not: a restart keeps the service up, but each death dropped clients. It
        # resolves 5 minutes after the last death (a crash loop keeps it firing); 15 minutes
        # until 0026 kept a replaced process's incident open long after the soak's recovery.
        "name": "Process died",
        "metric": "workers.crashed",
        "comparison": "gte",
        "threshold": 1,
        "window_seconds": 300,
        "severity": "warning",
        "description": "A web, worker or beat process went silent without being asked to stop "
        "(killed, crashed or out of memory) in the last {window}, even if a restart replaced it.",
    },
    {
        # A supervisor's replacement needs a few seconds to start and report: without a wait,
        # an evaluation in between took every restart for a process gone (0026).
        "name": "Process stopped reporting",
        "metric": "workers.missing",
        "comparison": "gte",
        "threshold": 1,
        "window_seconds": 86400,
        "pending_seconds": 60,
        "severity": "warning",
        "description": "A web, worker or beat process went silent without shutting down "
        "and was not replaced within {pending}.",
    },
    {
        # Slack cannot carry news of its own failure: the incident is recorded, announced
        # only in channels Slack still takes, and each channel gets a summary once it is back.
        "name": "Slack delivery failing",
        "metric": "notifications.slack_failing_seconds",
        "comparison": "gte",
        "threshold": 30,
        "window_seconds": 60,
        "severity": "warning",
        "description": "Slack has refused or not answered messages for one channel for "
        "{threshold} or more (within {window}); they are kept and sent in order once it is "
        "back. Announced only in channels Slack still takes; each channel gets a summary of "
        "what was delayed once its backlog is delivered.",
    },
    {
        # An alert about the outbox cannot wait in it: the process that evaluates the rules
        # sends it at once, past the queue (monitoring.alerting.notify).
        "name": "Notifications waiting",
        "metric": "notifications.outbox_age_seconds",
        "comparison": "gte",
        "threshold": 300,
        "window_seconds": 60,
        "severity": "critical",
        "description": "A notification has been due for {threshold} or more and is not sent "
        "(Slack answers): no worker takes delivery tasks, or more arrives than Slack's rate "
        "lets out. This alert is sent by the process that evaluates the rules, not through "
        "the queue it is about; its resolution goes through that queue.",
    },
]


# What the defaults said before descriptions followed the threshold (migration 0009 updates
# rules still carrying one of these).
OLD_DESCRIPTIONS = {
    "Connection spike": "50+ new WebSocket connections in 1 minute.",
    "Disconnection spike": "50+ WebSocket disconnections in 1 minute.",
    "High error rate": "More than 5% of WebSocket operations fail.",
    "Elevated error rate": "More than 1% of WebSocket operations fail.",
    "Memory critical": "A process uses more than 90% of its memory limit.",
    "Memory high": "A process uses more than 80% of its memory limit.",
    "WebSocket latency": "Average delivery latency above 1000 ms.",
}


def create_default_rules(rule_model: Any) -> None:
    for spec in DEFAULT_RULES:
        rule_model.objects.get_or_create(name=spec["name"], defaults=spec)


# Which public component (status page) each shipped rule's incidents affect. Rules about the
# inside of the system (memory, slow queries, a process that died and was replaced,
# connection spikes and refused connections, which anyone can cause) affect none: a venue
# notices their effects through the rules listed here, if at all.
DEFAULT_PUBLIC_COMPONENTS: dict[str, str] = {
    "HTTP errors critical": "ordering",
    "HTTP errors elevated": "ordering",
    "Slow responses": "ordering",
    "API server down": "ordering",
    "Database connection lost": "ordering",
    "High error rate": "live_updates",
    "Elevated error rate": "live_updates",
    "Disconnection spike": "live_updates",
    "WebSocket latency": "live_updates",
    "Redis unreachable": "live_updates",
    "Slack delivery failing": "notifications",
    "Notifications waiting": "notifications",
}


def assign_public_components(rule_model: Any, mapping: Mapping[str, str]) -> None:
    """Only rules that have none yet: an operator's choice is kept."""
    for name, component in mapping.items():
        rule_model.objects.filter(name=name, public_component="").update(public_component=component)


# A critical rule holds back the warning on the same figure for the same scope: one storm,
# one alert (Alertmanager's classic severity inhibition).
SEVERITY_INHIBITIONS = [
    ("High error rate", "Elevated error rate"),
    ("Memory critical", "Memory high"),
    ("HTTP errors critical", "HTTP errors elevated"),
]


def create_default_inhibitions(
    rule_model: Any, inhibition_model: Any, dependencies: Mapping[str, Iterable[str]]
) -> None:
    """Each rule is held back while a dependency its metric needs is down (`dependencies`:
    metric -> the dependencies it needs), and each warning by its critical twin."""
    for rule in rule_model.objects.all():
        inhibit_dependents(rule_model, inhibition_model, rule, dependencies.get(rule.metric, ()))
    for cause, effect in SEVERITY_INHIBITIONS:
        source = rule_model.objects.filter(name=cause).first()
        target = rule_model.objects.filter(name=effect).first()
        if source is not None and target is not None:
            inhibition_model.objects.get_or_create(
                source=source, target=target, defaults={"same_scope": True}
            )


def inhibit_dependents(
    rule_model: Any, inhibition_model: Any, rule: Any, needs: Iterable[str]
) -> None:
    for dependency in needs:
        for source in rule_model.objects.filter(metric=f"dependency.{dependency}_down"):
            inhibition_model.objects.get_or_create(source=source, target=rule)


def install_defaults() -> None:
    """The shipped rules and their inhibitions, with today's models and metric registry
    (migrations pass their historical models and a frozen copy instead)."""
    from monitoring.alerting.metrics import REGISTRY
    from monitoring.models import AlertRule, Inhibition

    create_default_rules(AlertRule)
    assign_public_components(AlertRule, DEFAULT_PUBLIC_COMPONENTS)
    dependencies = {name: metric.depends_on for name, metric in REGISTRY.items()}
    create_default_inhibitions(AlertRule, Inhibition, dependencies)
