"""Deployment-wide WebSocket statistics, summed over the latest sample of every live worker.

Field names follow the specification's camelCase so clients written against it keep working.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from monitoring import figures
from monitoring.models import MetricTotals, WebSocketSample, Worker


class MemoryUsageJSON(TypedDict):
    heapUsed: int
    heapTotal: int
    rss: int
    percent: float


class LatencyJSON(TypedDict):
    count: int
    avgMs: float | None
    p50Ms: float | None
    p95Ms: float | None
    p99Ms: float | None


class WorkerJSON(TypedDict):
    id: str
    hostname: str
    pid: int
    uptime: int
    lastSeen: str
    activeConnections: int
    activeRooms: int
    memoryUsage: MemoryUsageJSON


class RoomsJSON(TypedDict):
    active: int
    members: dict[str, int]


class WindowJSON(TypedDict):
    seconds: int
    connections: int
    disconnections: int
    rejectedConnections: int
    messagesSent: int
    messagesReceived: int
    errors: int
    clientErrors: int
    errorsByType: dict[str, int]
    messagesPerMinute: float
    resumes: int
    eventsReplayed: int
    resyncs: int


class WebSocketStats(TypedDict):
    activeConnections: int
    totalConnections: int
    totalDisconnections: int
    totalRejectedConnections: int
    totalMessagesSent: int
    totalMessagesReceived: int
    connectionErrors: int
    totalServiceErrors: int
    totalClientErrors: int
    totalResumes: int
    totalEventsReplayed: int
    totalResyncs: int
    errorRate: float
    clientErrorRate: float
    rooms: RoomsJSON
    latency: LatencyJSON
    roundTrip: LatencyJSON
    memoryUsage: MemoryUsageJSON
    workers: list[WorkerJSON]
    uptime: int
    window: WindowJSON
    metricsSince: str | None
    timestamp: str


def _memory(reporting: list[tuple[Worker, WebSocketSample]]) -> MemoryUsageJSON:
    rss = sum(sample.memory_rss_bytes for _, sample in reporting)
    # Processes on one host share its memory (or its container's): count each limit once.
    limits = {worker.hostname: sample.memory_limit_bytes for worker, sample in reporting}
    total = sum(limits.values())
    return {
        "heapUsed": rss,
        "heapTotal": total,
        "rss": rss,
        "percent": round(100.0 * rss / total, 3) if total else 0.0,
    }


def _latency(
    buckets: list[list[int]], count: int, total_ms: float, low: float | None, high: float | None
) -> LatencyJSON:
    def pct(q: float) -> float | None:
        value = figures.percentile(buckets, q, low, high)
        return None if value is None else round(value, 3)

    return {
        "count": count,
        "avgMs": round(total_ms / count, 3) if count else None,
        "p50Ms": pct(0.50),
        "p95Ms": pct(0.95),
        "p99Ms": pct(0.99),
    }


def window_samples(
    now: datetime, seconds: int
) -> tuple[WindowJSON, LatencyJSON, LatencyJSON, figures.Sums]:
    rows = figures.samples(now - timedelta(seconds=seconds), now)
    sums = rows.aggregate(**figures.SUMS, **figures.EXTREMES)
    by_type: Counter[str] = Counter()
    delivery_buckets: list[list[int]] = []
    rtt_buckets: list[list[int]] = []
    detail = rows.filter(
        Q(errors__gt=0)
        | Q(client_errors__gt=0)
        | Q(delivery_count__gt=0)
        | Q(round_trip_count__gt=0)
    )
    for errors_by_type, delivery, rtt in detail.values_list(
        "errors_by_type", "delivery_buckets", "round_trip_buckets"
    ):
        by_type.update(errors_by_type)
        delivery_buckets.append(delivery)
        rtt_buckets.append(rtt)
    window: WindowJSON = {
        "seconds": seconds,
        "connections": sums["connections"],
        "disconnections": sums["disconnections"],
        "rejectedConnections": sums["rejected"],
        "messagesSent": sums["sent"],
        "messagesReceived": sums["received"],
        "errors": sums["errors"],
        "clientErrors": sums["client_errors"],
        "errorsByType": dict(by_type),
        "messagesPerMinute": round((sums["sent"] + sums["received"]) * 60 / seconds, 3),
        "resumes": sums["resumes"],
        "eventsReplayed": sums["events_replayed"],
        "resyncs": sums["resyncs"],
    }
    return (
        window,
        _latency(
            delivery_buckets,
            sums["delivery_count"],
            sums["delivery_sum"],
            sums["delivery_min"],
            sums["delivery_max"],
        ),
        _latency(
            rtt_buckets,
            sums["round_trip_count"],
            sums["round_trip_sum"],
            sums["round_trip_min"],
            sums["round_trip_max"],
        ),
        sums,
    )


def websocket_stats(now: datetime | None = None) -> WebSocketStats:
    now = now or timezone.now()
    workers = figures.live_workers(now)
    reporting = [(w, w.last_sample) for w in workers if w.last_sample is not None]
    samples = [sample for _, sample in reporting]
    rooms: Counter[str] = Counter()
    for sample in samples:
        rooms.update(sample.rooms)
    window, latency, round_trip, sums = window_samples(now, settings.STATS_WINDOW_SECONDS)
    # Read after the window: a flush adds its sample and its counts to the totals in one
    # transaction, so every sample the window read is in the totals read after it. Read
    # before, a flush committed in between showed in the window and not in the totals
    # (1 service error by kind, 0 in all: a test saw it once in many runs).
    totals = MetricTotals.objects.filter(pk=MetricTotals.SINGLETON_ID).first()
    oldest = workers[0].started_at if workers else None
    members = {room: count for room, count in sorted(rooms.items()) if count > 0}
    return {
        "activeConnections": sum(s.active_connections for s in samples),
        "totalConnections": totals.connections if totals else 0,
        "totalDisconnections": totals.disconnections if totals else 0,
        "totalRejectedConnections": totals.rejected_connections if totals else 0,
        "totalMessagesSent": totals.messages_sent if totals else 0,
        "totalMessagesReceived": totals.messages_received if totals else 0,
        "connectionErrors": totals.errors + totals.client_errors if totals else 0,
        "totalServiceErrors": totals.errors if totals else 0,
        "totalClientErrors": totals.client_errors if totals else 0,
        "totalResumes": totals.resumes if totals else 0,
        "totalEventsReplayed": totals.events_replayed if totals else 0,
        "totalResyncs": totals.resyncs if totals else 0,
        "errorRate": round(figures.service_error_rate(sums), 6),
        "clientErrorRate": round(figures.client_error_rate(sums), 6),
        "rooms": {"active": len(members), "members": members},
        "latency": latency,
        "roundTrip": round_trip,
        "memoryUsage": _memory(reporting),
        "workers": [_worker_json(w, now) for w in workers],
        "uptime": int((now - oldest).total_seconds()) if oldest else 0,
        "window": window,
        "metricsSince": totals.started_at.isoformat() if totals else None,
        "timestamp": now.isoformat(),
    }


def _worker_json(worker: Worker, now: datetime) -> WorkerJSON:
    sample = worker.last_sample
    return {
        "id": worker.name,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "uptime": int((now - worker.started_at).total_seconds()),
        "lastSeen": worker.last_seen_at.isoformat(),
        "activeConnections": sample.active_connections if sample else 0,
        "activeRooms": sample.active_rooms if sample else 0,
        "memoryUsage": _memory([(worker, sample)] if sample else []),
    }


class WebSocketHealth(TypedDict):
    status: str
    connections: int
    uptime: int
    errorRate: float
    memoryUsage: MemoryUsageJSON
    latency: LatencyJSON
    workers: int
    reasons: list[str]
    timestamp: str


def websocket_health(now: datetime | None = None) -> WebSocketHealth:
    """The specification's health shape, with the reasons behind a status other than healthy."""
    stats = websocket_stats(now)
    reasons: list[str] = []
    if not stats["workers"]:
        reasons.append("no web worker has reported recently")
    if stats["errorRate"] > settings.WS_DEGRADED_ERROR_RATE:
        reasons.append(
            f"error rate {stats['errorRate']:.2%} in the last {stats['window']['seconds']}s"
        )
    avg = stats["latency"]["avgMs"]
    if avg is not None and avg > settings.WS_DEGRADED_LATENCY_MS:
        reasons.append(f"average delivery latency {avg:.0f} ms")
    worst_memory = max((w["memoryUsage"]["percent"] for w in stats["workers"]), default=0.0)
    if worst_memory > settings.WS_DEGRADED_MEMORY_PERCENT:
        reasons.append(f"a worker uses {worst_memory:.0f}% of its memory")
    if not stats["workers"]:
        status = "unhealthy"
    else:
        status = "degraded" if reasons else "healthy"
    return {
        "status": status,
        "connections": stats["activeConnections"],
        "uptime": stats["uptime"],
        "errorRate": stats["errorRate"],
        "memoryUsage": stats["memoryUsage"],
        "latency": stats["latency"],
        "workers": len(stats["workers"]),
        "reasons": reasons,
        "timestamp": stats["timestamp"],
    }
