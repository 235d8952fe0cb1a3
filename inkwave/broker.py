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
"""

from __future__ import annotations

from typing import Any

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
