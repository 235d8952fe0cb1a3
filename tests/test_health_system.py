"""/health of a real server process whose database is stopped or hangs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import closed_port, hung_server
from tests.servers import MONITORING_TOKEN, ServerGroup

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def servers(transactional_db: None, tmp_path: Path) -> Iterator[ServerGroup]:
    with ServerGroup(tmp_path / "servers") as group:
        yield group


def timed_health(group: ServerGroup, database_url: str) -> tuple[int, dict[str, object], float]:
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
