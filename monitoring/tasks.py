from __future__ import annotations

import structlog
from celery import shared_task

from monitoring import pruning, recording, retention

logger = structlog.get_logger(__name__)


@shared_task(name="monitoring.prune_samples")
def prune_samples() -> int:
    deleted = pruning.prune_all_samples()
    logger.info("metric_samples_pruned", deleted=deleted)
    return deleted


@shared_task(name="monitoring.prune_incidents", ignore_result=True)
def prune_incidents() -> dict[str, int]:
    return retention.prune()


@shared_task(name="monitoring.status_rollup", ignore_result=True)
def status_rollup() -> int:
    from monitoring.status import rollup

    return rollup.roll_up()


@shared_task(name="monitoring.trend_rollup", ignore_result=True)
def trend_rollup() -> int:
    from monitoring.dashboard import trends

    return trends.roll_up()


@shared_task(name="monitoring.release_dead_workers", ignore_result=True)
def release_dead_workers() -> int:
    return recording.release_dead_workers()


@shared_task(name="monitoring.check_alerts", ignore_result=True)
def check_alerts() -> int:
    from django.db import DatabaseError

    from monitoring.alerting import direct
    from monitoring.alerting.engine import run_cycle

    try:
        return len(run_cycle().opened)
    except DatabaseError as exc:
        direct.alerter.alert("database", f"{type(exc).__name__}: {exc}")
        return 0


# Named as when it lived in notifications: beat's schedule (and queued tasks) keep working.
@shared_task(name="notifications.health_update", ignore_result=True)
def health_update() -> int:
    from django.conf import settings
    from django.utils import timezone

    from monitoring import notices

    return len(notices.health_update(timezone.now(), settings.HEALTH_UPDATE_SECONDS))
