"""The monitoring API: who may read it, and the fields clients written against the spec expect."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.test.utils import CaptureQueriesContext

from inkwave import retention
from monitoring import database
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from orders.models import OrderEvent, OrderEventKind

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = [
    "/api/v1/monitoring/websocket/stats",
    "/api/v1/monitoring/websocket/health",
    "/api/v1/monitoring/database/health",
]
TOKEN = "monitoring-token-for-tests"


@pytest.fixture(autouse=True)
def monitoring_token(settings: Any) -> None:
    settings.MONITORING_TOKEN = TOKEN


def bearer(token: str = TOKEN) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def reported() -> WebSocketMonitor:
    monitor = WebSocketMonitor()
    for _ in range(3):
        monitor.track_connection("venue.7")
    monitor.track_message_received()
    monitor.track_message_sent(2)
    monitor.track_delivery_latency(3.0)
    recorder = SampleRecorder(
        WorkerIdentity(name="web-1"), MonitorSnapshot.empty(monitor.started_at)
    )
    recorder.flush(monitor.snapshot())
    return monitor


@pytest.mark.parametrize("url", ENDPOINTS)
def test_anonymous_requests_get_401_json(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_wrong_bearer_token_gets_401(client: Client, url: str) -> None:
    response = client.get(url, **bearer("nope"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_without_a_configured_token_no_bearer_token_is_accepted(
    client: Client, settings: Any
) -> None:
    settings.MONITORING_TOKEN = ""
    assert client.get(ENDPOINTS[0], **bearer("")).status_code == 401
    assert client.get(ENDPOINTS[0], HTTP_AUTHORIZATION="Bearer  ").status_code == 401


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_signed_in_non_staff_user_gets_403(client: Client, plain_user: Any, url: str) -> None:
    client.force_login(plain_user)
    response = client.get(url)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_a_staff_session_may_read_the_stats(
    client: Client, staff_user: Any, reported: WebSocketMonitor
) -> None:
    client.force_login(staff_user)
    response = client.get(ENDPOINTS[0])
    assert response.status_code == 200
    assert response.json()["activeConnections"] == 3


def test_the_stats_carry_the_specification_fields(
    client: Client, reported: WebSocketMonitor
) -> None:
    body = client.get(ENDPOINTS[0], **bearer()).json()
    for field in (
        "activeConnections",
        "totalConnections",
        "totalDisconnections",
        "totalMessagesSent",
        "totalMessagesReceived",
        "connectionErrors",
        "errorRate",
        "rooms",
        "latency",
        "memoryUsage",
        "workers",
        "uptime",
        "timestamp",
    ):
        assert field in body, field
    assert body["totalMessagesSent"] == 2
    assert body["rooms"] == {"active": 1, "members": {"venue.7": 3}}
    assert set(body["latency"]) >= {"avgMs", "p50Ms", "p95Ms", "p99Ms"}
    assert body["latency"]["avgMs"] == 3.0
    assert set(body["memoryUsage"]) >= {"heapUsed", "heapTotal"}
    assert body["workers"][0]["id"] == "web-1"


def test_websocket_health_has_the_specification_shape(
    client: Client, reported: WebSocketMonitor
) -> None:
    response = client.get(ENDPOINTS[1], **bearer())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["connections"] == 3
    assert isinstance(body["uptime"], int)
    assert body["errorRate"] == 0.0
    assert body["memoryUsage"]["heapUsed"] > 0
    assert body["memoryUsage"]["heapTotal"] >= body["memoryUsage"]["heapUsed"]


def test_websocket_health_is_503_when_no_worker_reports(client: Client) -> None:
    response = client.get(ENDPOINTS[1], **bearer())
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"


def test_database_health_reports_latency_and_connection(client: Client) -> None:
    database._migrations_cache = None
    response = client.get(ENDPOINTS[2], **bearer())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["connected"] is True
    assert body["vendor"] == "postgresql"
    assert body["latencyMs"] > 0
    assert body["unappliedMigrations"] == 0


def test_database_health_shows_the_size_of_every_pruned_table_in_one_query(
    client: Client,
) -> None:
    OrderEvent.objects.bulk_create(OrderEvent(kind=OrderEventKind.PLACED) for _ in range(3))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders_orderevent")  # what autovacuum does on a live database
        # Truncated (rolled-back tests leave dead rows on disk): no pages, never analysed.
        cursor.execute("TRUNCATE notifications_reportrun")
    with CaptureQueriesContext(connection) as queries:
        database.table_sizes()
    assert len(queries) == 1

    body = client.get(ENDPOINTS[2], **bearer()).json()
    tables = {table["model"]: table for table in body["tables"]}
    assert set(tables) == {prune.label for prune in retention.registered()}
    events = tables["orders.OrderEvent"]
    assert events["table"] == "orders_orderevent"
    assert events["rows"] == 3
    assert events["rowsEstimated"] is True
    assert events["sizeBytes"] > 0
    # Never analysed, but nothing on disk: no rows, rather than "unknown".
    assert tables["notifications.ReportRun"]["rows"] == 0
    assert body["status"] == "healthy"


def test_database_health_degrades_on_unapplied_migrations(client: Client) -> None:
    database._migrations_cache = None
    recorder = MigrationRecorder(connection)
    app, name = next(
        node for node in MigrationLoader(connection).graph.leaf_nodes() if node[0] == "orders"
    )
    recorder.record_unapplied(app, name)
    try:
        body = client.get(ENDPOINTS[2], **bearer()).json()
    finally:
        recorder.record_applied(app, name)
        database._migrations_cache = None
    assert body["status"] == "degraded"
    assert body["unappliedMigrations"] == 1
    assert body["unappliedMigrationNames"] == [f"{app}.{name}"]
