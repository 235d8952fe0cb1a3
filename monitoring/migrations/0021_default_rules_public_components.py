from django.db import migrations

# A frozen copy of monitoring.alerting.defaults.DEFAULT_PUBLIC_COMPONENTS as shipped with
# this migration (the live one may change; a migration must not).
PUBLIC_COMPONENTS = {
    "HTTP errors critical": "ordering",
    "HTTP errors elevated": "ordering",
    "Slow responses": "ordering",
    "API server down": "ordering",
    "Database connection lost": "ordering",
    "High error rate": "live_updates",
    "Elevated error rate": "live_updates",
    "Disconnection spike": "live_updates",
    "WebSocket latency": "live_updates",
    "Redis unreachable": "live_updates",
    "Slack delivery failing": "notifications",
    "Notifications waiting": "notifications",
}


def forwards(apps, schema_editor):
    from monitoring.alerting.defaults import assign_public_components

    assign_public_components(apps.get_model("monitoring", "AlertRule"), PUBLIC_COMPONENTS)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0020_public_status_page")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
