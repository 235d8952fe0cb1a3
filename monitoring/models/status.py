"""The public status page's own rows: maintenance windows and one uptime row per component
and day (monitoring.status.rollup writes those; the page reads them)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class PublicComponent(models.TextChoices):
    """What a venue cares about; an alert rule names the one it affects (or none)."""

    ORDERING = "ordering", "Ordering"
    LIVE_UPDATES = "live_updates", "Live order updates"
    NOTIFICATIONS = "notifications", "Notifications"


class MaintenanceWindow(models.Model):
    """Planned work, announced on the status page: its components show "maintenance" while
    it runs, and the time it covers does not count against their uptime."""

    title = models.CharField(max_length=120, help_text="Shown publicly, e.g. Database upgrade.")
    public_text = models.TextField(
        blank=True,
        help_text="Shown publicly: what venues may notice. No hostnames or internal names.",
    )
    components = models.JSONField(
        default=list, help_text="The public components it affects (at least one)."
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["ends_at"], name="maintenance_ends_idx")]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = "The end must be after the start."
        known = set(PublicComponent.values)
        if not isinstance(self.components, list) or not self.components:
            errors["components"] = "Choose at least one component."
        elif set(self.components) - known:
            errors["components"] = f"Unknown component; use {', '.join(sorted(known))}."
        if errors:
            raise ValidationError(errors)


class ComponentDay(models.Model):
    """One component's day (UTC), in seconds: written once the day is over, so the 90-day
    page reads 90 rows per component instead of replaying the incidents."""

    component = models.CharField(max_length=16, choices=PublicComponent.choices)
    day = models.DateField()
    outage_seconds = models.PositiveIntegerField(default=0)
    degraded_seconds = models.PositiveIntegerField(default=0)
    maintenance_seconds = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["component", "day"]
        constraints = [
            models.UniqueConstraint(fields=["component", "day"], name="componentday_one_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.get_component_display()} {self.day}"
