"""One computation per process per tick, shared by that process's dashboard sockets.

The first dashboard socket of a process starts the feed; every DASHBOARD_PUSH_SECONDS it
reads the figures once (one thread hop, a handful of queries), runs /health's shared checks,
and hands the same frame to every socket of the process. The last socket to leave stops it.
So ten operators with the dashboard open cost what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from django.conf import settings
from django.utils import timezone
from typing_extensions import TypedDict

from inkwave.db import closing_connections
from inkwave.logcontext import spawn
from monitoring.dashboard.alerts import (
    ComponentJSON,
    IncidentJSON,
    LastGood,
    ProcessReport,
    alert_history,
    components,
    process_report,
)
from monitoring.dashboard.figures import LiveJSON, live_figures
from monitoring.health import READ_THREADS, public_checks, run_in_thread

logger = structlog.get_logger(__name__)

Listener = Callable[[str], Awaitable[None]]


class FrameJSON(TypedDict):
    type: str  # "figures"
    live: LiveJSON | None  # null: the database cannot be read now
    components: list[ComponentJSON]
    incidents: list[IncidentJSON] | None


Reading = tuple[LiveJSON, list[IncidentJSON], ProcessReport]


@closing_connections
def _read_all(now: datetime) -> Reading:
    return live_figures(now), alert_history(), process_report(now)


async def read_frame(last_good: LastGood) -> FrameJSON:
    now = timezone.now()
    results = await public_checks.results()
    last_good.note(results, now)
    reading: Reading | None = None
    try:
        reading = await asyncio.wait_for(
            run_in_thread(lambda: _read_all(now), READ_THREADS),
            settings.HEALTH_CHECK_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # the database is down or slow: the statuses still go out
        logger.warning("dashboard_read_failed", error=f"{type(exc).__name__}: {exc}")
    return {
        "type": "figures",
        "live": reading[0] if reading else None,
        "components": components(results, last_good, reading[2] if reading else None),
        "incidents": reading[1] if reading else None,
    }


class Feed:
    def __init__(self) -> None:
        self.listeners: set[Listener] = set()
        self.task: asyncio.Task[None] | None = None
        self.last_frame: str | None = None
        self.last_good = LastGood()
        self.frames = 0  # computed, for the tests

    async def subscribe(self, listener: Listener) -> None:
        self.listeners.add(listener)
        if self.task is None or self.task.done():
            self.task = spawn(self.run())
        elif self.last_frame is not None:
            await listener(self.last_frame)  # at once, not a tick later

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        if not self.listeners and self.task is not None:
            self.task.cancel()
            self.task = None
            self.last_frame = None

    async def run(self) -> None:
        while self.listeners:
            frame = json.dumps(await read_frame(self.last_good), separators=(",", ":"))
            self.frames += 1
            self.last_frame = frame
            for listener in list(self.listeners):
                with contextlib.suppress(Exception):  # a socket that went away meanwhile
                    await listener(frame)
            await asyncio.sleep(settings.DASHBOARD_PUSH_SECONDS)


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Feed] = weakref.WeakKeyDictionary()


def get_feed() -> Feed:
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = Feed()
    return feed
