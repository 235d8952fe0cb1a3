"""The dashboard's WebSocket, /ws/ops/dashboard/: staff only, figures pushed, nothing read.

It sits behind the venue rooms' origin check (inkwave/routing.py) and reads the session
from the cookie as the rooms' door does, with Django's own get_user (the session's hash is
verified, so a changed password ends it). Refusals are accepted and then closed, so that
browsers see the code: 4401 not signed in, 4403 signed in but not staff (docs/api.md).
These sockets are staff tools, not venue traffic: the monitor does not count them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.urls import path

from inkwave.db import database_sync_to_async
from monitoring.dashboard.feed import get_feed

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
    subscribed = False

    async def connect(self) -> None:
        cookies: dict[str, str] = self.scope.get("cookies") or {}
        refusal = await database_sync_to_async(staff_status)(
            cookies.get(settings.SESSION_COOKIE_NAME)
        )
        await self.accept()
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.subscribed = True
        await get_feed().subscribe(self.push)

    async def push(self, frame: str) -> None:
        await self.send(text_data=frame)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The dashboard only listens; what a client sends is ignored."""

    async def disconnect(self, code: int) -> None:
        if self.subscribed:
            self.subscribed = False
            get_feed().unsubscribe(self.push)


websocket_urlpatterns: list[Any] = [path("ws/ops/dashboard/", DashboardConsumer.as_asgi())]
