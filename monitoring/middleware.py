"""Request performance: every request timed and counted by route, its queries timed, an id.

For each request, sync or async view alike: its duration, response size, status, the number
and total time of its database queries, and how much the process's memory grew meanwhile
are counted in memory by route (monitoring/requests.py) and flushed with the samples. A query
over SLOW_QUERY_MS is recorded with its normalised statement (never a parameter value), a
request over SLOW_REQUEST_MS likewise.

Every request has an id: the one a trusted proxy put in REQUEST_ID_HEADER, else a new one.
It is in the response's X-Request-ID, on every log line of the request (structlog's context)
and in what the request hands to Celery (inkwave/celery.py). Staff see a Server-Timing header.

Queries are timed by a wrapper installed on every database connection as it is created; it
finds the request it belongs to through a context variable, which asgiref carries into the
threads sync code runs on.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase

from inkwave import logcontext
from monitoring.requests import (
    UNMATCHED_ROUTE,
    SlowQueryRecord,
    SlowRequestRecord,
    get_request_monitor,
    normalise_sql,
)
from monitoring.system import resident_bytes

REQUEST_ID_RESPONSE_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(slots=True)
class RequestStats:
    request_id: str
    route: str = UNMATCHED_ROUTE
    queries: int = 0
    query_ms: float = 0.0


class _Settings:
    """The settings read on every request and query, read once: each `settings.X` costs a
    lazy-object lookup, and a handful of them were a measurable part of what the middleware
    adds to a request. Read again when a test overrides one (setting_changed)."""

    def __init__(self) -> None:
        self.load()

    def load(self, **kwargs: Any) -> None:
        self.request_id_header: str = settings.REQUEST_ID_HEADER
        self.session_cookie: str = settings.SESSION_COOKIE_NAME
        self.slow_query_ms: float = settings.SLOW_QUERY_MS
        self.slow_request_ms: float = settings.SLOW_REQUEST_MS


_settings = _Settings()
setting_changed.connect(_settings.load, dispatch_uid="monitoring.middleware.settings")

current_request: ContextVar[RequestStats | None] = ContextVar("current_request", default=None)


def request_id_of(request: HttpRequest) -> str:
    header = _settings.request_id_header
    if header:
        given = request.headers.get(header, "")
        if _VALID_ID.fullmatch(given):
            return given
    # Not uuid4: os.urandom lets the GIL go, and getting it back from a busy event loop
    # thread costs more than the rest of the middleware. An id to follow, not a secret.
    return f"{random.getrandbits(128):032x}"


def _is_staff(request: HttpRequest) -> bool:
    """Without a session cookie nobody is signed in: the lazy user is left unread, which
    spares an anonymous request (a probe, a scrape, a guest) the session and auth lookups."""
    if _settings.session_cookie not in request.COOKIES:
        return False
    user = getattr(request, "user", None)
    return user is not None and bool(getattr(user, "is_staff", False))


def timed_query(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
) -> Any:
    """A connection's execute wrapper: the query's time goes to the request that made it;
    a slow one is recorded, whoever made it (a request, a task, a consumer)."""
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        stats = current_request.get()
        if stats is not None:
            stats.queries += 1
            stats.query_ms += elapsed_ms
        if elapsed_ms >= _settings.slow_query_ms:
            get_request_monitor().track_slow_query(
                SlowQueryRecord(
                    at=time.time(),
                    statement=normalise_sql(sql),
                    duration_ms=elapsed_ms,
                    route=stats.route if stats is not None else "",
                    request_id=stats.request_id if stats is not None else "",
                )
            )


def install_query_timer(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created: every new connection times its queries (once each)."""
    if timed_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(timed_query)


class PerformanceMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.enabled = settings.MONITORING_ENABLED
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        stats, started, memory = self.begin(request)
        token = current_request.set(stats)
        try:
            with logcontext.scope(request_id=stats.request_id):
                response = self.get_response(request)
        finally:
            current_request.reset(token)
        return self.finish(request, response, stats, started, memory)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        stats, started, memory = self.begin(request)
        token = current_request.set(stats)
        try:
            with logcontext.scope(request_id=stats.request_id):
                get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
                get_response = self.get_response
                response = await get_response(request)
        finally:
            current_request.reset(token)
        return self.finish(request, response, stats, started, memory)

    def process_view(self, request: HttpRequest, *args: Any) -> None:
        """The route is known once the URL is resolved: a slow query of the view has it."""
        stats: RequestStats | None = getattr(request, "_performance", None)
        match = request.resolver_match
        if stats is not None and match is not None and match.route:
            stats.route = match.route

    def begin(self, request: HttpRequest) -> tuple[RequestStats, float, int]:
        stats = RequestStats(request_id_of(request))
        request.request_id = stats.request_id  # type: ignore[attr-defined]
        request._performance = stats  # type: ignore[attr-defined]
        memory = resident_bytes() if self.enabled else 0
        return stats, time.perf_counter(), memory

    def finish(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        stats: RequestStats,
        started: float,
        memory: int,
    ) -> HttpResponseBase:
        duration_ms = (time.perf_counter() - started) * 1000.0
        response[REQUEST_ID_RESPONSE_HEADER] = stats.request_id
        match = getattr(request, "resolver_match", None)
        if match is not None and match.route:
            stats.route = match.route
        if not self.enabled:
            return response
        size = int(response.get("Content-Length") or 0)
        if not size and not response.streaming:
            size = len(response.content)  # type: ignore[attr-defined]
        growth = resident_bytes() - memory
        monitor = get_request_monitor()
        monitor.track_request(
            stats.route,
            response.status_code,
            duration_ms,
            queries=stats.queries,
            query_ms=stats.query_ms,
            response_bytes=size,
            memory_growth_bytes=growth,
        )
        if duration_ms >= _settings.slow_request_ms:
            monitor.track_slow_request(
                SlowRequestRecord(
                    at=time.time(),
                    route=stats.route,
                    method=request.method or "",
                    status=response.status_code,
                    duration_ms=duration_ms,
                    queries=stats.queries,
                    query_ms=stats.query_ms,
                    request_id=stats.request_id,
                )
            )
        if _is_staff(request):
            database = f'db;dur={stats.query_ms:.1f};desc="{stats.queries} queries"'
            response["Server-Timing"] = f"app;dur={duration_ms:.1f}, {database}"
        return response
