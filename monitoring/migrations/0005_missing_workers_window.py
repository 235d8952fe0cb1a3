from django.db import migrations


def forwards(apps, schema_editor):
    # The rule now resolves when the process is replaced, so it watches a day, not 15 minutes.
    apps.get_model("monitoring", "AlertRule").objects.filter(
        name="Process stopped reporting", metric="workers.missing", window_seconds=900
    ).update(window_seconds=86400)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0004_beat_role")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
