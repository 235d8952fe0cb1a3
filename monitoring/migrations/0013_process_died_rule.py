from django.db import migrations


def add_default_rules(apps, schema_editor):
    from monitoring.alerting.defaults import create_default_rules

    create_default_rules(apps.get_model("monitoring", "AlertRule"))


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0012_dead_workers")]

    operations = [migrations.RunPython(add_default_rules, migrations.RunPython.noop)]
