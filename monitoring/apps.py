from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        # Celery's worker and beat report heartbeats (the signals only fire in those processes).
        import monitoring.heartbeat  # noqa: F401
        from monitoring import retention

        # Its tables' prunes, and what open incidents keep in the outbox (a sink that
        # imports no other app learns it through this hook).
        retention.register()
