from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        # Celery's worker and beat report heartbeats (the signals only fire in those processes).
        import monitoring.heartbeat  # noqa: F401
