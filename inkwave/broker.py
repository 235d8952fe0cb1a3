"""kombu's Redis transport, made to survive its own cleanup after a lost connection.

When the worker loses Redis, Celery 5.7 first collects the broken connection (which
detaches the transport: ``transport.client = None``) and then closes it. The close reaches
the default channel again, whose unacknowledged messages (a task in progress under
``acks_late``, or one waiting for its countdown) it tries to put back, and building a Redis
pool for that reads ``conninfo.hostname`` off the detached client: ``AttributeError:
'NoneType' object has no attribute 'hostname'``. Celery's cleanup ignores only connection
errors, so the worker exits ("Unrecoverable error") instead of reconnecting.

Here a channel whose transport was detached refuses to open a connection with a connection
error, which every cleanup path already expects. The messages it could not put back are
not lost: Redis keeps them in its unacked index and restores them after the visibility
timeout (if Redis itself survived), and the outbox sweep re-sends what they would have.

`Consumer` (the worker's `worker_consumer`) retries a lost broker every few seconds: Celery's
own backoff grows to 30 s between attempts, so a worker could sit idle that long after Redis
came back.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES, redis
from redis.exceptions import ConnectionError as RedisConnectionError


class DetachedChannelError(RedisConnectionError):
    """The channel's connection was already closed; a new one is opened after reconnecting."""


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise DetachedChannelError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    Channel = Channel


def install() -> None:
    """Make redis:// and rediss:// broker URLs use this transport (their URL handling unchanged)."""
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"


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
