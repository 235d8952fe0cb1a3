"""The project's Celery app with two tasks that fail, for tests/test_sentry.py's real worker.

`celery -A tests.sentry_celery worker`: the worker loads the settings (and so Sentry) as
production's does; the tasks fail with secrets in their arguments, locals and messages.
"""

from __future__ import annotations

import structlog

from inkwave.celery import app

__all__ = ["app"]

logger = structlog.get_logger(__name__)


class DeliveryFailedError(RuntimeError):
    pass


@app.task(name="tests.sentry.escapes")
def escapes(venue_id: int, destination: str, bot: str, device: str, password: str) -> None:
    """Fails, and leaves the exception to Celery: the Celery integration reports it. The
    arguments are a webhook URL, a Slack token and a venue token under names that do not
    give them away."""
    raise DeliveryFailedError(
        f"venue {venue_id}: {destination} refused {bot} ({password}, {device})"
    )


@app.task(name="tests.sentry.logged_and_escapes")
def logged_and_escapes(venue_id: int, session_key: str) -> None:
    """Logs its failure, then leaves the same exception to Celery (as a task that wants
    Celery's retry or failure state does): both the logging and the Celery integration see
    it, and it must be reported once."""
    try:
        raise DeliveryFailedError(f"venue {venue_id}: session {session_key} has ended")
    except DeliveryFailedError:
        logger.exception("probe_delivery_failed", venue=venue_id)
        raise
