from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        # Celery's worker and beat report heartbeats (the signals only fire in those processes).
        import monitoring.heartbeat  # noqa: F401
        from monitoring import flusher
        from monitoring.alerting import direct, metrics

        # The sampler reports a failed flush; the direct alerter is what listens.
        flusher.hooks.dependency_down = direct.on_dependency_down
        flusher.hooks.flushed = direct.on_flushed
        # The metric registry is filled before any rule is shown or evaluated.
        assert metrics.REGISTRY

        from django.db.backends.signals import connection_created

        from monitoring.middleware import install_query_timer

        # Every database connection times its queries for the request (or task) that runs them.
        connection_created.connect(install_query_timer, dispatch_uid="monitoring.query_timer")

        from monitoring import retention

        # Its tables' prunes, and what open incidents keep in the outbox (a sink that
        # imports no other app learns it through this hook).
        retention.register()
