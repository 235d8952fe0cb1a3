"""The WebSocket side of the ASGI application: origin check, device token, cookies, routes.

No session or user is loaded here (channels' AuthMiddlewareStack would, one hop to the
database thread per handshake, token or not): the rooms' door reads the session cookie and
admits many connections in one hop (orders/entry.py); the staff dashboard's socket reads it
with Django's get_user (monitoring/dashboard/consumer.py), behind the same origin check.
"""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from channels.sessions import CookieMiddleware

from monitoring.dashboard.consumer import websocket_urlpatterns as dashboard_urlpatterns
from orders.middleware import AllowedHostsOriginMiddleware, VenueTokenMiddleware
from orders.routing import websocket_urlpatterns


def build_websocket_application() -> Any:
    return AllowedHostsOriginMiddleware(
        VenueTokenMiddleware(
            CookieMiddleware(URLRouter([*dashboard_urlpatterns, *websocket_urlpatterns]))
        )
    )
