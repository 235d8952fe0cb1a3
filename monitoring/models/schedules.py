"""When alerts notify nobody (silences, maintenance windows) and who is on call."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from inkwave.lib.timezones import validate_timezone
from monitoring.models.rules import AlertRule, Severity
from notifications.slack_text import Mrkdwn, escape_text

# A Slack member id: the only thing an escalation ever puts in a mention.
SLACK_USER_ID_PATTERN = r"^[UW][A-Z0-9]{2,31}$"
SLACK_USER_ID = RegexValidator(
    SLACK_USER_ID_PATTERN, "A Slack member id such as U012AB3CD (profile → Copy member ID)."
)


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
