"""Every error under /api/ is JSON: `{"error": {"code", "message"}}`, never an HTML page.

The views answer their own errors in JSON; what escapes them (a crash, a database that
stopped answering, a path that matches nothing, a middleware's failure) is answered by
Django with an HTML page, which this middleware, outermost, replaces with JSON of the same
status. It handles nothing itself: Django still logs the exception and sends its signals
(which error reporting listens to). A failure to reach the database is told apart while the
exception is known and answered 503 with Retry-After, so a client knows to come back.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NotRequired

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

API_PREFIX = "/api/"
CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}
# What a client reads for the errors it most often meets; others get the status's phrase.
MESSAGES = {
    404: "No such endpoint or object.",
    413: "The body is larger than the upload limit.",
    500: "The server failed; the error is logged.",
}


class ErrorDetailJSON(TypedDict):
    code: str
    message: str
    # Only for code "invalid": the messages for each field, by dotted path ("items.0.quantity").
    fields: NotRequired[dict[str, list[str]]]


class ErrorJSON(TypedDict):
    """Every error under /api/ has this shape, whoever answers it."""

    error: ErrorDetailJSON


def json_error(status: int, code: str, message: str) -> JsonResponse:
    body: ErrorJSON = {"error": {"code": code, "message": message}}
    return JsonResponse(body, status=status)


# Set on the request when the exception that is becoming a 500 was the database's absence.
UNAVAILABLE_FLAG = "_inkwave_database_unavailable"
# SQLSTATE classes of a connection that is gone or refused (psycopg's own failures have none).
CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_database_unreachable(exc: BaseException) -> bool:
    """The database cannot be reached (as opposed to a query that failed on a live one)."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(CONNECTION_SQLSTATES)


def _is_json(response: HttpResponse) -> bool:
    return str(response.get("Content-Type", "")).startswith("application/json")


def as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if response.status_code < 400 or _is_json(response) or not request.path.startswith(API_PREFIX):
        return response
    status = response.status_code
    if status == 500 and getattr(request, UNAVAILABLE_FLAG, False):
        status = 503
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = MESSAGES.get(status, f"{phrase}.")
    replaced = json_error(status, CODES.get(status, "error"), message)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            replaced[header] = response[header]
    if status == 503 and "Retry-After" not in replaced:
        replaced["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
    return replaced


class ApiErrorsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return as_json(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        return as_json(request, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Remember a database outage; Django goes on to log it and answer its 500."""
        if is_database_unreachable(exception):
            setattr(request, UNAVAILABLE_FLAG, True)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: a body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413, not Django's generic 400
    (under /api/ the middleware then answers it in JSON, as every other error)."""
    if isinstance(exception, RequestDataTooBig):
        return HttpResponse(status=413)
    return defaults.bad_request(request, exception)
