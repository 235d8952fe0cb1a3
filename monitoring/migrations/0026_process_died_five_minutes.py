from django.db import migrations

# "Process died" looked back 15 minutes: a process killed and replaced at once kept its
# incident open for 15 minutes after the service had recovered. Rules still at the shipped
# window look back 5 minutes now; one an operator changed is left as it is.
OLD_WINDOW, NEW_WINDOW = 900, 300


def forwards(apps, schema_editor):
    rules = apps.get_model("monitoring", "AlertRule").objects
    rules.filter(metric="workers.crashed", window_seconds=OLD_WINDOW).update(
        window_seconds=NEW_WINDOW
    )


def backwards(apps, schema_editor):
    rules = apps.get_model("monitoring", "AlertRule").objects
    rules.filter(metric="workers.crashed", window_seconds=NEW_WINDOW).update(
        window_seconds=OLD_WINDOW
    )


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0025_trend_rollup")]

    operations = [migrations.RunPython(forwards, backwards)]
