"""ASGI middleware in front of the venue rooms: origin validation and the device token."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings

from monitoring.monitor import get_monitor


class AllowedHostsOriginMiddleware(OriginValidator):
    """Browsers must come from an origin in ALLOWED_HOSTS; others send no Origin at all.

    A missing Origin header is let through on purpose: cross-site WebSocket hijacking needs
    a browser, and browsers always send Origin, while kitchen screens and native apps do
    not. A refused origin is answered with HTTP 403 during the handshake and counted.
    """

    def __init__(self, application: Any) -> None:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                origin = value
                break
        if origin is None:
            return await self.application(scope, receive, send)
        try:
            parsed = urlparse(origin.decode("latin1"))
        except (UnicodeDecodeError, ValueError):
            parsed = None
        if parsed is not None and self.valid_origin(parsed):
            return await self.application(scope, receive, send)
        get_monitor().track_rejection("origin_rejected")
        # Closing before accepting makes the server answer the handshake with 403.
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})
        return None


class VenueTokenMiddleware:
    """Puts the `token` query parameter in the scope; browsers cannot set WebSocket headers."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        tokens = query.get("token")
        scope = dict(scope, venue_token=tokens[0] if tokens else None)
        return await self.application(scope, receive, send)
