"""Alert rules, their per-scope evaluation state, and the inhibitions between them."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from monitoring.models.status import PublicComponent
from notifications.slack_text import validate_http_url


class Comparison(models.TextChoices):
    GT = "gt", ">"
    GTE = "gte", "≥"
    LT = "lt", "<"
    LTE = "lte", "≤"


COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    Comparison.GT: operator.gt,
    Comparison.GTE: operator.ge,
    Comparison.LT: operator.lt,
    Comparison.LTE: operator.le,
}


# {threshold} and {window} in a rule's description stand for the rule's current values.
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


# What an alert may be grouped by in one Slack message (Alertmanager's group_by labels).
GROUP_LABELS = ("rule", "venue", "severity")


class AlertRule(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(
        blank=True,
        help_text="Shown with the alert. Write {threshold} and {window} rather than numbers: "
        "they follow the rule when its threshold or window changes.",
    )
    metric = models.CharField(max_length=64, help_text="What is measured (see the metric list).")
    comparison = models.CharField(max_length=3, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField()
    window_seconds = models.PositiveIntegerField(
        default=60, help_text="The metric is computed over this many seconds of samples."
    )
    pending_seconds = models.PositiveIntegerField(
        default=0, help_text="How long the condition must hold before the alert fires."
    )
    clear_seconds = models.PositiveIntegerField(
        default=120, help_text="How long the condition must be clear before it resolves."
    )
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    destinations = models.ManyToManyField(
        "notifications.Destination",
        blank=True,
        related_name="alert_rules",
        help_text="Where it is sent; empty means the routes of its notification kind.",
    )
    repeat_interval_seconds = models.PositiveIntegerField(
        default=4 * 3600, help_text="Remind this often while firing and unacknowledged; 0: never."
    )
    escalation_delay_seconds = models.PositiveIntegerField(
        default=15 * 60,
        help_text="Critical only: escalate when still unacknowledged after this long; 0: never.",
    )
    escalation_destination = models.ForeignKey(
        "notifications.Destination",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="escalated_rules",
    )
    flap_threshold = models.PositiveIntegerField(
        default=4, help_text="More opens and resolves than this within the flap window is flapping."
    )
    settle_seconds = models.PositiveIntegerField(
        default=600,
        help_text="A flapping alert that holds one state (firing or clear) this long has "
        "settled: the channel is told which, and a settled firing alert notifies and "
        "escalates as any other.",
    )
    group_by = models.CharField(
        max_length=40,
        blank=True,
        help_text="Alerts that fire together share one Slack message when these are equal: a "
        "comma-separated subset of rule, venue, severity. Empty: every alert of its kind "
        "that fires together in a channel.",
    )
    runbook_url = models.URLField(
        blank=True,
        validators=[validate_http_url],
        help_text="An http(s) link, shown in the alert.",
    )
    public_component = models.CharField(
        max_length=16,
        choices=PublicComponent.choices,
        blank=True,
        help_text="What its incidents affect on the public status page (critical: outage, "
        "warning: degraded); empty: not shown there.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def breaches(self, value: float) -> bool:
        return COMPARATORS[self.comparison](value, self.threshold)

    def group_labels(self) -> list[str]:
        return [label.strip() for label in self.group_by.split(",") if label.strip()]

    def clean(self) -> None:
        """What a rule can be checked for on its own; whether its metric exists and bounds
        its threshold is the metric registry's to say (`monitoring.alerting.rules.validate`,
        which the admin form runs)."""
        errors: dict[str, str] = {}
        if self.threshold is not None and self.threshold < 0:
            errors["threshold"] = "A threshold cannot be negative."
        interval = settings.ALERT_EVALUATION_SECONDS
        if self.window_seconds is not None and self.window_seconds < interval:
            errors["window_seconds"] = (
                f"The window must be at least the evaluation interval ({interval} s), "
                "or some samples would never be looked at."
            )
        unknown = sorted(
            {m.group(0) for m in PLACEHOLDER.finditer(self.description or "")}
            - {"{threshold}", "{window}"}
        )
        if unknown:
            errors["description"] = (
                f"Unknown placeholder {', '.join(unknown)}: use {{threshold}} or {{window}}."
            )
        if self.severity != Severity.CRITICAL and self.escalation_destination_id:
            errors["escalation_destination"] = "Only critical alerts escalate."
        unknown_labels = sorted(set(self.group_labels()) - set(GROUP_LABELS))
        if unknown_labels:
            errors["group_by"] = (
                f"Unknown label {', '.join(unknown_labels)}: use {', '.join(GROUP_LABELS)}."
            )
        if errors:
            raise ValidationError(errors)


class AlertState(models.Model):
    """Where one rule stands for one scope (a venue, or "" for the whole deployment)."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    scope = models.CharField(max_length=64, blank=True, default="")
    breaching_since = models.DateTimeField(null=True, blank=True)
    clear_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "scope"], name="alertstate_rule_scope")
        ]

    def __str__(self) -> str:
        return f"{self.rule} [{self.scope or 'all'}]"


class Inhibition(models.Model):
    """While `source` fires (and for the target's window after, since that window still holds
    the outage), `target` opens incidents as usual but notifies nobody: its cause is known.

    Alertmanager's inhibit rules, as rows an operator can read and edit."""

    source = models.ForeignKey(
        AlertRule,
        on_delete=models.CASCADE,
        related_name="inhibits",
        help_text="The cause: while it fires…",
    )
    target = models.ForeignKey(
        AlertRule,
        on_delete=models.CASCADE,
        related_name="inhibited_by",
        help_text="…this rule's alerts are held back.",
    )
    same_scope = models.BooleanField(
        default=False,
        help_text="Only when the cause fired for the same venue or process (the same scope).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["source__name", "target__name"]
        constraints = [
            models.UniqueConstraint(fields=["source", "target"], name="inhibition_source_target")
        ]

    def __str__(self) -> str:
        return f"{self.source} holds back {self.target}"

    def clean(self) -> None:
        if self.source_id and self.source_id == self.target_id:
            raise ValidationError({"target": "A rule cannot hold back itself."})
