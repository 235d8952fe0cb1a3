"""What the dashboard shows, computed from the same figures as the endpoints and alerts.

Live: monitoring.stats' deployment totals (the sum over live web processes, as
/api/v1/monitoring/websocket/stats answers), the HTTP window from figures.HTTP_SUMS, and the
orders as the reports count them. History: the sample rows of a range grouped into buckets
by the database; the week and month read hourly rollups of them instead
(monitoring.dashboard.trends), so a month costs about what an hour does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Min, Sum
from typing_extensions import TypedDict

from monitoring import figures, stats
from monitoring.dashboard import trends
from monitoring.dashboard.alerts import incidents_between
from monitoring.dashboard.business import OrdersHistoryJSON, OrdersLiveJSON, registered


class LatencyLiveJSON(TypedDict):
    count: int
    avgMs: float | None
    p50Ms: float | None
    p95Ms: float | None
    p99Ms: float | None


class HttpLiveJSON(TypedDict):
    requestsPerMinute: float
    serverErrorPercent: float | None
    clientErrorPercent: float | None
    avgMs: float | None
    p50Ms: float | None
    p95Ms: float | None
    p99Ms: float | None
    queryAvgMs: float | None
    queriesPerRequest: float | None


class LiveJSON(TypedDict):
    timestamp: str
    windowSeconds: int
    webWorkers: int
    activeConnections: int
    activeRooms: int
    messagesPerMinute: float
    errorRate: float  # a fraction, as the stats endpoint's
    clientErrorRate: float
    latency: LatencyLiveJSON
    memoryRssBytes: int
    memoryPercent: float
    http: HttpLiveJSON
    orders: OrdersLiveJSON | None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def http_window(start: datetime, end: datetime) -> HttpLiveJSON:
    rows = figures.served_requests(start, end)
    sums = rows.aggregate(
        **figures.HTTP_SUMS,
        client_errors=Sum("client_errors", default=0),
        low=Min("duration_min_ms"),
        high=Max("duration_max_ms"),
    )
    buckets = list(rows.filter(requests__gt=0).values_list("duration_buckets", flat=True))
    seconds = (end - start).total_seconds()

    def pct(q: float) -> float | None:
        return _round(figures.percentile(buckets, q, sums["low"], sums["high"]))

    requests = sums["requests"]
    return {
        "requestsPerMinute": round(requests * 60 / seconds, 3),
        "serverErrorPercent": _round(figures.http_server_error_percent(sums), 4),
        "clientErrorPercent": round(100.0 * sums["client_errors"] / requests, 4)
        if requests
        else None,
        "avgMs": _round(figures.http_average_ms(sums)),
        "p50Ms": pct(0.50),
        "p95Ms": pct(0.95),
        "p99Ms": pct(0.99),
        "queryAvgMs": _round(figures.query_average_ms(sums)),
        "queriesPerRequest": round(sums["queries"] / requests, 3) if requests else None,
    }


def live_figures(now: datetime) -> LiveJSON:
    ws = stats.websocket_stats(now)
    window = settings.STATS_WINDOW_SECONDS
    business = registered()
    latency = ws["latency"]
    return {
        "timestamp": ws["timestamp"],
        "windowSeconds": window,
        "webWorkers": len(ws["workers"]),
        "activeConnections": ws["activeConnections"],
        "activeRooms": ws["rooms"]["active"],
        "messagesPerMinute": ws["window"]["messagesPerMinute"],
        "errorRate": ws["errorRate"],
        "clientErrorRate": ws["clientErrorRate"],
        "latency": {
            "count": latency["count"],
            "avgMs": latency["avgMs"],
            "p50Ms": latency["p50Ms"],
            "p95Ms": latency["p95Ms"],
            "p99Ms": latency["p99Ms"],
        },
        "memoryRssBytes": ws["memoryUsage"]["rss"],
        "memoryPercent": ws["memoryUsage"]["percent"],
        "http": http_window(now - timedelta(seconds=window), now),
        "orders": business.live(now) if business is not None else None,
    }


# --- history ---------------------------------------------------------------------------

# Each range and the width of its buckets: a hundred-odd points whatever the range.
RANGES: dict[str, tuple[int, int]] = {
    "hour": (3600, 60),
    "day": (86400, 600),
    "week": (7 * 86400, 3600),
    "month": (30 * 86400, 6 * 3600),
}
# The ranges read from the hourly rollups (monitoring.dashboard.trends), the others from the
# samples.
ROLLED_UP = frozenset({"week", "month"})


class SpanJSON(TypedDict):
    id: int
    start: float
    end: float | None  # null: still firing
    label: str
    severity: str
    url: str


Series = list[float | None]


class HistorySeriesJSON(TypedDict):
    activeConnections: Series  # time-weighted average over the bucket, all web processes
    messagesPerMinute: Series
    errorRatePercent: Series
    deliveryAvgMs: Series
    memoryMb: Series  # time-weighted average of the processes' summed resident memory
    httpRequestsPerMinute: Series
    httpAvgMs: Series
    httpServerErrorPercent: Series
    queryAvgMs: Series


class HistoryJSON(TypedDict):
    range: str
    start: str
    end: str
    stepSeconds: int
    times: list[int]  # each bucket's end, epoch seconds
    series: HistorySeriesJSON
    orders: OrdersHistoryJSON | None
    incidents: list[SpanJSON]


def bucket_numbers(start: datetime, end: datetime, step: int) -> list[int]:
    """EpochBucket's numbers of the buckets that (start, end] touches."""
    first = int(start.timestamp()) // step
    last = -(-int(end.timestamp()) // step) - 1
    return list(range(first, last + 1))


def _covered(bucket: int, step: int, start: float, end: float) -> float:
    """Seconds of the bucket inside (start, end]: the first and last are partial."""
    return max(0.0, min((bucket + 1) * step, end) - max(bucket * step, start))


def history(range_name: str, now: datetime) -> HistoryJSON:
    seconds, step = RANGES[range_name]
    start = now - timedelta(seconds=seconds)
    buckets = bucket_numbers(start, now, step)
    if range_name in ROLLED_UP:
        ws, http = trends.trend_buckets(start, now, step)
    else:
        ws, http = trends.raw_buckets(start, now, step)
    t0, t1 = start.timestamp(), now.timestamp()
    series: HistorySeriesJSON = {
        "activeConnections": [],
        "messagesPerMinute": [],
        "errorRatePercent": [],
        "deliveryAvgMs": [],
        "memoryMb": [],
        "httpRequestsPerMinute": [],
        "httpAvgMs": [],
        "httpServerErrorPercent": [],
        "queryAvgMs": [],
    }
    began = trends.first_data(start, now)
    t_data = t0 if began is None else max(t0, began)
    for bucket in buckets:
        covered = _covered(bucket, step, t_data, t1) or _covered(bucket, step, t0, t1) or step
        w, h = ws.get(bucket), http.get(bucket)
        series["activeConnections"].append(
            None if w is None else round(w["connection_seconds"] / covered, 2)
        )
        series["memoryMb"].append(
            None if w is None else round(w["memory_seconds"] / covered / 1e6, 1)
        )
        series["messagesPerMinute"].append(
            None if w is None else round((w["sent"] + w["received"]) * 60 / covered, 2)
        )
        series["errorRatePercent"].append(
            None if w is None else round(100 * figures.service_error_rate(w), 4)
        )
        series["deliveryAvgMs"].append(
            None
            if w is None or not w["delivery_count"]
            else round(w["delivery_sum"] / w["delivery_count"], 2)
        )
        series["httpRequestsPerMinute"].append(
            None if h is None else round(h["requests"] * 60 / covered, 2)
        )
        series["httpAvgMs"].append(None if h is None else _round(figures.http_average_ms(h), 2))
        series["httpServerErrorPercent"].append(
            None if h is None else _round(figures.http_server_error_percent(h), 3)
        )
        series["queryAvgMs"].append(None if h is None else _round(figures.query_average_ms(h)))
    business = registered()
    return {
        "range": range_name,
        "start": start.isoformat(),
        "end": now.isoformat(),
        "stepSeconds": step,
        "times": [min((b + 1) * step, int(t1)) for b in buckets],
        "series": series,
        "orders": business.history(start, now, step, buckets) if business else None,
        "incidents": incident_spans(start, now),
    }


def incident_spans(start: datetime, end: datetime, limit: int = 200) -> list[SpanJSON]:
    return [
        {
            "id": incident.pk,
            "start": incident.opened_at.timestamp(),
            "end": incident.resolved_at.timestamp() if incident.resolved_at else None,
            "label": incident.title,
            "severity": incident.severity,
            "url": url,
        }
        for incident, url in incidents_between(start, end, limit)
    ]
