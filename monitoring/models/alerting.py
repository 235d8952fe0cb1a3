"""Alert rules, their per-scope evaluation state, incidents and their append-only history."""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from inkwave.lib.timezones import validate_timezone
from notifications.slack_text import Mrkdwn, escape_text, validate_http_url

# A Slack member id: the only thing an escalation ever puts in a mention.
SLACK_USER_ID_PATTERN = r"^[UW][A-Z0-9]{2,31}$"
SLACK_USER_ID = RegexValidator(
    SLACK_USER_ID_PATTERN, "A Slack member id such as U012AB3CD (profile → Copy member ID)."
)


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


class IncidentStatus(models.TextChoices):
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


class Incident(models.Model):
    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="incidents")
    scope = models.CharField(max_length=64, blank=True, default="")
    title = models.CharField(max_length=300)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    status = models.CharField(
        max_length=8, choices=IncidentStatus.choices, default=IncidentStatus.FIRING
    )
    flapping = models.BooleanField(default=False)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    occurrences = models.PositiveIntegerField(default=1)
    first_value = models.FloatField()
    peak_value = models.FloatField()
    last_value = models.FloatField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_notified_at = models.DateTimeField(null=True, blank=True)
    announced_at = models.DateTimeField(
        null=True, blank=True, help_text="When Slack was first told; escalation counts from here."
    )
    escalated_at = models.DateTimeField(null=True, blank=True)
    notification = models.ForeignKey(
        "notifications.Notification",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The Slack message that announced it; replies thread under it.",
    )
    postmortem = models.TextField(blank=True, help_text="What happened, why, and what changes.")

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "scope"],
                condition=models.Q(status="firing"),
                name="incident_one_firing_per_rule_scope",
            )
        ]
        indexes = [models.Index(fields=["status", "-opened_at"], name="incident_status_idx")]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status == IncidentStatus.FIRING


class IncidentEventKind(models.TextChoices):
    OPENED = "opened", "Opened"
    RESOLVED = "resolved", "Resolved"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    REMINDED = "reminded", "Reminder sent"
    ESCALATED = "escalated", "Escalated"
    FLAPPING = "flapping", "Marked flapping"
    SETTLED = "settled", "Stopped flapping"
    SUPPRESSED = "suppressed", "Notification suppressed"
    NOTIFIED = "notified", "Notified"
    NOTE = "note", "Note"


class IncidentEvent(models.Model):
    """The incident's timeline: append-only, never edited."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16, choices=IncidentEventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField(blank=True)
    notification = models.ForeignKey(
        "notifications.Notification",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="incident_events",
    )

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["incident", "at"], name="incidentevent_timeline_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} @ {self.at:%Y-%m-%d %H:%M:%S}"

    @property
    def who(self) -> str:
        return self.actor.get_username() if self.actor else "alerting engine"


class Silence(models.Model):
    """Suppresses notifications (never the incident record) for matching alerts.

    One-off: starts_at..ends_at. Recurring (a maintenance window): on the given weekdays
    from start_time to end_time in `timezone`; an end before the start crosses midnight.
    """

    reason = models.CharField(max_length=200)
    rule = models.ForeignKey(
        AlertRule,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="silences",
        help_text="Empty: every rule.",
    )
    severity = models.CharField(
        max_length=8, choices=Severity.choices, blank=True, help_text="Empty: every severity."
    )
    scope = models.CharField(max_length=64, blank=True, help_text="A venue id; empty: all.")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    weekdays = models.CharField(
        max_length=20, blank=True, help_text="Recurring: days as numbers, Monday=0, e.g. 0,1,2,3,4."
    )
    start_time = models.TimeField(null=True, blank=True)
    end_time = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    summarized_until = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="The end of the last window whose summary (what changed while it was on) "
        "was sent.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.reason

    @property
    def recurring(self) -> bool:
        return bool(self.weekdays)

    def days(self) -> set[int]:
        return {int(day) for day in self.weekdays.split(",") if day.strip()}

    def clean(self) -> None:
        if self.recurring:
            try:
                days = self.days()
            except ValueError:
                raise ValidationError(
                    {"weekdays": "Numbers 0 (Monday) to 6, comma-separated."}
                ) from None
            if not days or not days <= set(range(7)):
                raise ValidationError({"weekdays": "Numbers 0 (Monday) to 6, comma-separated."})
            if self.start_time is None or self.end_time is None:
                raise ValidationError("A recurring window needs a start time and an end time.")
            if self.start_time == self.end_time:
                raise ValidationError({"end_time": "The window must not be empty."})
        else:
            if self.starts_at is None or self.ends_at is None:
                raise ValidationError("Give a start and an end, or weekdays and times.")
            if self.ends_at <= self.starts_at:
                raise ValidationError({"ends_at": "The end must come after the start."})

    def active_at(self, moment: dt.datetime) -> bool:
        if not self.recurring:
            return bool(self.starts_at and self.ends_at and self.starts_at <= moment < self.ends_at)
        assert self.start_time is not None
        assert self.end_time is not None
        local = moment.astimezone(ZoneInfo(self.timezone))
        now, days = local.time(), self.days()
        if self.start_time < self.end_time:
            return local.weekday() in days and self.start_time <= now < self.end_time
        # Crosses midnight: the evening belongs to its day, the early hours to the day before.
        if now >= self.start_time:
            return local.weekday() in days
        if now < self.end_time:
            return (local.weekday() - 1) % 7 in days
        return False

    def windows_ended(
        self, after: dt.datetime, until: dt.datetime
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """The windows (start, end) of this silence that ended in (after, until], oldest first."""
        if not self.recurring:
            if self.starts_at and self.ends_at and after < self.ends_at <= until:
                return [(self.starts_at, self.ends_at)]
            return []
        assert self.start_time is not None
        assert self.end_time is not None
        zone = ZoneInfo(self.timezone)
        found = []
        day = (after.astimezone(zone) - dt.timedelta(days=1)).date()
        last = until.astimezone(zone).date()
        while day <= last:
            if day.weekday() in self.days():
                start = dt.datetime.combine(day, self.start_time, tzinfo=zone)
                end_day = day if self.start_time < self.end_time else day + dt.timedelta(days=1)
                end = dt.datetime.combine(end_day, self.end_time, tzinfo=zone)
                if after < end <= until:
                    found.append((start, end))
            day += dt.timedelta(days=1)
        return found

    def matches(self, rule: AlertRule, scope: str) -> bool:
        return (
            (self.rule_id is None or self.rule_id == rule.pk)
            and (not self.severity or self.severity == rule.severity)
            and (not self.scope or self.scope == scope)
        )


class OnCallShift(models.Model):
    """Who is on call when: escalations mention the person on shift."""

    person = models.CharField(max_length=100)
    slack_user_id = models.CharField(
        max_length=32, blank=True, validators=[SLACK_USER_ID], help_text="U… to @-mention them."
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()

    class Meta:
        ordering = ["starts_at"]
        verbose_name = "on-call shift"

    def __str__(self) -> str:
        return f"{self.person} {self.starts_at:%Y-%m-%d %H:%M} → {self.ends_at:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The shift must end after it starts."})

    @property
    def mention(self) -> Mrkdwn:
        """`<@U…>` for a valid member id (checked again: rows may predate the validator)."""
        if re.fullmatch(SLACK_USER_ID_PATTERN, self.slack_user_id):
            return Mrkdwn(f"<@{self.slack_user_id}>")
        return escape_text(self.person)

    @classmethod
    def on_call(cls, moment: dt.datetime) -> OnCallShift | None:
        return (
            cls.objects.filter(starts_at__lte=moment, ends_at__gt=moment)
            .order_by("-starts_at")
            .first()
        )
