"""The dashboard's WebSocket, /ws/ops/dashboard/: staff only, figures pushed, nothing read.

It sits behind the venue rooms' origin check (inkwave/routing.py) and reads the session
from the cookie as the rooms' door does, with Django's own get_user (the session's hash is
verified, so a changed password ends it). Refusals are accepted and then closed, so that
browsers see the code: 4401 not signed in, 4403 signed in but not staff (docs/api.md).
These sockets are staff tools, not venue traffic: the monitor does not count them.

The session is read again every DASHBOARD_RECHECK_SECONDS: an operator who signs out, whose
password changes or who stops being staff loses the live figures within that time, closed
with the same codes.
"""

from __future__ import annotations

import asyncio
from importlib import import_module
from typing import Any

import structlog
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.urls import path

from inkwave.db import database_sync_to_async
from inkwave.logcontext import spawn
from monitoring.dashboard.feed import get_feed

logger = structlog.get_logger(__name__)

UNAUTHENTICATED = 4401
FORBIDDEN = 4403
MAX_SESSION_KEY_LENGTH = 40  # the session table's column


def staff_status(session_key: str | None) -> int | None:
    """None when the session's user is active staff, else the close code to refuse with."""
    if not session_key or len(session_key) > MAX_SESSION_KEY_LENGTH:
        return UNAUTHENTICATED
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(request)  # type: ignore[arg-type]
    if not user.is_authenticated:
        return UNAUTHENTICATED
    if not (user.is_active and user.is_staff):
        return FORBIDDEN
    return None


class DashboardConsumer(AsyncWebsocketConsumer):
    # No channel of its own (an alias with no layer): the figures come from this process's
    # feed, and nothing is sent to the socket through the layer. With one, every socket kept
    # a Redis BRPOP waiting, which a disconnect's cancel could not always interrupt: the
    # consumer outlived its socket by up to two BRPOP timeouts (10 s).
    channel_layer_alias = "dashboard-has-no-channel"
    subscribed = False
    recheck: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        cookies: dict[str, str] = self.scope.get("cookies") or {}
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        refusal = await database_sync_to_async(staff_status)(session_key)
        await self.accept()
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.subscribed = True
        self.recheck = spawn(self.keep_checking(session_key))
        await get_feed().subscribe(self.push)

    async def keep_checking(self, session_key: str | None) -> None:
        """Closes the socket once its session no longer belongs to active staff."""
        while True:
            await asyncio.sleep(settings.DASHBOARD_RECHECK_SECONDS)
            try:
                refusal = await database_sync_to_async(staff_status)(session_key)
            except Exception as exc:  # the database is down: the feed says so; try later
                logger.info("dashboard_recheck_failed", error=type(exc).__name__)
                continue
            if refusal is not None:
                self.stop_feed()
                await self.close(code=refusal)
                return

    async def push(self, frame: str) -> None:
        await self.send(text_data=frame)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The dashboard only listens; what a client sends is ignored."""

    async def disconnect(self, code: int) -> None:
        self.stop_feed()
        if self.recheck is not None:
            self.recheck.cancel()
            self.recheck = None

    def stop_feed(self) -> None:
        if self.subscribed:
            self.subscribed = False
            get_feed().unsubscribe(self.push)


websocket_urlpatterns: list[Any] = [path("ws/ops/dashboard/", DashboardConsumer.as_asgi())]
