"""What a venue did in each quarter hour: the compact rows its baseline is read from."""

from __future__ import annotations

from django.db import models

# Quarter hours in a week: a row's slot is its local weekday * 96 + its quarter of the day.
SLOTS_PER_DAY = 96
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY
SLOT_SECONDS = 900


class VenueActivity(models.Model):
    """One venue, one quarter hour (UTC-aligned; every time zone's offset is a multiple of
    15 minutes, so it is a local quarter hour too).

    Written by orders.activity for every quarter hour the venue was open, with zeros, and
    for any other that saw an order or a screen. The baseline of "this weekday at this
    time" is then one indexed query on (week_slot, starts_at): the same local slot in each
    of the past weeks, whatever the time zone or its daylight saving changes.
    """

    venue = models.ForeignKey("orders.Venue", on_delete=models.CASCADE, related_name="+")
    starts_at = models.DateTimeField()
    week_slot = models.PositiveSmallIntegerField(
        help_text="Local weekday (Monday 0) * 96 + local quarter of the day."
    )
    open = models.BooleanField(help_text="Open by its hours for the whole quarter hour.")
    orders = models.PositiveIntegerField(default=0)
    # Of those orders: how many the kitchen took, and their summed seconds from placed.
    accepted = models.PositiveIntegerField(default=0)
    accept_seconds = models.FloatField(default=0.0)
    # ... and the sums of the natural logs of those seconds and of their squares (a second
    # at least): the spread of the kitchen's waits, not only their mean.
    accept_log_sum = models.FloatField(default=0.0)
    accept_log_squares = models.FloatField(default=0.0)
    payments_paid = models.PositiveIntegerField(default=0)
    payments_failed = models.PositiveIntegerField(default=0)
    # The most screens one web process held for the venue in the quarter hour (0: none).
    screens = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "venue activity"
        constraints = [
            models.UniqueConstraint(fields=["venue", "starts_at"], name="venueactivity_quarter")
        ]
        indexes = [
            models.Index(fields=["week_slot", "starts_at"], name="venueactivity_slot_idx"),
            models.Index(fields=["starts_at"], name="venueactivity_starts_idx"),
        ]

    def __str__(self) -> str:
        return f"venue {self.venue_id} @ {self.starts_at:%Y-%m-%d %H:%M}: {self.orders}"
