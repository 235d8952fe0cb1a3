from django.db import migrations


def forwards(apps, schema_editor):
    from monitoring.alerting.defaults import create_default_rules

    create_default_rules(apps.get_model("monitoring", "AlertRule"))


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_alerting")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
