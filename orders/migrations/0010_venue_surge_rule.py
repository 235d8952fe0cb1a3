from django.db import migrations

# The shipped "Venue order surge" rule (a frozen copy: a migration must not follow later edits
# of orders.anomaly.defaults), held back while the database is down, as the other venue rules.
RULE = {
    "name": "Venue order surge",
    "metric": "venue.order_surge_chance",
    "comparison": "lt",
    "threshold": 0.0001,
    "window_seconds": 3600,
    "severity": "warning",
    "group_by": "rule",
    "description": "The orders of a window from the last 10 minutes to the last {window} "
    "look like three times what this venue usually gets at this hour on this weekday "
    "(chance of a usual evening looking so under {threshold}): the kitchen may need hands.",
}


def forwards(apps, schema_editor):
    rules = apps.get_model("monitoring", "AlertRule")
    inhibition = apps.get_model("monitoring", "Inhibition")
    rule, _ = rules.objects.get_or_create(name=RULE["name"], defaults=RULE)
    for source in rules.objects.filter(metric="dependency.database_down"):
        inhibition.objects.get_or_create(source=source, target=rule)


def backwards(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(
        name=RULE["name"], metric=RULE["metric"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0009_order_keys_database_default"),
        ("monitoring", "0026_process_rules_after_the_soak"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
