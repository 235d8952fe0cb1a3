"""Venue rooms and orders while Redis (the channel layer) is down or hung.

Each test runs a daphne server on a Redis of its own (tests/faults.py), which it stops or
freezes with SIGSTOP; the shared Redis of the other test runs is never touched. Bounds
below are the clients' own timeouts, which the old behaviour overran (a 403 refusal, a
connection silent for the whole hang, an order answered after Redis' 15 s socket timeout).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from orders import hub
from orders.models import OrderEvent, OrderEventKind, Venue
from tests.faults import send_json
from tests.servers import DaphneServer, RedisServer, ServerGroup, poll_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

FRAME_TIMEOUT = 5.0
# Longer than CHANNEL_LAYER_LOST_SECONDS below plus a ping, far shorter than the 20 s hang.
LOST_BOUND = 8.0
ORDER = {
    "table": "Table 5",
    "currency": "USD",
    "items": [{"name": "Margherita", "quantity": 2, "unitPrice": "12.50"}],
}


@pytest.fixture
def server(
    transactional_db: None, own_redis: RedisServer, tmp_path: Path
) -> Iterator[DaphneServer]:
    with ServerGroup(tmp_path / "servers") as group:
        yield group.start(REDIS_URL=own_redis.url, CHANNEL_LAYER_LOST_SECONDS="1")


async def open_client(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    url = server.ws_url(f"/ws/venues/{venue_id}/?token={token}")
    return await connect(url, open_timeout=FRAME_TIMEOUT, ping_interval=None)


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    ws = await open_client(server, venue_id, token)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
    assert welcome["type"] == "welcome"
    return ws


async def join_once_back(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    """Join once Redis is back: the process tries the layer again once a second after it
    failed (orders.hub.JOIN_PROBE_SECONDS), and a join before that is told 1011 still."""
    deadline = time.monotonic() + 5 * hub.JOIN_PROBE_SECONDS
    while True:
        ws = await open_client(server, venue_id, token)
        code: int | None = None
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        if code is None:
            assert frame["type"] == "welcome"
            return ws
        assert code == 1011
        assert time.monotonic() < deadline, "still refused"
        await asyncio.sleep(0.2)


async def close_code(ws: ClientConnection, within: float) -> int | None:
    """The code the server closed with; None if the connection was still open after `within`."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), within)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return None


def event_kinds(order_id: int) -> list[str]:
    """In a worker thread, whose connection is closed after: the test database is dropped
    at the end, and refuses to while a session is open."""
    try:
        history = OrderEvent.objects.filter(order_id=order_id).order_by("pk")
        return list(history.values_list("kind", flat=True))
    finally:
        connection.close()


def service_errors(server: DaphneServer) -> dict[str, Any]:
    stats = server.stats()
    return {"service": stats["totalServiceErrors"], "byType": stats["window"]["errorsByType"]}


async def test_a_client_joining_while_redis_is_down_is_accepted_then_closed_with_1011(
    server: DaphneServer, own_redis: RedisServer, venue: Venue, venue_token: str
) -> None:
    await asyncio.to_thread(own_redis.stop)

    # The handshake succeeds (no HTTP 403, which reads as "not allowed") ...
    ws = await open_client(server, venue.pk, venue_token)
    # ... and the close says "the server could not take you now".
    assert await close_code(ws, FRAME_TIMEOUT) == 1011

    # Counted as the service's failure, not the client's.
    counted = await poll_until(
        lambda: asyncio.to_thread(service_errors, server),
        lambda c: c["byType"].get("channel_layer_unavailable", 0) >= 1,
        seconds=10,
    )
    assert counted["byType"].get("channel_layer_unavailable") == 1
    assert counted["service"] >= 1

    # Redis back: the same client gets in.
    await asyncio.to_thread(own_redis.start)
    await (await join_once_back(server, venue.pk, venue_token)).close()


async def test_open_connections_are_closed_with_1011_when_redis_goes_down(
    server: DaphneServer, own_redis: RedisServer, venue: Venue, venue_token: str
) -> None:
    members = [await join(server, venue.pk, venue_token) for _ in range(3)]
    await asyncio.to_thread(own_redis.stop)
    codes = await asyncio.gather(*(close_code(ws, LOST_BOUND) for ws in members))
    assert codes == [1011, 1011, 1011]


async def test_connections_learn_of_a_hung_redis_and_reconnecting_clients_get_1011(
    server: DaphneServer, own_redis: RedisServer, venue: Venue, venue_token: str
) -> None:
    members = [await join(server, venue.pk, venue_token) for _ in range(3)]
    await asyncio.to_thread(own_redis.hang)
    try:
        # Told within the bound, not at the end of the hang (nor never).
        codes = await asyncio.gather(*(close_code(ws, LOST_BOUND) for ws in members))
        assert codes == [1011, 1011, 1011]
        # A client reconnecting meanwhile is accepted and told 1011, within the
        # handshake timeout (the join waits CHANNEL_LAYER_TIMEOUT_SECONDS at most).
        ws = await open_client(server, venue.pk, venue_token)
        assert await close_code(ws, FRAME_TIMEOUT) == 1011
    finally:
        await asyncio.to_thread(own_redis.resume)
    await (await join_once_back(server, venue.pk, venue_token)).close()


def group_members(redis_url: str, venue_id: int) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return int(client.zcard(f"{settings.CHANNEL_LAYER_PREFIX}:group:venue.{venue_id}"))
    finally:
        client.close()


async def test_a_room_left_while_redis_hangs_keeps_no_member_once_redis_answers(
    server: DaphneServer, own_redis: RedisServer, venue: Venue, venue_token: str
) -> None:
    """The process's leave cannot reach a hung Redis; left there, its membership would stay for
    the group expiry (a day), every broadcast to the room queued for a channel nobody reads,
    and each hang would add one more (bench/room_faults.py found two per room and process)."""
    members = [await join(server, venue.pk, venue_token) for _ in range(3)]
    assert await asyncio.to_thread(group_members, own_redis.url, venue.pk) == 1
    await asyncio.to_thread(own_redis.hang)
    try:
        codes = await asyncio.gather(*(close_code(ws, LOST_BOUND) for ws in members))
        assert codes == [1011, 1011, 1011]
        # The process leaves the room as its last connection closes, and gives up on Redis
        # after CHANNEL_LAYER_TIMEOUT_SECONDS (3 s).
        await asyncio.sleep(4)
    finally:
        await asyncio.to_thread(own_redis.resume)
    left = await poll_until(
        lambda: asyncio.to_thread(group_members, own_redis.url, venue.pk),
        lambda n: n == 0,
        seconds=15,
    )
    assert left == 0


async def test_an_order_placed_while_redis_hangs_is_answered_at_once_and_its_event_recorded(
    server: DaphneServer, own_redis: RedisServer, venue: Venue, venue_token: str
) -> None:
    url = server.base_url + "/api/v1/orders"
    # A first order warms the server's pool to Redis, as in a running deployment.
    status, _, _ = await asyncio.to_thread(
        send_json, "POST", url, {**ORDER, "venue": venue.pk}, token=venue_token
    )
    assert status == 201
    await asyncio.to_thread(own_redis.hang)
    try:
        # The client's timeout (5 s) is a third of Redis' socket timeout (15 s), which the
        # broadcast used to wait for on the request's path.
        status, _, body = await asyncio.to_thread(
            send_json, "POST", url, {**ORDER, "venue": venue.pk}, token=venue_token
        )
        assert status == 201, body
        status, _, changed = await asyncio.to_thread(
            send_json,
            "PATCH",
            f"{url}/{body['id']}",
            {"status": "accepted"},
            token=venue_token,
        )
        assert (status, changed["status"]) == (200, "accepted")
    finally:
        await asyncio.to_thread(own_redis.resume)

    # What the room missed is in the order's history, for a replay after reconnecting.
    kinds = await asyncio.to_thread(event_kinds, body["id"])
    assert kinds == [OrderEventKind.PLACED, OrderEventKind.STATUS_CHANGED]
    counted = await poll_until(
        lambda: asyncio.to_thread(service_errors, server),
        lambda c: c["byType"].get("broadcast_failed", 0) >= 2,
        seconds=10,
    )
    assert counted["byType"].get("broadcast_failed") == 2
