"""A venue room's channel-layer group in Redis holds exactly the processes with live connections.

One real daphne process, real Redis, hundreds of real WebSocket clients that come and go at
once. The process is in the group once (orders/hub.py) while any of its connections is in the
room: every one of them hears each broadcast, and once they are all gone the group must not
keep the process (every broadcast would be queued for it until the layer's group expiry, a
day).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from inkwave.db import database_sync_to_async
from monitoring.models import MetricTotals
from orders.broadcast import abroadcast_to_venue
from orders.groups import venue_group_name
from orders.models import Venue
from tests.servers import (
    DaphneServer,
    ServerGroup,
    place_order,
    poll_until,
    raise_open_files_limit,
)

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

CLIENTS = 500
DEADLINE_SECONDS = 20.0


@pytest.fixture
def server_group(
    transactional_db: None, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServerGroup]:
    # Stopped before the tables are flushed and before redis_client deletes the layer's keys.
    # Clients, their server-side sockets (the server inherits the limit), Redis and database.
    raise_open_files_limit(4 * CLIENTS + 1024)
    with ServerGroup(tmp_path / "servers") as group:
        yield group


@pytest.fixture
def server(server_group: ServerGroup) -> DaphneServer:
    return server_group.start()


@pytest.fixture
def group_key(venue: Venue) -> str:
    # channels_redis.core.RedisChannelLayer._group_key: a sorted set of channel names.
    return f"{settings.CHANNEL_LAYER_PREFIX}:group:{venue_group_name(venue.pk)}"


@pytest.fixture
async def layer_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    """Connect as a device does: a handshake the busy server dropped is tried again.

    Daphne drops a handshake that the application has not accepted within 5 seconds, which
    a burst of hundreds of simultaneous connections can exceed.
    """
    url = server.ws_url(f"/ws/venues/{venue_id}/?token={token}")
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            ws = await connect(url, open_timeout=10, ping_interval=None, close_timeout=5)
        except (InvalidHandshake, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(random.uniform(0.05, 0.5))
            continue
        welcome = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_SECONDS))
        assert welcome["type"] == "welcome"
        return ws


async def join_all(
    server: DaphneServer,
    venue_id: int,
    token: str,
    count: int = CLIENTS,
    in_flight: int | None = None,
) -> list[ClientConnection]:
    """`count` clients; all at once, or with at most `in_flight` handshakes under way."""
    slots = asyncio.Semaphore(in_flight or count)

    async def one() -> ClientConnection:
        async with slots:
            return await join(server, venue_id, token)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def drop(ws: ClientConnection) -> None:
    """Lose the connection without a close frame: a TCP reset, like a device losing power."""
    if ws.transport.is_closing():
        return  # the server closed it already; what the test asserts will show why
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def leave_all(clients: list[ClientConnection], how: str) -> None:
    if how == "close":
        await asyncio.gather(*(ws.close() for ws in clients))
    else:
        for ws in clients:
            drop(ws)


async def settled_members(layer_redis: aioredis.Redis, key: str, expected: int) -> set[bytes]:
    """The group's members once it holds `expected` (the server leaves asynchronously)."""

    async def members() -> set[bytes]:
        return set(cast(list[bytes], await layer_redis.zrange(key, 0, -1)))

    return await poll_until(members, lambda found: len(found) == expected, DEADLINE_SECONDS)


async def everyone_receives_one_broadcast(clients: list[ClientConnection], venue_id: int) -> None:
    """Each live client gets the event; with as many members as clients, they are the members."""
    await abroadcast_to_venue(venue_id, "order.created", {"order": 1})

    async def next_event(ws: ClientConnection) -> str:
        return str(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_SECONDS))["event"])

    events = await asyncio.gather(*(next_event(ws) for ws in clients))
    assert events == ["order.created"] * len(clients)


async def settled_stats(server: DaphneServer, connections: int) -> dict[str, Any]:
    """Stats once the server has flushed a state with no connection left, after `connections`
    (an earlier flush, from before the last clients came, shows none left either)."""

    async def fetch() -> dict[str, Any]:
        return await asyncio.to_thread(server.stats)

    def settled(stats: dict[str, Any]) -> bool:
        return stats["activeConnections"] == 0 and stats["totalConnections"] >= connections

    return await poll_until(fetch, settled, DEADLINE_SECONDS)


@pytest.mark.parametrize("how", ["close", "drop"])
async def test_room_group_holds_exactly_the_live_connections_when_hundreds_come_and_go_at_once(
    server: DaphneServer,
    venue: Venue,
    venue_token: str,
    group_key: str,
    layer_redis: aioredis.Redis,
    how: str,
) -> None:
    clients = await join_all(server, venue.pk, venue_token)
    first = await settled_members(layer_redis, group_key, 1)
    await everyone_receives_one_broadcast(clients, venue.pk)

    await leave_all(clients, how)
    stale = await settled_members(layer_redis, group_key, 0)
    assert not stale, f"{len(stale)} channels of closed connections are still in the group"

    clients = await join_all(server, venue.pk, venue_token)  # all at once
    second = await settled_members(layer_redis, group_key, 1)
    assert not second & first, "the membership of the emptied room is back in the group"
    await everyone_receives_one_broadcast(clients, venue.pk)

    await leave_all(clients, "close")
    stale = await settled_members(layer_redis, group_key, 0)
    assert not stale, f"{len(stale)} channels of closed connections are still in the group"
    stats = await settled_stats(server, 2 * CLIENTS)
    assert (stats["activeConnections"], stats["rooms"]["members"]) == (0, {})
    assert stats["totalConnections"] == stats["totalDisconnections"] == 2 * CLIENTS


async def test_a_gracefully_stopped_server_takes_its_connections_out_of_the_room_group(
    server: DaphneServer,
    venue: Venue,
    venue_token: str,
    group_key: str,
    layer_redis: aioredis.Redis,
) -> None:
    clients = await join_all(server, venue.pk, venue_token, count=5)
    assert len(await settled_members(layer_redis, group_key, 1)) == 1

    # SIGTERM: daphne's graceful shutdown; once stop() returns, the process has exited.
    assert await asyncio.to_thread(server.stop) == 0
    stale = await layer_redis.zrange(group_key, 0, -1)
    assert not stale, f"{len(stale)} channels of the stopped server are still in the group"
    # Its final flush counted the connections it closed on the way out.
    totals = await database_sync_to_async(MetricTotals.objects.get)(pk=MetricTotals.SINGLETON_ID)
    assert (totals.connections, totals.disconnections) == (5, 5)
    for ws in clients:
        await ws.close()


async def test_a_killed_process_drops_out_of_its_rooms_group_within_the_group_expiry(
    server_group: ServerGroup,
    venue: Venue,
    venue_token: str,
    group_key: str,
    layer_redis: aioredis.Redis,
) -> None:
    """SIGKILL leaves no goodbye: its membership stays until the expiry, which the live
    processes outrun by renewing theirs."""
    env = {"CHANNEL_LAYER_GROUP_EXPIRY_SECONDS": "3"}
    doomed, kept = server_group.start(**env), server_group.start(**env)
    clients = await join_all(doomed, venue.pk, venue_token, count=2)
    clients += await join_all(kept, venue.pk, venue_token, count=2)
    assert len(await settled_members(layer_redis, group_key, 2)) == 2
    doomed.process.kill()
    await asyncio.sleep(4)  # past the expiry: the kept process renewed (every 0.75 s)
    # An order through the kept process: its group_send (same expiry) drops the dead member.
    await asyncio.to_thread(place_order, kept.base_url, venue.pk, venue_token)
    for ws in clients[2:]:
        frame = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_SECONDS))
        assert frame["type"] == "event"
    assert len(await settled_members(layer_redis, group_key, 1)) == 1
    for ws in clients[2:]:
        await ws.close()
