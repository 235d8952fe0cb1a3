"""The worker's consumer (`worker_consumer`), retrying a lost broker every few seconds.

Celery's own backoff grows to 30 s between attempts, so a worker could sit idle that long
after Redis came back. Its own module, so that only the worker imports Celery's worker.
"""

from __future__ import annotations

from functools import partial

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection

# Seconds between reconnection attempts: 1, 2, 3, then every RECONNECT_INTERVAL_MAX.
RECONNECT_INTERVAL_MAX = 3.0


class Consumer(CeleryConsumer):
    def ensure_connected(self, conn: Connection) -> Connection:
        # Celery calls conn.ensure_connection(errback, max_retries, callback=...) with
        # kombu's default intervals (2 s, growing by 2 s to 30 s); these are its arguments too.
        retry = partial(
            conn.ensure_connection,
            interval_start=1,
            interval_step=1,
            interval_max=RECONNECT_INTERVAL_MAX,
        )
        setattr(conn, "ensure_connection", retry)  # noqa: B010 (mypy: no assigning to methods)
        return super().ensure_connected(conn)
