"""One source for every figure read from the sample rows.

The statistics and health endpoints, the alert metrics, the health update and the reports
call these, so that a figure means one thing, over the same rows, in one unit: an operator
who reads an error rate of 4.9% on the endpoint is never paged for 5% over the same window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, QuerySet, Sum

from monitoring.histogram import add_buckets, quantile
from monitoring.models import RequestSample, WebSocketSample, Worker, WorkerRole
from monitoring.requests import PROBE_ROUTES


def live_workers(now: datetime, role: str = WorkerRole.WEB) -> list[Worker]:
    """Processes of `role` that reported within WORKER_LIVENESS_SECONDS and did not stop,
    oldest first, each with its latest sample."""
    cutoff = now - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    return list(
        Worker.objects.filter(role=role, last_seen_at__gte=cutoff, stopped_at__isnull=True)
        .select_related("last_sample")
        .order_by("started_at")
    )


def samples(start: datetime, end: datetime) -> QuerySet[WebSocketSample]:
    """The sample rows of (start, end]: web processes write them (the others heartbeat)."""
    return WebSocketSample.objects.filter(
        worker__role=WorkerRole.WEB, recorded_at__gt=start, recorded_at__lte=end
    )


def released(start: datetime, end: datetime) -> QuerySet[Worker]:
    """Processes declared dead in (start, end] with connections open at their last report:
    killed outright, they never reported those clients leaving, and
    recording.release_dead_workers counted them as disconnected in the running totals (the
    statistics' totalDisconnections, /metrics' counter)."""
    return Worker.objects.filter(
        declared_dead_at__gt=start, declared_dead_at__lte=end, connections_lost__gt=0
    )


# The counts a window sums (one query); every rate below is computed from these.
SUMS = {
    "connections": Sum("connections", default=0),
    "disconnections": Sum("disconnections", default=0),
    "rejected": Sum("rejected_connections", default=0),
    "sent": Sum("messages_sent", default=0),
    "received": Sum("messages_received", default=0),
    "errors": Sum("errors", default=0),
    "client_errors": Sum("client_errors", default=0),
    "resumes": Sum("resumes", default=0),
    "events_replayed": Sum("events_replayed", default=0),
    "resyncs": Sum("resyncs", default=0),
    "delivery_count": Sum("delivery_count", default=0),
    "delivery_sum": Sum("delivery_sum_ms", default=0.0),
    "round_trip_count": Sum("round_trip_count", default=0),
    "round_trip_sum": Sum("round_trip_sum_ms", default=0.0),
    "samples": Count("pk"),
}
# The smallest and largest latencies observed in a window (they bound its percentiles).
EXTREMES = {
    "delivery_min": Min("delivery_min_ms"),
    "delivery_max": Max("delivery_max_ms"),
    "round_trip_min": Min("round_trip_min_ms"),
    "round_trip_max": Max("round_trip_max_ms"),
}
Sums = dict[str, float]


def error_rate(errors: float, attempts: float, received: float) -> float:
    """The share of the service's operations that failed, as a fraction (0.001 = 0.1%).

    An operation is a connection attempt or a frame received. Some failures have no client
    operation behind them (a broadcast, a disconnection the channel layer lost: during a
    Redis outage they outnumber the operations); the rate is then 1, everything failed,
    never more. Clients' errors (refusals, bad frames: anyone can send those) are divided
    the same way, apart (`client_error_rate`).
    """
    operations = attempts + received
    if errors <= 0:
        return 0.0
    return errors / max(operations, errors)


def service_error_rate(sums: Sums) -> float:
    return error_rate(sums["errors"], sums["connections"] + sums["rejected"], sums["received"])


def client_error_rate(sums: Sums) -> float:
    return error_rate(
        sums["client_errors"], sums["connections"] + sums["rejected"], sums["received"]
    )


def served_requests(start: datetime, end: datetime) -> QuerySet[RequestSample]:
    """The request samples of a window that the HTTP figures count: every route of every web
    process but the probes (PROBE_ROUTES: a /health answering 503 while a dependency is down
    is that dependency's alert, not a failed request). The alert metrics and the dashboard
    both read this."""
    return RequestSample.objects.filter(recorded_at__gt=start, recorded_at__lte=end).exclude(
        route__in=PROBE_ROUTES
    )


# The counts of a window of HTTP requests (served_requests); the alert metrics and the
# dashboard compute their HTTP figures from these.
HTTP_SUMS = {
    "requests": Sum("requests", default=0),
    "server_errors": Sum("server_errors", default=0),
    "duration_sum": Sum("duration_sum_ms", default=0.0),
    "queries": Sum("queries", default=0),
    "query_ms": Sum("query_ms", default=0.0),
}


def http_server_error_percent(sums: Sums) -> float | None:
    """5xx answers as a percentage of requests; None without requests."""
    return 100.0 * sums["server_errors"] / sums["requests"] if sums["requests"] else None


def http_average_ms(sums: Sums) -> float | None:
    return sums["duration_sum"] / sums["requests"] if sums["requests"] else None


def query_average_ms(sums: Sums) -> float | None:
    """The average database query's time, over the queries the requests ran."""
    return sums["query_ms"] / sums["queries"] if sums["queries"] else None


def percentile(
    buckets: Iterable[Sequence[int]], q: float, low: float | None, high: float | None
) -> float | None:
    """The q-quantile of summed histograms, never outside what was observed: interpolation
    inside a bucket can land beyond every value seen (one 12.5 ms round trip is not a
    17.5 ms median), so it is clamped to the smallest and largest observation, as
    HDR-style histograms report."""
    value = quantile(add_buckets(buckets), q)
    if value is None:
        return None
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value
