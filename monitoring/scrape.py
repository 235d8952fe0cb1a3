"""What one scrape of /metrics reads: the whole deployment's figures, from the database.

Any web process may answer a scrape (they sit behind a balancer), so none answers from its
own memory: each reads the rows every process writes. The figures come from where the
statistics endpoint and the alert metrics get theirs (`websocket_stats`, the running totals,
the alert metric functions), so a number on a Grafana panel is the number on the endpoint.
Counters come from running totals only, so they never go down when a process restarts or
old samples are pruned.

Apps above monitoring add gauges of their own with `register_gauge` at start-up (orders:
orders by status); monitoring never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone

from monitoring import figures
from monitoring.alerting.defaults import DEFAULT_RULES
from monitoring.alerting.metrics import (
    REGISTRY,
    Window,
    outbox_age_seconds,
    slack_failing_seconds,
)
from monitoring.models import (
    Incident,
    IncidentStatus,
    MetricTotals,
    RouteTotals,
    Severity,
    WorkerRole,
)
from monitoring.stats import WebSocketStats, websocket_stats
from notifications.outbox import status_counts

# Gauges of rows that only accumulate (sent notifications) count this recent past: a scrape
# every few seconds must not count a table that keeps a month.
RECENT = timedelta(hours=24)


@dataclass(frozen=True)
class ExtraGauge:
    """A gauge with one label, read by a function of a higher app at each scrape."""

    name: str
    documentation: str
    label: str
    read: Callable[[], Mapping[str, float]]


_extra_gauges: dict[str, ExtraGauge] = {}


def register_gauge(gauge: ExtraGauge) -> None:
    """Called from an AppConfig.ready(); registering a name again replaces it."""
    _extra_gauges[gauge.name] = gauge


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram since the metrics began: counts per bucket of monitoring.histogram's
    bounds (not cumulative; the last bucket is above every bound), their sum and count."""

    buckets: list[int]
    sum_ms: float
    count: int


@dataclass(frozen=True)
class ProcessMemory:
    worker: str
    role: str
    rss_bytes: int
    percent: float


@dataclass(frozen=True)
class Reading:
    stats: WebSocketStats
    delivery: HistogramTotals
    round_trip: HistogramTotals
    memory: list[ProcessMemory]
    live_workers: dict[str, int]
    workers_died: float
    workers_missing: float
    routes: list[RouteTotals]
    incidents_open: dict[str, int]
    outbox: dict[str, int]
    outbox_age_seconds: float
    slack_failing_seconds: float
    extra: list[tuple[ExtraGauge, Mapping[str, float]]] = field(default_factory=list)


def default_window(metric: str) -> int:
    """The shipped rule's window for `metric` (a gauge that counts over a window uses it)."""
    return int(next(rule["window_seconds"] for rule in DEFAULT_RULES if rule["metric"] == metric))


def read_deployment(now: datetime | None = None) -> Reading:
    now = now or timezone.now()
    stats = websocket_stats(now)
    delivery, round_trip = _latency_totals()
    return Reading(
        stats=stats,
        delivery=delivery,
        round_trip=round_trip,
        memory=_memory(stats, now),
        live_workers={role: _live(role, stats, now) for role in WorkerRole.values},
        workers_died=_window_metric("workers.crashed", now),
        workers_missing=_window_metric("workers.missing", now),
        routes=list(RouteTotals.objects.all()),
        incidents_open=_open_incidents(),
        outbox=status_counts(now, RECENT),
        outbox_age_seconds=outbox_age_seconds(now),
        slack_failing_seconds=slack_failing_seconds(now, since=now),
        extra=[(gauge, gauge.read()) for gauge in _extra_gauges.values()],
    )


def _latency_totals() -> tuple[HistogramTotals, HistogramTotals]:
    totals = MetricTotals.objects.filter(pk=MetricTotals.SINGLETON_ID).first()
    if totals is None:
        empty = HistogramTotals([], 0.0, 0)
        return empty, empty
    return (
        HistogramTotals(totals.delivery_buckets, totals.delivery_sum_ms, totals.delivery_count),
        HistogramTotals(
            totals.round_trip_buckets, totals.round_trip_sum_ms, totals.round_trip_count
        ),
    )


def _live(role: str, stats: WebSocketStats, now: datetime) -> int:
    # Web processes are the statistics' own list; the others are read the same way.
    if role == WorkerRole.WEB:
        return len(stats["workers"])
    return len(figures.live_workers(now, role))


def _memory(stats: WebSocketStats, now: datetime) -> list[ProcessMemory]:
    """Every live process: web ones as the statistics report them, Celery worker and beat
    from their heartbeat (they write no samples)."""
    memory = [
        ProcessMemory(w["id"], WorkerRole.WEB, w["memoryUsage"]["rss"], w["memoryUsage"]["percent"])
        for w in stats["workers"]
    ]
    for role in (WorkerRole.CELERY, WorkerRole.BEAT):
        memory += [
            ProcessMemory(w.name, role, w.memory_rss_bytes, w.memory_percent)
            for w in figures.live_workers(now, role)
        ]
    return memory


def _window_metric(metric: str, now: datetime) -> float:
    """An alert metric that counts over a window, over its shipped rule's window."""
    values = REGISTRY[metric].compute(Window(now, default_window(metric)))
    return values.get("", 0.0)


def _open_incidents() -> dict[str, int]:
    counts = dict.fromkeys(Severity.values, 0)
    rows = (
        Incident.objects.filter(status=IncidentStatus.FIRING)
        .order_by()
        .values_list("severity")
        .annotate(n=Count("pk"))
    )
    for severity, n in rows:
        counts[severity] = n
    return counts
