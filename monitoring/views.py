from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring.access import monitoring_access_required
from monitoring.database import database_health
from monitoring.health import Status, overall_status, public_checks
from monitoring.stats import websocket_health, websocket_stats


def _status_code(status: str) -> int:
    return 503 if status == Status.UNHEALTHY else 200


@never_cache
@require_GET
async def health(request: HttpRequest) -> JsonResponse:
    """The public health check: statuses only, no hostnames, versions or exception text."""
    results = await public_checks.results()
    status = overall_status(results)
    body = {
        "status": status.value,
        "checks": {r.name: r.status.value for r in results},
        "timestamp": timezone.now().isoformat(),
    }
    return JsonResponse(body, status=_status_code(status))


@never_cache
@require_GET
async def liveness(request: HttpRequest) -> JsonResponse:
    """For a process supervisor: answers while the event loop runs; checks nothing external."""
    return JsonResponse({"status": "ok", "timestamp": timezone.now().isoformat()})


def _in_thread(func: Any) -> Any:
    def run() -> Any:
        close_old_connections()
        try:
            return func()
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


@never_cache
@require_GET
@monitoring_access_required
async def websocket_stats_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(await _in_thread(websocket_stats)())


@never_cache
@require_GET
@monitoring_access_required
async def websocket_health_view(request: HttpRequest) -> JsonResponse:
    body = await _in_thread(websocket_health)()
    return JsonResponse(body, status=_status_code(body["status"]))


@never_cache
@require_GET
@monitoring_access_required
async def database_health_view(request: HttpRequest) -> JsonResponse:
    body = await database_health()
    return JsonResponse(body, status=_status_code(body["status"]))
