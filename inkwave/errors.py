"""JSON answers under /api/ for what Django answers before or around a view.

An unknown path (`/api/v1/orders/-1` matches no pattern) or an unhandled exception would
otherwise be an HTML page; API clients get the API's error shape instead. Elsewhere (the admin)
Django's own pages stay.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """What Django refuses before a view runs: a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too
    many fields, a bad Host header."""
    if not request.path.startswith(API_PREFIX):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _error(413, "too_large", f"The body is larger than {limit} bytes.")
    return _error(400, "bad_request", "The request cannot be read.")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return _error(404, "not_found", "No such endpoint or object.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return _error(500, "server_error", "The server failed; the error is logged.")
    return defaults.server_error(request)
