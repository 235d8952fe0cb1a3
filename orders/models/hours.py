"""When a venue is open: weekly opening hours in the venue's own time zone, and exceptions.

The rules are read by one module (orders.hours), which everything that asks "is it open
now?" uses: the anomaly metrics, the activity rollup, the admin.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


CROSSES_MIDNIGHT = (
    "A closing time at or before the opening time is on the next day (18:00 to 02:00); "
    "00:00 to 00:00 is the whole day."
)


class OpeningHours(models.Model):
    """One service a week: opens on `weekday` at `opens` (local time), closes at `closes`."""

    venue = models.ForeignKey(
        "orders.Venue", on_delete=models.CASCADE, related_name="opening_hours"
    )
    weekday = models.PositiveSmallIntegerField(
        choices=Weekday.choices, help_text="The day the service starts."
    )
    opens = models.TimeField()
    closes = models.TimeField(help_text=CROSSES_MIDNIGHT)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["venue", "weekday", "opens"]
        verbose_name_plural = "opening hours"
        constraints = [
            models.UniqueConstraint(
                fields=["venue", "weekday", "opens"], name="openinghours_one_per_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens:%H:%M}–{self.closes:%H:%M}"  # noqa: RUF001


class OpeningException(models.Model):
    """A date on which the weekly hours do not hold: closed, or open at other hours.

    The services that start on that date are replaced; one that began the evening before
    and runs past midnight into it still ends as usual.
    """

    venue = models.ForeignKey(
        "orders.Venue", on_delete=models.CASCADE, related_name="opening_exceptions"
    )
    date = models.DateField(help_text="The venue's local date.")
    closed = models.BooleanField(
        default=True, help_text="Closed all day; otherwise open only at the hours below."
    )
    opens = models.TimeField(null=True, blank=True)
    closes = models.TimeField(null=True, blank=True, help_text=CROSSES_MIDNIGHT)
    note = models.CharField(max_length=200, blank=True, help_text="e.g. 'Christmas Day'.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["venue", "date", "opens"]
        constraints = [
            models.UniqueConstraint(
                fields=["venue", "date"],
                condition=models.Q(closed=True),
                name="openingexception_one_closed_day",
            ),
            models.UniqueConstraint(
                fields=["venue", "date", "opens"], name="openingexception_one_per_start"
            ),
        ]

    def __str__(self) -> str:
        if self.closed:
            return f"{self.date}: closed"
        return f"{self.date}: {self.opens:%H:%M}–{self.closes:%H:%M}"  # noqa: RUF001

    def clean(self) -> None:
        if self.closed and (self.opens is not None or self.closes is not None):
            raise ValidationError(
                {"closed": "A day closed all day has no hours: clear them, or untick closed."}
            )
        if not self.closed:
            missing = {
                name: "Give the hours of that day, or tick closed."
                for name in ("opens", "closes")
                if getattr(self, name) is None
            }
            if missing:
                raise ValidationError(missing)
