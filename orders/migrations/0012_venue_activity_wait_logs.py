"""The sums of the logs of the kitchen's waits (and of their squares) in each quarter hour's
activity row, filled in for the rows already written: the spread of a venue's waits is
then known at once, not only after weeks of new rows."""

import math
from collections import defaultdict
from datetime import timedelta

from django.db import migrations, models

SLOT_SECONDS = 900  # a frozen copy of orders.models.activity's
DAY = timedelta(days=1)


def fill_in(apps, schema_editor):
    activity = apps.get_model("orders", "VenueActivity")
    order = apps.get_model("orders", "Order")
    taken = activity.objects.filter(accepted__gt=0)
    first = taken.order_by("starts_at").values_list("starts_at", flat=True).first()
    last = taken.order_by("-starts_at").values_list("starts_at", flat=True).first()
    if first is None:
        return
    start = first
    while start <= last:
        end = start + DAY
        sums = defaultdict(lambda: [0.0, 0.0])
        for venue, created, accepted in order.objects.filter(
            created_at__gte=start, created_at__lt=end, accepted_at__isnull=False
        ).values_list("venue_id", "created_at", "accepted_at"):
            quarter = int(created.timestamp()) // SLOT_SECONDS
            log = math.log(max((accepted - created).total_seconds(), 1.0))
            kept = sums[(venue, quarter)]
            kept[0] += log
            kept[1] += log * log
        rows = list(taken.filter(starts_at__gte=start, starts_at__lt=end))
        for row in rows:
            kept = sums.get((row.venue_id, int(row.starts_at.timestamp()) // SLOT_SECONDS))
            if kept is not None:
                row.accept_log_sum, row.accept_log_squares = kept
        activity.objects.bulk_update(
            rows, ["accept_log_sum", "accept_log_squares"], batch_size=2000
        )
        start = end


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0011_venue_tickets_rule"),
    ]

    operations = [
        migrations.AddField(
            model_name="venueactivity",
            name="accept_log_squares",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="venueactivity",
            name="accept_log_sum",
            field=models.FloatField(default=0.0),
        ),
        migrations.RunPython(fill_in, migrations.RunPython.noop),
    ]
