from django.db import migrations


def forwards(apps, schema_editor):
    from notifications.defaults import create_default_routes

    create_default_routes(
        apps.get_model("notifications", "Destination"), apps.get_model("notifications", "Route")
    )


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
