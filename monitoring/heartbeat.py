"""Celery processes report like web processes do, so a silent worker or beat is noticed.

The worker's main process and the beat process each run the same flusher thread as a web
process (with nothing to count, its samples are heartbeats with memory figures); the
"Process stopped reporting" rule then sees a worker or beat that died.
"""

from __future__ import annotations

from typing import Any

from celery import signals
from celery.platforms import EX_OK

from inkwave import shutdown
from monitoring.flusher import start_flusher, stop_flusher
from monitoring.models import WorkerRole


@signals.worker_ready.connect
def _worker_ready(**kwargs: Any) -> None:
    start_flusher(role=WorkerRole.CELERY)


@signals.beat_init.connect
def _beat_init(**kwargs: Any) -> None:
    # Beat's SIGTERM/SIGINT handlers are installed by now; a stop without one is a crash.
    shutdown.watch_signals()
    start_flusher(role=WorkerRole.BEAT)


@signals.worker_shutting_down.connect
def _worker_shutting_down(**kwargs: Any) -> None:
    """A shutdown signal (SIGTERM, SIGINT, SIGQUIT), warm or cold: an intended stop."""
    shutdown.request()


@signals.worker_shutdown.connect
def _worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    # `celery control shutdown` (or a stop() in process) ends with EX_OK; an "Unrecoverable error"
    # stops it with EX_FAILURE, which must not read as a stop.
    if getattr(sender, "exitcode", None) in (None, EX_OK):
        shutdown.request()
    stop_flusher()
