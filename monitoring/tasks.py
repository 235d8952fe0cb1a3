from __future__ import annotations

import structlog
from celery import shared_task

from monitoring import pruning

logger = structlog.get_logger(__name__)


@shared_task(name="monitoring.prune_samples")
def prune_samples() -> int:
    deleted = pruning.prune_samples()
    logger.info("metric_samples_pruned", deleted=deleted)
    return deleted
