from django.db import migrations

# What the HTTP metrics need (frozen here: the registry may change after this migration).
HTTP_DEPENDENCIES = {
    "http.error_rate": ("database",),
    "http.avg_response_ms": ("database",),
    "http.slow_queries": ("database",),
}


def add_default_rules(apps, schema_editor):
    from monitoring.alerting.defaults import create_default_inhibitions, create_default_rules

    AlertRule = apps.get_model("monitoring", "AlertRule")
    create_default_rules(AlertRule)
    create_default_inhibitions(
        AlertRule, apps.get_model("monitoring", "Inhibition"), HTTP_DEPENDENCIES
    )


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0017_request_samples")]

    operations = [migrations.RunPython(add_default_rules, migrations.RunPython.noop)]
