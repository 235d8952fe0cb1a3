"""GET /health: the spec's shape, concurrent checks with timeouts, nothing private in the body."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.test import AsyncClient

from inkwave.db import database_sync_to_async
from monitoring.health import (
    ChannelLayerCheck,
    CheckResult,
    HealthCheck,
    RedisCheck,
    SharedChecks,
    Status,
    ThreadedCheck,
    default_checks,
    public_checks,
    run_checks,
)
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from tests.fakes import closed_port, hung_server

pytestmark = pytest.mark.django_db(transaction=True)


def report_a_live_worker() -> None:
    monitor = WebSocketMonitor()
    identity = WorkerIdentity(name="web-1")
    SampleRecorder(identity, MonitorSnapshot.empty(monitor.started_at)).flush(monitor.snapshot())


async def get_health(client: AsyncClient) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = await client.get("/health")
    return response.status_code, response.json(), time.monotonic() - started


def redis_layer(url: str, prefix: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": prefix},
        }
    }


async def test_healthy_when_every_dependency_answers(redis_client: Any) -> None:
    await database_sync_to_async(report_a_live_worker)()
    status, body, _ = await get_health(AsyncClient())
    assert status == 200
    assert body["status"] == "healthy"
    assert body["checks"] == {
        "database": "healthy",
        "websocket": "healthy",
        "redis": "healthy",
        "channel_layer": "healthy",
        "slack": "healthy",
    }
    assert body["timestamp"].endswith("+00:00")


async def test_no_reporting_web_worker_degrades_but_does_not_fail(redis_client: Any) -> None:
    status, body, _ = await get_health(AsyncClient())
    assert status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["websocket"] == "unhealthy"


async def test_a_stopped_redis_fails_health_with_503(settings: Any) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = redis_layer(url, settings.CHANNEL_LAYER_PREFIX)
    status, body, elapsed = await get_health(AsyncClient())
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["redis"] == "unhealthy"
    assert body["checks"]["channel_layer"] == "unhealthy"
    assert body["checks"]["database"] == "healthy"
    assert elapsed < 3


async def test_a_hung_redis_yields_503_within_the_timeout_not_a_hung_request(
    settings: Any,
) -> None:
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
    with hung_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        settings.REDIS_URL = url
        settings.CHANNEL_LAYERS = redis_layer(url, settings.CHANNEL_LAYER_PREFIX)
        status, body, elapsed = await get_health(AsyncClient())
    assert status == 503
    assert body["checks"]["redis"] == "unhealthy"
    assert body["checks"]["channel_layer"] == "unhealthy"
    # Checks run concurrently: two hung checks cost one timeout, not two.
    assert elapsed < 2.0


async def test_the_public_body_holds_no_hostnames_versions_or_exception_text(
    settings: Any,
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = redis_layer(url, settings.CHANNEL_LAYER_PREFIX)
    response = await AsyncClient().get("/health")
    text = response.content.decode()
    for leak in ("127.0.0.1", "Error", "refused", "redis://", "postgres", "version"):
        assert leak not in text
    assert set(response.json()) == {"status", "checks", "timestamp"}


async def test_liveness_checks_nothing_external(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = await AsyncClient().get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_health_refuses_other_methods() -> None:
    response = await AsyncClient().post("/health")
    assert response.status_code == 405


class StuckCheck(ThreadedCheck):
    name = "stuck"

    def __init__(self, release: Any) -> None:
        self.release = release
        self.runs = 0

    def run_blocking(self) -> Status:
        self.runs += 1
        self.release.wait(5)
        return Status.HEALTHY


async def test_a_check_still_stuck_is_not_started_again(settings: Any) -> None:
    import asyncio
    import threading

    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.2
    release = threading.Event()
    check = StuckCheck(release)
    first = await run_checks([check])
    await asyncio.sleep(0.05)
    second = await run_checks([check])
    release.set()
    assert first[0].status == Status.UNHEALTHY
    assert "timed out" in first[0].reason
    assert second[0].status == Status.UNHEALTHY
    assert "still stuck" in second[0].reason
    assert check.runs == 1


async def test_two_probes_at_once_both_run_and_both_pass() -> None:
    import threading

    release = threading.Event()
    release.set()
    check = StuckCheck(release)
    results = await run_checks([check, check])
    assert [r.status for r in results] == [Status.HEALTHY, Status.HEALTHY]
    assert check.runs == 2


class GatedCheck(HealthCheck):
    """Counts its runs and finishes when the test opens the gate."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.runs = 0

    async def check(self) -> Status:
        self.runs += 1
        await self.gate.wait()
        return Status.HEALTHY


async def test_concurrent_probes_share_one_run_of_the_checks(settings: Any) -> None:
    settings.HEALTH_CACHE_SECONDS = 0
    check = GatedCheck()
    shared = SharedChecks(lambda: [check])
    probes = [asyncio.ensure_future(shared.results()) for _ in range(100)]
    await asyncio.sleep(0)  # every probe is now waiting on the run in flight
    check.gate.set()
    answers = await asyncio.gather(*probes)
    assert check.runs == 1
    assert all(answer is answers[0] for answer in answers)
    assert [r.status for r in answers[0]] == [Status.HEALTHY]
    # With nothing in flight and no result reused, the next probe runs the checks again.
    await shared.results()
    assert check.runs == 2


async def test_a_result_is_reused_while_younger_than_the_cache_time(settings: Any) -> None:
    settings.HEALTH_CACHE_SECONDS = 1.0
    now = [100.0]
    check = GatedCheck()
    check.gate.set()
    shared = SharedChecks(lambda: [check], clock=lambda: now[0])
    first = await shared.results()
    now[0] += 0.99
    assert await shared.results() is first
    assert check.runs == 1
    now[0] += 0.01
    assert await shared.results() is not first
    assert check.runs == 2


async def test_a_probe_that_goes_away_does_not_cancel_the_run_others_wait_for(
    settings: Any,
) -> None:
    check = GatedCheck()
    shared = SharedChecks(lambda: [check])
    leaving = asyncio.ensure_future(shared.results())
    staying = asyncio.ensure_future(shared.results())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    check.gate.set()
    results = await staying
    assert [r.status for r in results] == [Status.HEALTHY]
    assert leaving.cancelled()
    assert check.runs == 1


async def test_a_hundred_probes_of_the_endpoint_run_the_checks_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch, redis_client: Any
) -> None:
    settings.HEALTH_CACHE_SECONDS = 60
    runs: list[list[HealthCheck]] = []

    def counted_checks() -> list[HealthCheck]:
        runs.append(default_checks())
        return runs[-1]

    monkeypatch.setattr(public_checks, "checks", counted_checks)
    client = AsyncClient()
    answers = await asyncio.gather(*(client.get("/health") for _ in range(100)))
    assert len(runs) == 1
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["checks"]["channel_layer"] for a in answers} == {"healthy"}


async def test_the_channel_layer_check_passes_while_a_consumer_waits_on_the_layer(
    redis_client: Any,
) -> None:
    # A consumer's receive on its process-local channel holds channels-redis' receive lock.
    layer = get_channel_layer()
    assert layer is not None
    consumer = asyncio.ensure_future(layer.receive(await layer.new_channel()))
    try:
        await asyncio.sleep(0.1)
        assert not consumer.done()
        [result] = await run_checks([ChannelLayerCheck()])
    finally:
        consumer.cancel()
    assert (result.status, result.reason) == (Status.HEALTHY, "")


async def test_a_ping_left_by_a_run_that_timed_out_is_skipped(redis_client: Any) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(ChannelLayerCheck.channel, {"type": "health.ping", "nonce": "earlier"})
    results: list[CheckResult] = []
    for _ in range(2):
        results += await run_checks([ChannelLayerCheck()])
    assert [r.status for r in results] == [Status.HEALTHY, Status.HEALTHY]
    # Both pings were read, the stale one and each run's own: nothing is left queued.
    key = f"{django_settings.CHANNEL_LAYER_PREFIX}{ChannelLayerCheck.channel}"
    assert redis_client.exists(key) == 0


async def test_the_redis_check_reuses_one_connection() -> None:
    client_ids = set()
    for _ in range(5):
        [result] = await run_checks([RedisCheck()])
        assert result.status == Status.HEALTHY
        client_ids.add(await RedisCheck.client().client_id())
    assert len(client_ids) == 1
