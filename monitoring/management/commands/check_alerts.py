from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitoring.alerting.engine import run_cycle


class Command(BaseCommand):
    help = "Run one alert evaluation cycle now (the same cycle Celery beat runs)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = run_cycle()
        self.stdout.write(
            f"evaluated {result.evaluated} rule(s): {len(result.opened)} opened, "
            f"{len(result.resolved)} resolved"
        )
        for error in result.errors:
            self.stderr.write(self.style.ERROR(error))
