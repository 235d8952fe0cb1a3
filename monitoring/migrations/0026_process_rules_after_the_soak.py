from django.db import migrations

# What the soak (bench/soak.py) found in two process rules, for rules still as shipped (one an
# operator changed is left as it is):
# - "Process died" looked back 15 minutes: a process killed and replaced at once kept its
#   incident open 15 minutes after the service had recovered. It looks back 5 now.
# - "Process stopped reporting" fired on a supervised restart when the evaluation fell between
#   the dead process's liveness running out and its replacement's first report (a few
#   seconds). It waits a minute now: a process not replaced within a minute.
DIED_WINDOW = (900, 300)
MISSING_PENDING = (0, 60)


def _move(apps, old, new):
    """Rules still at the `old` value (an index into each pair) take the `new` one."""
    rules = apps.get_model("monitoring", "AlertRule").objects
    rules.filter(metric="workers.crashed", window_seconds=DIED_WINDOW[old]).update(
        window_seconds=DIED_WINDOW[new]
    )
    rules.filter(metric="workers.missing", pending_seconds=MISSING_PENDING[old]).update(
        pending_seconds=MISSING_PENDING[new]
    )


def forwards(apps, schema_editor):
    _move(apps, 0, 1)


def backwards(apps, schema_editor):
    _move(apps, 1, 0)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0025_trend_rollup")]

    operations = [migrations.RunPython(forwards, backwards)]
