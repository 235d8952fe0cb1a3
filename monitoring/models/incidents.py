"""Incidents and their append-only timeline."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from monitoring.models.rules import AlertRule, Severity


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
    public_title = models.CharField(
        max_length=120,
        blank=True,
        help_text="Shown on the public status page; empty: a plain sentence for its component.",
    )
    public_summary = models.TextField(
        blank=True,
        help_text="Shown on the public status page: what venues notice and what is being done. "
        "No hostnames, error texts or internal names.",
    )

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
    SILENCED = "silenced", "Silenced"


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
