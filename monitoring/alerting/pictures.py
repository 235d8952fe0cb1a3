"""Charts of alerting: a rule's replayed week (the preview) and the metric around an incident.

Both read the metric's history from the registry (metrics.py: one value per evaluation step,
as the engine computes it, replay.py), so the picture shows what the engine saw; neither
computes a metric of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from inkwave.lib.formats import duration
from monitoring.alerting.metrics import REGISTRY, Metric
from monitoring.alerting.preview import PREVIEW_DAYS, Preview
from monitoring.alerting.rules import threshold_text
from monitoring.charts import ChartSpec, Mark, Span, Threshold, chart_unit, epoch, spec
from monitoring.models import AlertRule, Incident

# The incident chart starts this long before the incident opened: what led up to it.
LEAD = timedelta(hours=1)
# ... and shows at most this much (an incident left open for weeks is drawn from its start).
LONGEST = timedelta(days=PREVIEW_DAYS)

_OPPOSITE = {"gt": "≤", "gte": "<", "lt": "≥", "lte": ">"}


def thresholds(rule: AlertRule) -> list[Threshold]:
    """The firing line and the clearing line. A rule clears when its value no longer breaches
    the threshold for clear_seconds, so both sit at the threshold; each label says which side
    does what."""
    value = threshold_text(rule)
    pending = f" for {duration(rule.pending_seconds)}" if rule.pending_seconds else ""
    clear = f" for {duration(rule.clear_seconds)}" if rule.clear_seconds else ""
    return [
        Threshold(
            label=f"fires {rule.get_comparison_display()} {value}{pending}",
            value=rule.threshold,
            kind="fire",
        ),
        Threshold(
            label=f"clears {_OPPOSITE[rule.comparison]} {value}{clear}",
            value=rule.threshold,
            kind="clear",
        ),
    ]


def _title(metric: Metric) -> str:
    return f"{metric.label} ({metric.unit})" if metric.unit else metric.label


def preview_chart(rule: AlertRule, result: Preview) -> ChartSpec | None:
    """The replayed metric, the rule's thresholds and the incidents it would have opened,
    all from the one replay that fills the preview's table."""
    metric = REGISTRY.get(rule.metric)
    if metric is None or not result.supported:
        return None
    spans = [
        Span(
            start=epoch(incident.opened_at),
            end=epoch(incident.resolved_at) if incident.resolved_at else None,
            label=f"would have opened, peak {incident.peak_text}",
        )
        for incident in result.incidents
        if incident.scope == result.shown_scope
    ]
    return spec(
        _title(metric),
        chart_unit(metric.unit),
        result.series,
        f"{metric.label} over {duration(rule.window_seconds)}",
        thresholds=thresholds(rule),
        spans=spans,
    )


def incident_period(incident: Incident, now: datetime | None = None) -> tuple[datetime, datetime]:
    """From an hour before it opened to its resolution (or now, while it is open)."""
    start = incident.opened_at - LEAD
    end = incident.resolved_at or now or timezone.now()
    return start, min(end, start + LONGEST)


def incident_chart(incident: Incident, now: datetime | None = None) -> ChartSpec | None:
    """The rule's metric around the incident, the threshold, the incident as a shaded span
    and its timeline (the history rows) as marks. None when the metric has no history to
    draw: a live check, or a per-venue value whose history is the whole deployment's."""
    rule = incident.rule
    metric = REGISTRY.get(rule.metric)
    if metric is None:
        return None
    start, end = incident_period(incident, now)
    if metric.scoped_history is not None and incident.scope:
        scoped = metric.scoped_history(start, end, rule.window_seconds, [incident.scope])
        points = scoped.get(incident.scope, [])
    elif metric.history is not None and not (metric.per_venue and incident.scope):
        points = metric.history(start, end, rule.window_seconds)
    else:
        return None
    resolved = incident.resolved_at
    span = Span(
        start=epoch(incident.opened_at),
        end=epoch(resolved) if resolved else None,
        label="incident",
    )
    marks = [
        Mark(at=epoch(event.at), label=event.get_kind_display())
        for event in incident.events.filter(at__gte=start, at__lte=end).order_by("at", "pk")
    ]
    return spec(
        _title(metric),
        chart_unit(metric.unit),
        points,
        f"{metric.label} over {duration(rule.window_seconds)}",
        thresholds=thresholds(rule),
        spans=[span],
        marks=marks,
    )
