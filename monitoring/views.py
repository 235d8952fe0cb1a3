from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import structlog
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from inkwave.api_errors import ErrorJSON, json_error
from inkwave.openapi import Answer, operation
from monitoring.access import MONITORING_AUTH, REFUSALS, monitoring_access_required
from monitoring.database import DatabaseHealth, database_health
from monitoring.health import (
    READ_THREADS,
    CheckResult,
    Status,
    overall_status,
    public_checks,
    run_in_thread,
)
from monitoring.prometheus import CONTENT_TYPE, render
from monitoring.scrape import Reading, read_deployment
from monitoring.stats import WebSocketHealth, WebSocketStats, websocket_health, websocket_stats


class HealthJSON(TypedDict):
    status: str
    checks: dict[str, str]
    timestamp: str


class LivenessJSON(TypedDict):
    status: str
    timestamp: str


logger = structlog.get_logger(__name__)

T = TypeVar("T")
# When a client should ask again after a 503 of the monitoring API.
RETRY_AFTER_SECONDS = 5


def _status_code(status: str) -> int:
    return 503 if status == Status.UNHEALTHY else 200


@operation(
    "get",
    summary="Health for a load balancer",
    responses={
        200: Answer("Healthy or degraded", HealthJSON),
        503: Answer("A required dependency failed", HealthJSON),
    },
    tags=["monitoring"],
)
@never_cache
@require_GET
async def health(request: HttpRequest) -> JsonResponse:
    """The public health check: statuses only, no hostnames, versions or exception text."""
    results = await public_checks.results()
    status = overall_status(results)
    body: HealthJSON = {
        "status": status.value,
        "checks": {r.name: r.status.value for r in results},
        "timestamp": timezone.now().isoformat(),
    }
    return JsonResponse(body, status=_status_code(status))


@operation(
    "get",
    summary="Liveness for a process supervisor",
    responses={200: Answer("The process runs", LivenessJSON)},
    tags=["monitoring"],
)
@never_cache
@require_GET
async def liveness(request: HttpRequest) -> JsonResponse:
    """For a process supervisor: answers while the event loop runs; checks nothing external."""
    body: LivenessJSON = {"status": "ok", "timestamp": timezone.now().isoformat()}
    return JsonResponse(body)


class Unavailable(Exception):
    """The figures cannot be read now (the database fails or does not answer in time)."""


async def _read(func: Callable[[], T]) -> T:
    """Read figures from the database within HEALTH_CHECK_TIMEOUT_SECONDS, or raise.

    With the database refusing connections, each read waits the pool's timeout and then
    fails; the caller gets its answer within the limit and the thread ends on its own.
    """

    def run() -> T:
        close_old_connections()
        try:
            return func()
        finally:
            close_old_connections()

    try:
        return await asyncio.wait_for(
            run_in_thread(run, READ_THREADS), settings.HEALTH_CHECK_TIMEOUT_SECONDS
        )
    except TimeoutError:
        logger.warning("monitoring_read_timed_out", read=func.__name__)
        raise Unavailable from None
    except DatabaseError as exc:
        logger.warning("monitoring_read_failed", read=func.__name__, error=str(exc))
        raise Unavailable from exc


def _unavailable() -> JsonResponse:
    response = json_error(
        503, "unavailable", "The figures cannot be read now: the database does not answer."
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@operation(
    "get",
    summary="Deployment-wide WebSocket statistics",
    responses={
        200: Answer("Deployment-wide WebSocket statistics", WebSocketStats),
        503: Answer("The figures cannot be read now (database down); see Retry-After", ErrorJSON),
        **REFUSALS,
    },
    auth=MONITORING_AUTH,
    tags=["monitoring"],
)
@never_cache
@require_GET
@monitoring_access_required
async def websocket_stats_view(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(await _read(websocket_stats))
    except Unavailable:
        return _unavailable()


@operation(
    "get",
    summary="WebSocket health",
    responses={
        200: Answer("WebSocket health", WebSocketHealth),
        503: Answer("No web worker reports", WebSocketHealth),
        **REFUSALS,
    },
    auth=MONITORING_AUTH,
    tags=["monitoring"],
)
@never_cache
@require_GET
@monitoring_access_required
async def websocket_health_view(request: HttpRequest) -> JsonResponse:
    try:
        body = await _read(websocket_health)
    except Unavailable:
        return _unavailable()
    return JsonResponse(body, status=_status_code(body["status"]))


@operation(
    "get",
    summary="Database health",
    responses={
        200: Answer("Database health", DatabaseHealth),
        503: Answer("The database is unreachable or behind", DatabaseHealth),
        **REFUSALS,
    },
    auth=MONITORING_AUTH,
    tags=["monitoring"],
)
@never_cache
@require_GET
@monitoring_access_required
async def database_health_view(request: HttpRequest) -> JsonResponse:
    body = await database_health()
    return JsonResponse(body, status=_status_code(body["status"]))


# The health checks /metrics reports as inkwave_dependency_up (when enabled).
DEPENDENCIES = ("database", "redis", "channel_layer")


def _dependencies(results: list[CheckResult]) -> dict[str, bool]:
    return {
        r.name: r.status != Status.UNHEALTHY
        for r in results
        if r.name in DEPENDENCIES and r.status != Status.DISABLED
    }


async def _reading() -> Reading | None:
    try:
        return await _read(read_deployment)
    except Unavailable:
        return None


@never_cache
@require_GET
@monitoring_access_required
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' scrape: the whole deployment's figures, whichever process answers.

    The health checks are /health's own (shared run, cached, each within its timeout). With
    the database down the answer is still 200, with inkwave_dependency_up alone: Prometheus
    then alerts on the database, not on a failed scrape.
    """
    results, reading = await asyncio.gather(public_checks.results(), _reading())
    return HttpResponse(render(reading, _dependencies(results)), content_type=CONTENT_TYPE)
