"""The dashboard's live figures are the deployment's: two real web processes, real clients.

Screens connect to a venue room on both processes; an operator's dashboard socket on one of
them is pushed the connection count of both, the same number the stats endpoint answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from inkwave.db import database_sync_to_async
from orders.models import Venue
from tests.conftest import session_cookie_for
from tests.servers import DaphneServer, ServerGroup

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

FRAME_TIMEOUT = 15.0


async def open_room(server: DaphneServer, venue: Venue, token: str) -> ClientConnection:
    ws = await connect(
        server.ws_url(f"/ws/venues/{venue.pk}/?token={token}"),
        open_timeout=FRAME_TIMEOUT,
        ping_interval=None,
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))["type"] == "welcome"
    return ws


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)))


async def test_the_dashboards_connection_count_equals_the_stats_endpoints_over_two_processes(
    servers: ServerGroup, venue: Venue, venue_token: str, staff_user: Any
) -> None:
    fast = {"DASHBOARD_PUSH_SECONDS": "0.3"}
    a, b = servers.start(**fast), servers.start(**fast)
    cookie = (await database_sync_to_async(session_cookie_for)(staff_user)).decode()
    dashboard = await connect(
        a.ws_url("/ws/ops/dashboard/"),
        additional_headers={"Cookie": cookie},
        open_timeout=FRAME_TIMEOUT,
        ping_interval=None,
    )
    rooms = [await open_room(a, venue, venue_token) for _ in range(3)]
    rooms += [await open_room(b, venue, venue_token) for _ in range(2)]
    seen: list[tuple[int, int]] = []
    try:
        # Each process reports its own clients with its next flush; poll until both have.
        for _ in range(100):
            frame = await next_frame(dashboard)
            assert frame["type"] == "figures"
            pushed = frame["live"]["activeConnections"]
            stats = await asyncio.to_thread(b.stats)
            seen.append((pushed, stats["activeConnections"]))
            if pushed == stats["activeConnections"] == 5:
                break
        else:
            raise AssertionError(f"(dashboard, stats endpoint) over time: {seen}")
        # Two web processes are counted, not the one the dashboard is connected to.
        assert frame["live"]["webWorkers"] == 2
        assert stats["activeConnections"] == sum(w["activeConnections"] for w in stats["workers"])
    finally:
        for ws in [*rooms, dashboard]:
            await ws.close()
