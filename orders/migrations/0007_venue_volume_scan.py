from django.db import migrations

# The shipped "Venue order volume unusual" rule before and after the volume metric became a
# scan of several windows (frozen copies: a migration must not follow later edits of
# orders.anomaly.defaults). A rule still at the old line and window, or the old description,
# is moved to the new; an operator's edited values are left alone.
NAME = "Venue order volume unusual"
METRIC = "venue.order_volume_chance"
OLD = {"threshold": 0.001, "window_seconds": 1800}
NEW = {"threshold": 0.001, "window_seconds": 3600}
OLD_DESCRIPTION = (
    "The orders of the last {window} are far above or below what this venue usually gets at "
    "this hour on this weekday (chance under {threshold})."
)
NEW_DESCRIPTION = (
    "The orders of a window from the last 10 minutes to the last {window} are far above or "
    "below what this venue usually gets at this hour on this weekday (chance under "
    "{threshold}, allowing for the several windows looked at)."
)


def move(apps, old, new, old_description, new_description):
    rules = apps.get_model("monitoring", "AlertRule").objects.filter(name=NAME, metric=METRIC)
    rules.filter(**old).update(**new)
    rules.filter(description=old_description).update(description=new_description)


def forwards(apps, schema_editor):
    move(apps, OLD, NEW, OLD_DESCRIPTION, NEW_DESCRIPTION)


def backwards(apps, schema_editor):
    move(apps, NEW, OLD, NEW_DESCRIPTION, OLD_DESCRIPTION)


class Migration(migrations.Migration):
    dependencies = [("orders", "0006_venue_rules")]

    operations = [migrations.RunPython(forwards, backwards)]
