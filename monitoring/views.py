from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from inkwave.openapi import Answer, operation
from monitoring.access import MONITORING_AUTH, REFUSALS, monitoring_access_required
from monitoring.database import DatabaseHealth, database_health
from monitoring.health import Status, overall_status, public_checks
from monitoring.stats import WebSocketHealth, WebSocketStats, websocket_health, websocket_stats


class HealthJSON(TypedDict):
    status: str
    checks: dict[str, str]
    timestamp: str


class LivenessJSON(TypedDict):
    status: str
    timestamp: str


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


def _in_thread(func: Any) -> Any:
    def run() -> Any:
        close_old_connections()
        try:
            return func()
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


@operation(
    "get",
    summary="Deployment-wide WebSocket statistics",
    responses={200: Answer("Deployment-wide WebSocket statistics", WebSocketStats), **REFUSALS},
    auth=MONITORING_AUTH,
    tags=["monitoring"],
)
@never_cache
@require_GET
@monitoring_access_required
async def websocket_stats_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(await _in_thread(websocket_stats)())


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
    body = await _in_thread(websocket_health)()
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
