from django.db import migrations

# The shipped "Venue tickets nobody takes" rule (a frozen copy: a migration must not follow
# later edits of orders.anomaly.defaults), held back while the database is down, as the other
# venue rules.
RULE = {
    "name": "Venue tickets nobody takes",
    "metric": "venue.oldest_waiting_ratio",
    "comparison": "gt",
    "threshold": 6,
    "window_seconds": 300,
    "severity": "warning",
    "group_by": "rule",
    "description": "An order has waited to be taken more than {threshold} times as long "
    "as this venue usually takes at this hour, and nobody has taken it.",
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
        ("orders", "0010_venue_surge_rule"),
        ("monitoring", "0026_process_rules_after_the_soak"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
