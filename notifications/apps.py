from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import retention
        from notifications.defaults import fill_destinations_from_environment

        post_migrate.connect(fill_destinations_from_environment, sender=self)
        retention.register()
