"""/health of real server processes: with clients connected, and with a database stopped or hung."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from orders.models import Venue
from tests.fakes import closed_port, hung_server
from tests.servers import MONITORING_TOKEN, DaphneServer, ServerGroup

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

CLIENTS_PER_SERVER = 30
CONCURRENT_PROBES = 20
REQUIRED_CHECKS = ("database", "redis", "channel_layer")


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    url = server.ws_url(f"/ws/venues/{venue_id}/?token={token}")
    ws = await connect(url, open_timeout=5, ping_interval=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws


def probe_at_once(server: DaphneServer, count: int) -> list[tuple[int, Any]]:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(server.get_json, "/health", timeout=10) for _ in range(count)]
        return [future.result() for future in futures]


async def test_health_is_200_with_clients_connected_to_two_servers_on_the_redis_layer(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    a, b = servers.start(), servers.start()
    members = [await join(server, venue.pk, venue_token) for server in (a, b)]
    members += [
        await join(server, venue.pk, venue_token)
        for server in (a, b)
        for _ in range(CLIENTS_PER_SERVER - 1)
    ]
    try:
        for server in (a, b):
            # Each consumer now waits on the layer for its next message, as in production.
            status, body = await asyncio.to_thread(server.get_json, "/health", timeout=10)
            assert status == 200, body
            required = {name: body["checks"][name] for name in REQUIRED_CHECKS}
            assert required == dict.fromkeys(REQUIRED_CHECKS, "healthy")
            answers = await asyncio.to_thread(probe_at_once, server, CONCURRENT_PROBES)
            assert [status for status, _ in answers] == [200] * CONCURRENT_PROBES, answers
    finally:
        for ws in members:
            await ws.close()


def timed_health(group: ServerGroup, database_url: str) -> tuple[int, dict[str, Any], float]:
    server = group.start(DATABASE_URL=database_url, HEALTH_CHECK_TIMEOUT_SECONDS="1.5")
    started = time.monotonic()
    status, body = server.get_json("/health", timeout=10)
    elapsed = time.monotonic() - started
    db_status, db_body = server.get_json(
        "/api/v1/monitoring/database/health", token=MONITORING_TOKEN, timeout=10
    )
    assert db_status == 503
    assert db_body["connected"] is False
    assert db_body["status"] == "unhealthy"
    return status, body, elapsed


def test_a_stopped_database_yields_503_quickly(servers: ServerGroup) -> None:
    url = f"postgres://postgres@127.0.0.1:{closed_port()}/inkwave"
    status, body, elapsed = timed_health(servers, url)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"] == "unhealthy"
    assert body["checks"]["redis"] == "healthy"
    assert elapsed < 2.5


def test_a_hung_database_yields_503_within_the_timeout(servers: ServerGroup) -> None:
    with hung_server() as port:
        status, body, elapsed = timed_health(servers, f"postgres://postgres@127.0.0.1:{port}/x")
    assert status == 503
    assert body["checks"]["database"] == "unhealthy"
    assert body["checks"]["channel_layer"] == "healthy"
    assert elapsed < 2.5
    assert "127.0.0.1" not in str(body)
