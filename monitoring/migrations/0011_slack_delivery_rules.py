from django.db import migrations


def add_default_rules(apps, schema_editor):
    """Ship "Slack delivery failing" and "Notifications waiting" (rules already there stay)."""
    from monitoring.alerting.defaults import create_default_rules

    create_default_rules(apps.get_model("monitoring", "AlertRule"))


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0010_slack_safe_fields"),
    ]

    operations = [
        migrations.RunPython(add_default_rules, migrations.RunPython.noop),
    ]
