"""The whole system: two daphne processes sharing Redis and PostgreSQL, real WebSocket clients.

Every number the stats endpoint reports is computed here from what the clients did, and
compared for exact equality once the servers' periodic flushes have caught up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from orders.broadcast import abroadcast_to_venue
from orders.groups import venue_group_name
from orders.models import Venue
from tests.servers import DaphneServer, ServerGroup, poll_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

SETTLE_SECONDS = 10.0
FRAME_TIMEOUT = 5.0
# Longer than channels-redis' blocking receive (RedisChannelLayer.brpop_timeout, 5 s).
IDLE_SECONDS = 6.5


async def open_client(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    url = server.ws_url(f"/ws/venues/{venue_id}/?token={token}")
    return await connect(url, open_timeout=FRAME_TIMEOUT, ping_interval=None)


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
    assert isinstance(frame, str)
    message = json.loads(frame)
    assert isinstance(message, dict)
    return message


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    ws = await open_client(server, venue_id, token)
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    assert welcome["venue"] == venue_id
    return ws


async def eventually(
    fetch: Callable[[], Awaitable[dict[str, Any]]], expected: dict[str, Any]
) -> dict[str, Any]:
    """What fetch() returns once it equals expected (flushes are periodic), or at the deadline."""
    return await poll_until(fetch, lambda observed: observed == expected, SETTLE_SECONDS, 0.1)


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "totalConnections": stats["totalConnections"],
        "totalDisconnections": stats["totalDisconnections"],
        "totalRejectedConnections": stats["totalRejectedConnections"],
        "totalMessagesReceived": stats["totalMessagesReceived"],
        "totalMessagesSent": stats["totalMessagesSent"],
        "connectionErrors": stats["connectionErrors"],
        "activeConnections": stats["activeConnections"],
        "rooms": stats["rooms"]["members"],
        "workers": {w["pid"]: w["activeConnections"] for w in stats["workers"]},
    }


def stats_of(server: DaphneServer) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def fetch() -> dict[str, Any]:
        return summarize(await asyncio.to_thread(server.stats))

    return fetch


async def test_two_server_processes_share_rooms_and_report_exact_deployment_totals(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    a, b = servers.start(), servers.start()
    room = venue_group_name(venue.pk)

    # Three members of the room on each process.
    on_a = [await join(a, venue.pk, venue_token) for _ in range(3)]
    on_b = [await join(b, venue.pk, venue_token) for _ in range(3)]
    everyone = on_a + on_b
    sent = len(everyone)  # welcome frames

    # A broadcast from a third process (this one) reaches the members on both servers.
    await abroadcast_to_venue(venue.pk, "order.created", {"order": 17, "total": "12.50"})
    for ws in everyone:
        event = await receive_json(ws)
        assert (event["type"], event["event"]) == ("event", "order.created")
        assert event["data"] == {"order": 17, "total": "12.50"}
    sent += len(everyone)

    # Pings are answered with pongs.
    pings = [(on_a[0], 1), (on_b[0], 2)]
    for ws, count in pings:
        for n in range(count):
            await ws.send(json.dumps({"type": "ping", "ts": n + 1}))
            pong = await receive_json(ws)
            assert (pong["type"], pong["ts"]) == ("pong", n + 1)
    received = sent_pongs = sum(count for _, count in pings)
    sent += sent_pongs

    # Bad frames are answered with an error frame and counted as errors.
    bad_frames = [
        (on_a[1], "not json", "invalid_json"),
        (on_b[1], '{"type": "launch"}', "unknown_type"),
        (on_b[1], "[1, 2]", "invalid_message"),
    ]
    for ws, frame, code in bad_frames:
        await ws.send(frame)
        error = await receive_json(ws)
        assert (error["type"], error["code"]) == ("error", code)
    received += len(bad_frames)
    sent += len(bad_frames)

    # A wrong token is refused with 4401 after the handshake, without a frame.
    intruder = await open_client(b, venue.pk, "iwv_not-a-real-token")
    with pytest.raises(ConnectionClosed):
        await receive_json(intruder)
    assert intruder.close_code == 4401

    # One member leaves each process; the next broadcast reaches the four who stayed.
    leaving = [on_a[2], on_b[2]]
    for ws in leaving:
        await ws.close()
    staying = [ws for ws in everyone if ws not in leaving]
    await abroadcast_to_venue(venue.pk, "order.status_changed", {"order": 17})
    for ws in staying:
        event = await receive_json(ws)
        assert event["event"] == "order.status_changed"
    sent += len(staying)

    expected = {
        "totalConnections": len(everyone),
        "totalDisconnections": len(leaving),
        "totalRejectedConnections": 1,
        "totalMessagesReceived": received,
        "totalMessagesSent": sent,
        "connectionErrors": 1 + len(bad_frames),
        "activeConnections": len(staying),
        "rooms": {room: len(staying)},
        "workers": {a.pid: 2, b.pid: 2},
    }
    assert await eventually(stats_of(a), expected) == expected
    assert await eventually(stats_of(b), expected) == expected

    # B's members leave; then B stops, and its final flush marks its worker stopped: the
    # deployment no longer counts it, while the totals keep what it did.
    for ws in on_b[:2]:
        await ws.close()
    b_empty = {
        **expected,
        "totalDisconnections": len(leaving) + 2,
        "activeConnections": 2,
        "rooms": {room: 2},
        "workers": {a.pid: 2, b.pid: 0},
    }
    assert await eventually(stats_of(a), b_empty) == b_empty
    assert await asyncio.to_thread(b.stop) == 0
    # No polling: B has exited, so its final flush is written, and its worker must be gone
    # now rather than when WORKER_LIVENESS_SECONDS runs out.
    assert await stats_of(a)() == {**b_empty, "workers": {a.pid: 2}}

    for ws in on_a[:2]:
        await ws.close()
    all_gone = {
        **b_empty,
        "totalDisconnections": len(everyone),
        "activeConnections": 0,
        "rooms": {},
        "workers": {a.pid: 0},
    }
    assert await eventually(stats_of(a), all_gone) == all_gone


async def test_idle_members_stay_connected_past_the_channel_layers_blocking_receive(
    servers: ServerGroup, venue: Venue, venue_token: str, redis_client: redis.Redis
) -> None:
    # channels-redis waits for a consumer's messages with BZPOPMIN, 5 s at a time; a Redis
    # client whose socket timeout is not longer than that fails the read and the consumer.
    a, b = servers.start(), servers.start()
    members = [await join(a, venue.pk, venue_token), await join(b, venue.pk, venue_token)]

    async def stays_open_and_quiet(ws: ClientConnection) -> None:
        with pytest.raises(TimeoutError):  # not ConnectionClosed
            await asyncio.wait_for(ws.recv(), IDLE_SECONDS)

    await asyncio.gather(*(stays_open_and_quiet(ws) for ws in members))

    await abroadcast_to_venue(venue.pk, "order.created", {"order": 18})
    for ws in members:
        assert (await receive_json(ws))["event"] == "order.created"
    key = f"{settings.CHANNEL_LAYER_PREFIX}:group:{venue_group_name(venue.pk)}"
    assert await asyncio.to_thread(redis_client.zcard, key) == len(members)


async def test_a_server_that_stops_tells_its_clients_to_come_back_with_1012(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    """A deploy's SIGTERM: the screens hear "service restart", not a dead socket."""
    server = servers.start()
    clients = [await join(server, venue.pk, venue_token) for _ in range(3)]
    stopping = asyncio.create_task(asyncio.to_thread(server.stop))
    for ws in clients:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
    assert await stopping == 0
