"""A rule as people read it, and what the metric registry says about it: its condition in
words, its description with the current values, and the checks that need the registry (the
model checks the rest; the admin form runs both)."""

from __future__ import annotations

from inkwave.lib.formats import duration
from monitoring.alerting.metrics import REGISTRY, format_value
from monitoring.models import AlertRule
from monitoring.models.rules import PLACEHOLDER


def threshold_text(rule: AlertRule) -> str:
    return format_value(rule.metric, rule.threshold)


def condition_text(rule: AlertRule) -> str:
    metric = REGISTRY.get(rule.metric)
    label = metric.label if metric else rule.metric
    return f"{label} {rule.get_comparison_display()} {threshold_text(rule)}"


def description_text(rule: AlertRule) -> str:
    """The description with {threshold}, {window} and {pending} filled in from the rule as it
    is now, so it never states a threshold the rule no longer has."""
    values = {
        "threshold": threshold_text(rule),
        "window": duration(rule.window_seconds),
        "pending": duration(rule.pending_seconds),
    }
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), rule.description)


def problems(metric_key: str, threshold: float | None) -> dict[str, str]:
    """What the registry says is wrong with a rule's metric and threshold, by field."""
    metric = REGISTRY.get(metric_key)
    if metric is None:
        return {"metric": f"Unknown metric; choose one of {', '.join(sorted(REGISTRY))}."}
    if threshold is not None and metric.maximum is not None and threshold > metric.maximum:
        return {
            "threshold": f"{metric.label} cannot exceed {metric.maximum:g}{metric.unit_suffix}."
        }
    return {}
