from django.db import migrations


def add_rules(apps, schema_editor):
    from orders.anomaly.defaults import create_venue_rules

    create_venue_rules(
        apps.get_model("monitoring", "AlertRule"), apps.get_model("monitoring", "Inhibition")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_anomaly_detection"),
        ("monitoring", "0025_trend_rollup"),
    ]

    operations = [migrations.RunPython(add_rules, migrations.RunPython.noop)]
