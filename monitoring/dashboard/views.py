"""The dashboard page (/ops/dashboard/) and its history (/api/v1/monitoring/dashboard/history)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from inkwave.api_errors import ErrorJSON
from inkwave.openapi import Answer, operation
from monitoring.access import MONITORING_AUTH, REFUSALS, monitoring_access_required
from monitoring.dashboard.figures import RANGES, HistoryJSON, history
from monitoring.views import Unavailable, _read, _unavailable


@never_cache
@require_GET
@staff_member_required
def dashboard_page(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "admin/monitoring/dashboard.html",
        {"title": "Dashboard", "ranges": list(RANGES), "site_header": "Inkwave Ops"},
    )


def _bad_range(value: str | None) -> JsonResponse:
    choices = ", ".join(RANGES)
    message = f"range must be one of {choices}" + (f"; got {value!r}" if value else "")
    body: ErrorJSON = {
        "error": {
            "code": "invalid",
            "message": "Some fields are not valid.",
            "fields": {"range": [message]},
        }
    }
    return JsonResponse(body, status=400)


@operation(
    "get",
    summary="The dashboard's trends for the last hour, day, week or month (?range=)",
    responses={
        200: Answer("Bucketed figures and the incidents of the range", HistoryJSON),
        400: Answer("range is missing or not one of hour, day, week, month", ErrorJSON),
        503: Answer("The figures cannot be read now (database down); see Retry-After", ErrorJSON),
        **REFUSALS,
    },
    auth=MONITORING_AUTH,
    tags=["monitoring"],
)
@never_cache
@require_GET
@monitoring_access_required
async def history_view(request: HttpRequest) -> JsonResponse:
    unknown = sorted(set(request.GET) - {"range"})
    if unknown:
        body: ErrorJSON = {
            "error": {
                "code": "invalid",
                "message": "Some fields are not valid.",
                "fields": {name: ["unknown parameter"] for name in unknown},
            }
        }
        return JsonResponse(body, status=400)
    name = request.GET.get("range")
    if name not in RANGES:
        return _bad_range(name)
    now = timezone.now()
    try:
        return JsonResponse(await _read(lambda: history(name, now)))
    except Unavailable:
        return _unavailable()
