"""The WebSocket side of the ASGI application: origin check, device token, session, routes."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter

from orders.middleware import AllowedHostsOriginMiddleware, VenueTokenMiddleware
from orders.routing import websocket_urlpatterns


def build_websocket_application() -> Any:
    return AllowedHostsOriginMiddleware(
        VenueTokenMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
    )
