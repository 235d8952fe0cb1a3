"""Views for tests/test_request_performance.py and tests/test_http_handler.py only: sync and
async, slow, one that grows the process, one that says what its log lines would carry, one
that says its thread."""

from __future__ import annotations

import threading

import structlog
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path

from orders.models import Venue


def sync_view(request: HttpRequest, venue_id: int) -> JsonResponse:
    return JsonResponse({"venues": Venue.objects.filter(pk=venue_id).count()})


async def async_view(request: HttpRequest, venue_id: int) -> JsonResponse:
    return JsonResponse({"venues": await Venue.objects.filter(pk=venue_id).acount()})


def slow_view(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        # A literal and a parameter: neither may be kept.
        cursor.execute("SELECT pg_sleep(%s), 'iwv_literal_secret', 42", ["0.02"])
    return JsonResponse({"slept": True})


# What growing_view keeps alive, so the memory it takes is still taken when it answers.
held: list[bytearray] = []


def growing_view(request: HttpRequest) -> JsonResponse:
    """Takes 32 MiB and touches every page of it, so the process's resident size grows."""
    block = bytearray(32 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    held.append(block)
    return JsonResponse({"held": len(held)})


def failing_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "no"}, status=503)


def log_context_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(structlog.contextvars.get_contextvars())


# tests/test_http_handler.py sets it to the number of requests that must be in flight at once.
meeting: list[threading.Barrier] = []


def thread_view(request: HttpRequest) -> JsonResponse:
    """Says which thread ran it; with a meeting set, waits until that many requests have come."""
    if meeting:
        meeting[0].wait(timeout=10)
    thread = threading.current_thread()
    return JsonResponse({"thread": f"{thread.name} {thread.ident}"})


urlpatterns = [
    path("perf/sync/<int:venue_id>/", sync_view),
    path("perf/async/<int:venue_id>/", async_view),
    path("perf/slow/", slow_view),
    path("perf/failing/", failing_view),
    path("perf/growing/", growing_view),
    path("perf/log-context/", log_context_view),
    path("perf/thread/", thread_view),
]
