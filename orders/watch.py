"""Every open room connection of this process keeps re-checking what let it in.

One task per event loop (a server process has one) holds the connections and their grants.
It re-checks all of them every WS_ACCESS_RECHECK_SECONDS, and those a signal named as soon
as it can, in one batch: a few queries for the batch (orders.access.lapsed_grants), never
a query per frame or per connection. A session that expires or is deleted without any event
is therefore noticed within the interval; everything that has a signal is immediate. The
task exists only while the process has connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Protocol

import structlog
from django.conf import settings

from inkwave.logcontext import spawn
from orders.access import Grant, lapsed_grants
from orders.protocol import CloseCode

logger = structlog.get_logger(__name__)


class Watched(Protocol):
    async def access_ended(self, code: CloseCode) -> None: ...


class AccessWatch:
    def __init__(self) -> None:
        self.connections: dict[Watched, Grant] = {}
        self.pending: set[Watched] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, connection: Watched, grant: Grant) -> None:
        self.connections[connection] = grant
        if self.task is None or self.task.done():
            self.task = spawn(self.run())

    def discard(self, connection: Watched) -> None:
        self.connections.pop(connection, None)
        self.pending.discard(connection)
        if not self.connections:
            self.wake.set()  # the task ends: an idle process (or a test's loop) keeps none

    def recheck(self, connection: Watched) -> None:
        """Re-check this connection's grant soon, batched with others asked for meanwhile."""
        if connection in self.connections:
            self.pending.add(connection)
            self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + settings.WS_ACCESS_RECHECK_SECONDS
        while self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_sweep - loop.time()))
            self.wake.clear()
            if not self.connections:
                return
            if loop.time() >= next_sweep:
                batch = dict(self.connections)
                next_sweep = loop.time() + settings.WS_ACCESS_RECHECK_SECONDS
            else:
                batch = {c: self.connections[c] for c in self.pending if c in self.connections}
            self.pending.clear()
            await self.check(batch)

    async def check(self, batch: dict[Watched, Grant]) -> None:
        if not batch:
            return
        try:
            lapsed = await lapsed_grants(set(batch.values()))
        except Exception:
            # The database is unreachable: keep serving, and try again at the next sweep
            # rather than close every connection of the process.
            logger.exception("venue_room_access_recheck_failed", connections=len(batch))
            return
        for connection, grant in batch.items():
            code = lapsed.get(grant)
            # A connection that left (or was replaced) while the queries ran is not touched.
            if code is not None and self.connections.get(connection) == grant:
                self.connections.pop(connection, None)
                try:
                    await connection.access_ended(code)
                except Exception:  # one broken connection must not stop the watch
                    logger.exception("venue_room_access_close_failed")


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AccessWatch] = (
    weakref.WeakKeyDictionary()
)


def get_watch() -> AccessWatch:
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = AccessWatch()
    return watch
