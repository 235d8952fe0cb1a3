"""Each process checks that its channel layer answers while it has room connections.

A room connection hears its venue's events through the channel layer. When Redis is hung,
channels-redis' receive blocks on a socket read until its timeout (15 s), and only for the
one connection that holds the layer's receive lock: the others wait on their queues and
learn nothing, open and deaf. So one task per event loop pings the layer about once a
second; once it has not answered for CHANNEL_LAYER_LOST_SECONDS, every room connection of
the process is closed with 1011 (the server could not keep it in its room), so its client
reconnects, and is told 1011 again at once until Redis is back. A layer without `ping`
(the in-memory one) cannot be lost and is not watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any, Protocol

import structlog
from channels.layers import get_channel_layer
from django.conf import settings

from inkwave.logcontext import spawn

logger = structlog.get_logger(__name__)


class Deafened(Protocol):
    async def layer_lost(self) -> None: ...


class LayerWatch:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.connections: set[Deafened] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, connection: Deafened) -> None:
        self.connections.add(connection)
        if self.task is None or self.task.done():
            self.task = spawn(self.run())

    def discard(self, connection: Deafened) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self.wake.set()  # the task ends: an idle process (or a test's loop) keeps none

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lost_after = settings.CHANNEL_LAYER_LOST_SECONDS
        interval = min(1.0, lost_after / 3)
        answered_at = loop.time()
        while self.connections:
            if await self.answers(interval):
                answered_at = loop.time()
            elif loop.time() - answered_at >= lost_after:
                await self.close_all(loop.time() - answered_at)
                answered_at = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval)
            self.wake.clear()

    async def answers(self, within: float) -> bool:
        try:
            await self.layer.ping(within)
        except Exception as exc:
            logger.warning("channel_layer_unanswered", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def close_all(self, silent_for: float) -> None:
        connections, self.connections = list(self.connections), set()
        logger.error(
            "channel_layer_lost", connections=len(connections), silent_seconds=round(silent_for, 1)
        )
        for connection in connections:
            try:
                await connection.layer_lost()
            except Exception:  # one broken connection must not keep the others open
                logger.exception("channel_layer_lost_close_failed")


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LayerWatch | None] = (
    weakref.WeakKeyDictionary()
)


def get_layer_watch() -> LayerWatch | None:
    """This event loop's watch, or None when the channel layer has nothing to watch."""
    loop = asyncio.get_running_loop()
    if loop not in _watches:
        layer = get_channel_layer()
        _watches[loop] = LayerWatch(layer) if callable(getattr(layer, "ping", None)) else None
    return _watches[loop]
