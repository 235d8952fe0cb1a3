"""Celery processes report like web processes do, so a silent worker or beat is noticed.

The worker's main process and the beat process each run the same flusher thread as a web
process (with nothing to count, its samples are heartbeats with memory figures); the
"Process stopped reporting" rule then sees a worker or beat that died.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from monitoring.flusher import start_flusher, stop_flusher
from monitoring.models import WorkerRole


@signals.worker_ready.connect
def _worker_ready(**kwargs: Any) -> None:
    start_flusher(role=WorkerRole.CELERY)


@signals.beat_init.connect
def _beat_init(**kwargs: Any) -> None:
    start_flusher(role=WorkerRole.BEAT)


@signals.worker_shutdown.connect
def _worker_shutdown(**kwargs: Any) -> None:
    stop_flusher()
