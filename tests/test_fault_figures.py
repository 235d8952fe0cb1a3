"""The figures while a real server process is killed, and while the database is away."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connections
from websockets.asyncio.client import ClientConnection, connect

from monitoring.recording import release_dead_workers
from orders.models import Venue
from tests.servers import DaphneServer, ServerGroup, poll_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def servers(
    transactional_db: None, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServerGroup]:
    # Stopped before the tables are flushed and before redis_client deletes the layer's keys.
    with ServerGroup(tmp_path / "servers") as group:
        yield group


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    ws = await connect(server.ws_url(f"/ws/venues/{venue_id}/?token={token}"), ping_interval=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws


async def stats_of(server: DaphneServer) -> dict[str, Any]:
    return await asyncio.to_thread(server.stats)


def release_in_this_thread() -> int:
    """What beat's task does; the thread's connection is closed before the tables are."""
    try:
        return release_dead_workers()
    finally:
        connections.close_all()


async def test_the_connections_of_a_killed_server_are_counted_as_disconnected(
    servers: ServerGroup, venue: Venue, venue_token: str, settings: Any
) -> None:
    settings.WORKER_LIVENESS_SECONDS = 5  # as the servers count it (tests/servers.py)
    doomed, survivor = servers.start(), servers.start()
    clients = [await join(doomed, venue.pk, venue_token) for _ in range(6)]
    clients += [await join(survivor, venue.pk, venue_token) for _ in range(4)]
    try:
        both = await poll_until(
            lambda: stats_of(survivor), lambda s: s["activeConnections"] == 10, 10
        )
        assert both["totalConnections"] == 10
        doomed.process.send_signal(signal.SIGKILL)
        doomed.stop()
        # Until it is found dead, its six clients still count as connected in the totals.
        gone = await poll_until(
            lambda: stats_of(survivor), lambda s: s["activeConnections"] == 4, 15
        )
        assert gone["activeConnections"] == 4
        assert gone["totalConnections"] - gone["totalDisconnections"] == 10

        assert await asyncio.to_thread(release_in_this_thread) == 6
        assert await asyncio.to_thread(release_in_this_thread) == 0
        after = await stats_of(survivor)
        assert after["totalConnections"] == 10
        assert after["totalDisconnections"] == 6
        assert after["totalConnections"] - after["totalDisconnections"] == 4
    finally:
        for ws in clients:
            await ws.close()
