"""The venue rules shipped with the system (by a data migration), at the lines the benchmark
chose (bench/anomaly.py: recall against false alerts on synthetic weeks with known anomalies).

They stay quiet until a venue has three weeks of history at the hour in question, and never
speak for a venue that is closed, inactive or just opened. Each groups its alerts by rule,
so a platform-wide event (every venue's orders stop at once) is one Slack message per rule.
"""

from __future__ import annotations

from typing import Any

VENUE_RULES: list[dict[str, Any]] = [
    {
        "name": "Venue orders stopped",
        "metric": "venue.orders_silence_chance",
        "comparison": "lt",
        "threshold": 0.01,
        "window_seconds": 300,
        "severity": "critical",
        "group_by": "rule",
        "description": "No order for so long that a usual evening at this venue, at today's "
        "pace, would go this quiet with a chance under {threshold}: its ordering may be "
        "broken (a menu link, a payment page, the tablets).",
    },
    {
        "name": "Venue order volume unusual",
        "metric": "venue.order_volume_chance",
        "comparison": "lt",
        "threshold": 0.001,
        "window_seconds": 3600,
        "severity": "warning",
        "group_by": "rule",
        "description": "The orders of a window from the last 10 minutes to the last {window} "
        "are far above or below what this venue usually gets at this hour on this weekday "
        "(chance under {threshold}, allowing for the several windows looked at).",
    },
    {
        "name": "Venue order surge",
        "metric": "venue.order_surge_chance",
        "comparison": "lt",
        "threshold": 0.1,
        "window_seconds": 3600,
        # Resolved after 10 minutes under the line, not 2: a surge's own tail, its window
        # still holding the rush, does not open a second incident (bench/README.md).
        "clear_seconds": 600,
        "severity": "warning",
        "group_by": "rule",
        "description": "The orders of a window from the last 10 minutes to the last {window} "
        "look like three times what this venue usually gets at this hour on this weekday "
        "(chance of a usual evening looking so under {threshold}): the kitchen may need hands.",
    },
    {
        "name": "Venue kitchen screens dark",
        "metric": "venue.screens_online",
        "comparison": "lt",
        "threshold": 1,
        "window_seconds": 300,
        "severity": "critical",
        "group_by": "rule",
        "description": "No kitchen screen connected for {window} at a venue that is open and "
        "usually has one on at this hour: new orders are not being seen.",
    },
    {
        "name": "Venue kitchen falling behind",
        "metric": "venue.kitchen_slowdown_evidence",
        "comparison": "gt",
        "threshold": 9,
        "window_seconds": 300,
        "severity": "warning",
        "group_by": "rule",
        "description": "The waits of this venue's orders since some moment in the last hour "
        "(those taken, and those still waiting) point to a kitchen three times slower than its "
        "usual, at over {threshold}: guests are waiting.",
    },
    # The two below are shipped switched off: the rule above finds what they find, sooner
    # and with fewer false alerts (bench/README.md, "Venue anomalies"). Turn one on in the
    # admin to have its plainer reading too.
    {
        "name": "Venue kitchen slow to take orders",
        "enabled": False,
        "metric": "venue.accept_time_ratio",
        "comparison": "gt",
        "threshold": 2.5,
        "window_seconds": 900,
        "severity": "warning",
        "group_by": "rule",
        "description": "Orders of the last {window} wait to be taken more than {threshold} "
        "times as long as usual at this venue.",
    },
    {
        "name": "Venue order not taken",
        "metric": "venue.oldest_waiting_minutes",
        "comparison": "gt",
        "threshold": 20,
        "window_seconds": 300,
        "severity": "warning",
        "group_by": "rule",
        "description": "An order has waited more than {threshold} minutes and nobody has taken it.",
    },
    {
        "name": "Venue tickets nobody takes",
        "enabled": False,
        "metric": "venue.oldest_waiting_ratio",
        "comparison": "gt",
        "threshold": 6,
        "window_seconds": 300,
        "severity": "warning",
        "group_by": "rule",
        "description": "An order has waited to be taken more than {threshold} times as long "
        "as this venue usually takes at this hour, and nobody has taken it.",
    },
    {
        "name": "Venue payment failures",
        "metric": "venue.payment_failure_chance",
        "comparison": "lt",
        "threshold": 0.1,
        "window_seconds": 900,
        "severity": "warning",
        "group_by": "rule",
        "description": "More payments failed over {window} than this venue's usual rate or "
        "the other venues' rate now would explain (chance under {threshold}).",
    },
]

# What each needs to mean anything: held back while that dependency's alert fires.
NEEDS = {
    "venue.orders_silence_chance": ("database",),
    "venue.order_volume_chance": ("database",),
    "venue.order_surge_chance": ("database",),
    "venue.screens_online": ("database", "redis"),
    "venue.accept_time_ratio": ("database",),
    "venue.kitchen_slowdown_evidence": ("database",),
    "venue.oldest_waiting_minutes": ("database",),
    "venue.oldest_waiting_ratio": ("database",),
    "venue.payment_failure_chance": ("database",),
}


def create_venue_rules(rule_model: Any, inhibition_model: Any) -> None:
    """The rules (an operator's edits to one already there are kept) and their inhibitions."""
    for spec in VENUE_RULES:
        rule, _ = rule_model.objects.get_or_create(name=spec["name"], defaults=spec)
        for dependency in NEEDS[spec["metric"]]:
            for source in rule_model.objects.filter(metric=f"dependency.{dependency}_down"):
                inhibition_model.objects.get_or_create(source=source, target=rule)
