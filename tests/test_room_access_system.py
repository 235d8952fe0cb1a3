"""Access that ends on one web process closes room connections held by another.

Two real daphne processes on the Redis channel layer, real WebSocket clients: a browser
logs out through one process while its room connection is on the other; a session deleted
without any signal is found by the other process's periodic re-check; a venue deactivated
from a third process (this one) closes its rooms on both.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from inkwave.db import database_sync_to_async
from orders.broadcast import abroadcast_to_venue
from orders.models import Venue, VenueAccessToken
from tests.servers import DaphneServer, ServerGroup

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

FRAME_TIMEOUT = 15.0


@pytest.fixture
def rechecking_servers(servers: ServerGroup) -> tuple[DaphneServer, DaphneServer]:
    """Two servers, the first with a short periodic access re-check so the test sees it run."""
    return servers.start(WS_ACCESS_RECHECK_SECONDS="0.5"), servers.start()


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def log_out(server: DaphneServer, cookie: str) -> int:
    """POST /admin/logout/ as the browser does (a CSRF cookie and the same token in a header)."""
    csrf = secrets.token_hex(16)  # 32 characters: an unmasked CSRF secret
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        server.base_url + "/admin/logout/",
        method="POST",
        headers={
            "Cookie": f"{cookie}; {settings.CSRF_COOKIE_NAME}={csrf}",
            "X-CSRFToken": csrf,
        },
    )
    with urllib.request.urlopen(request, timeout=FRAME_TIMEOUT) as response:  # noqa: S310
        return int(response.status)


async def join(server: DaphneServer, path: str, cookie: str | None = None) -> ClientConnection:
    headers = {"Cookie": cookie} if cookie else None
    ws = await connect(
        server.ws_url(path),
        additional_headers=headers,
        open_timeout=FRAME_TIMEOUT,
        ping_interval=None,
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))["type"] == "welcome"
    return ws


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code, once the server closed; any frame before it is a broadcast it got."""
    try:
        frame = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
    except ConnectionClosed:
        return ws.close_code
    raise AssertionError(f"received {frame!r} instead of the close")


async def receives_event(ws: ClientConnection) -> str:
    return str(json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))["event"])


async def test_a_grant_ending_on_one_process_closes_connections_on_the_other(
    rechecking_servers: tuple[DaphneServer, DaphneServer],
    venue: Venue,
    staff_user: Any,
    plain_user: Any,
) -> None:
    a, b = rechecking_servers
    _, raw = await database_sync_to_async(VenueAccessToken.issue)(venue, "Kitchen screen")
    devices = [await join(server, f"/ws/venues/{venue.pk}/?token={raw}") for server in (a, b)]

    # Logged out through process a: the browser's room connection on process b closes (b's
    # periodic re-check is 30 s away, so this is the logout's message crossing Redis).
    cookie = await database_sync_to_async(session_cookie)(staff_user)
    browser = await join(b, f"/ws/venues/{venue.pk}/", cookie)
    assert await asyncio.to_thread(log_out, a, cookie) == 200
    assert await closed_with(browser) == 4401

    # A session deleted without a signal: process a's periodic re-check finds it.
    await database_sync_to_async(venue.members.add)(plain_user)
    cookie = await database_sync_to_async(session_cookie)(plain_user)
    member = await join(a, f"/ws/venues/{venue.pk}/", cookie)
    await Session.objects.all().adelete()
    assert await closed_with(member) == 4401

    # The devices on both processes still follow the room.
    await abroadcast_to_venue(venue.pk, "order.created", {"order": 1})
    assert [await receives_event(ws) for ws in devices] == ["order.created"] * 2

    # Deactivated from this process: the room closes on both, with 4404.
    def deactivate() -> None:
        venue.is_active = False
        venue.save()

    await database_sync_to_async(deactivate)()
    assert [await closed_with(ws) for ws in devices] == [4404, 4404]
