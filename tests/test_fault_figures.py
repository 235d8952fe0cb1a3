"""The figures while a real server process is killed, and while the database is away."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connections
from websockets.asyncio.client import ClientConnection, connect

from bench.faultkit import TcpProxy
from monitoring.recording import release_dead_workers
from orders.models import Venue
from tests.servers import (
    MONITORING_TOKEN,
    STATS_PATH,
    DaphneServer,
    ServerGroup,
    current_database_url,
    poll_until,
)

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


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


@pytest.fixture
def database_proxy() -> Iterator[tuple[TcpProxy, str]]:
    """The test database behind a proxy that can refuse connections; its DATABASE_URL."""
    url = urlsplit(current_database_url())
    with TcpProxy((url.hostname or "127.0.0.1", url.port or 5432)) as proxy:
        netloc = f"{url.username}@127.0.0.1:{proxy.port}"
        yield proxy, urlunsplit(url._replace(netloc=netloc))


def answer(server: DaphneServer, path: str, deadline: float) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body; raises (URLError, TimeoutError) past the deadline."""
    request = urllib.request.Request(server.base_url + path)  # noqa: S310 (127.0.0.1 only)
    request.add_header("Authorization", f"Bearer {MONITORING_TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=deadline) as response:  # noqa: S310
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# A load balancer's probe gives up after this long; /health promises an answer within it.
PROBE_DEADLINE = 2.5


def test_with_the_database_refusing_health_and_stats_answer_json_503_in_time(
    servers: ServerGroup, database_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, url = database_proxy
    server = servers.start(DATABASE_URL=url, HEALTH_CHECK_TIMEOUT_SECONDS="1.0")
    status, _, body = answer(server, STATS_PATH, 10)
    assert status == 200, body
    proxy.close()
    try:
        # Operators and dashboards keep asking for the figures while /health is probed:
        # their reads (each waiting the pool's 3 s timeout) must not hold the probes up.
        with ThreadPoolExecutor(12) as pool:
            reads = [pool.submit(answer, server, STATS_PATH, PROBE_DEADLINE) for _ in range(10)]
            probes = [pool.submit(answer, server, "/health", PROBE_DEADLINE) for _ in range(2)]
            for probe in probes:
                status, _, body = probe.result()
                assert status == 503
                assert body["checks"]["database"] == "unhealthy"
            for read in reads:
                status, headers, body = read.result()
                assert status == 503, body
                assert body["error"]["code"] == "unavailable"
                assert headers["Retry-After"] == "5"
        status, _, body = answer(server, "/api/v1/monitoring/websocket/health", PROBE_DEADLINE)
        assert (status, body["error"]["code"]) == (503, "unavailable")
    finally:
        proxy.open()

    async def stats_status() -> int:
        return (await asyncio.to_thread(answer, server, STATS_PATH, 10))[0]

    assert asyncio.run(poll_until(stats_status, lambda code: code == 200, 20)) == 200
