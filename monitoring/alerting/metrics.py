"""The metric registry: what an alert rule can watch, and how its value is computed.

A metric knows its unit and computes its value over a window from the sample rows, in the
database. It returns one value per scope ("" for the whole deployment, a venue id for
per-venue metrics); a scope with no data is absent. Later features register their own
metrics with `register()`; the engine never changes.

Values are cached per cycle by (metric, window), so 500 rules over a handful of distinct
windows cost a handful of queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Max, Sum

from monitoring.histogram import add_buckets, quantile
from monitoring.models import WebSocketSample, Worker, WorkerRole

Values = dict[str, float]


@dataclass(frozen=True)
class Window:
    end: datetime
    seconds: int

    @property
    def start(self) -> datetime:
        return self.end - timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "per minute", "%", "ms", "connections", "rooms", "workers", ""
    compute: Callable[[Window], Values] = field(compare=False)
    maximum: float | None = None
    # A dependency that must be up for the value to mean anything (inhibition).
    depends_on: tuple[str, ...] = ()
    per_venue: bool = False

    @property
    def unit_suffix(self) -> str:
        if self.unit == "%":
            return "%"
        return f" {self.unit}" if self.unit else ""


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    REGISTRY[metric.key] = metric
    return metric


def metric_choices() -> list[tuple[str, str]]:
    return [
        (key, f"{m.label} ({m.unit})" if m.unit else m.label) for key, m in sorted(REGISTRY.items())
    ]


# --- WebSocket metrics -----------------------------------------------------------------


def _web_samples(window: Window):  # type: ignore[no-untyped-def]
    return WebSocketSample.objects.filter(
        worker__role=WorkerRole.WEB, recorded_at__gt=window.start, recorded_at__lte=window.end
    )


def _sums(window: Window) -> dict[str, float]:
    return _web_samples(window).aggregate(
        connections=Sum("connections", default=0),
        disconnections=Sum("disconnections", default=0),
        rejected=Sum("rejected_connections", default=0),
        received=Sum("messages_received", default=0),
        errors=Sum("errors", default=0),
        delivery_count=Sum("delivery_count", default=0),
        delivery_sum=Sum("delivery_sum_ms", default=0.0),
        samples=Max("pk"),
    )


def _per_minute(field_name: str) -> Callable[[Window], Values]:
    def compute(window: Window) -> Values:
        sums = _sums(window)
        if sums["samples"] is None:
            return {}
        return {"": sums[field_name] * 60.0 / window.seconds}

    return compute


def _error_rate(window: Window) -> Values:
    sums = _sums(window)
    operations = sums["connections"] + sums["rejected"] + sums["received"]
    if sums["samples"] is None:
        return {}
    return {"": 100.0 * sums["errors"] / operations if operations else 0.0}


def _latency_avg(window: Window) -> Values:
    sums = _sums(window)
    if not sums["delivery_count"]:
        return {}
    return {"": sums["delivery_sum"] / sums["delivery_count"]}


def _latency_p95(window: Window) -> Values:
    rows = (
        _web_samples(window).filter(delivery_count__gt=0).values_list("delivery_buckets", flat=True)
    )
    value = quantile(add_buckets(rows), 0.95)
    return {} if value is None else {"": value}


def _live(role: str, now: datetime) -> list[Worker]:
    cutoff = now - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    return list(
        Worker.objects.filter(
            role=role, last_seen_at__gte=cutoff, stopped_at__isnull=True
        ).select_related("last_sample")
    )


def _gauge(attribute: str) -> Callable[[Window], Values]:
    def compute(window: Window) -> Values:
        samples = [w.last_sample for w in _live(WorkerRole.WEB, window.end) if w.last_sample]
        if not samples:
            return {}
        return {"": float(sum(getattr(s, attribute) for s in samples))}

    return compute


def _memory_percent(window: Window) -> Values:
    peak = WebSocketSample.objects.filter(
        recorded_at__gt=window.start, recorded_at__lte=window.end
    ).aggregate(peak=Max("memory_percent"))["peak"]
    return {} if peak is None else {"": float(peak)}


def _missing_workers(window: Window) -> Values:
    """Processes that were reporting during the window and have gone silent without stopping."""
    cutoff = window.end - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    missing = Worker.objects.filter(
        last_seen_at__lt=cutoff, last_seen_at__gte=window.start, stopped_at__isnull=True
    ).count()
    return {"": float(missing)}


def _database_down(window: Window) -> Values:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return {"": 1.0}
    return {"": 0.0}


def _redis_down(window: Window) -> Values:
    if not settings.REDIS_URL:
        return {}
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    except redis.RedisError:
        return {"": 1.0}
    finally:
        client.close()
    return {"": 0.0}


def _live_web_workers(window: Window) -> Values:
    return {"": float(len(_live(WorkerRole.WEB, window.end)))}


for _metric in (
    Metric("ws.new_connections_per_minute", "New WebSocket connections", "per minute",
           _per_minute("connections"), depends_on=("database", "redis")),
    Metric("ws.disconnections_per_minute", "WebSocket disconnections", "per minute",
           _per_minute("disconnections"), depends_on=("database", "redis")),
    Metric("ws.error_rate", "WebSocket error rate", "%", _error_rate, maximum=100,
           depends_on=("database", "redis")),
    Metric("ws.latency_avg_ms", "Average delivery latency", "ms", _latency_avg,
           depends_on=("database", "redis")),
    Metric("ws.latency_p95_ms", "95th percentile delivery latency", "ms", _latency_p95,
           depends_on=("database", "redis")),
    Metric("ws.active_connections", "Active WebSocket connections", "connections",
           _gauge("active_connections"), depends_on=("database", "redis")),
    Metric("ws.active_rooms", "Active venue rooms", "rooms", _gauge("active_rooms"),
           depends_on=("database", "redis")),
    Metric("process.memory_percent", "Process memory (of its limit)", "%", _memory_percent,
           maximum=100, depends_on=("database",)),
    Metric("workers.missing", "Processes that stopped reporting", "workers", _missing_workers,
           depends_on=("database",)),
    Metric("workers.web_live", "Live web processes", "workers", _live_web_workers,
           depends_on=("database",)),
    Metric("dependency.database_down", "Database unreachable", "", _database_down, maximum=1),
    Metric("dependency.redis_down", "Redis unreachable", "", _redis_down, maximum=1),
):  # fmt: skip
    register(_metric)
