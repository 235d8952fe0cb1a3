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

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Max, Min, Q, Sum
from django.db.models.functions import Coalesce, Greatest

from monitoring import figures
from monitoring.alerting.replay import EpochBucket, Grid, sliding_max, sliding_sums
from monitoring.health import redis_reachable
from monitoring.models import (
    Incident,
    SlowQuery,
    WebSocketSample,
    Worker,
    WorkerRole,
)
from notifications.models import OPEN_STATUSES, Destination, Notification

Values = dict[str, float]


@dataclass(frozen=True)
class Window:
    end: datetime
    seconds: int
    # Shared by every window of one cycle, so metrics built on the same sums share a query.
    memo: dict[object, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def start(self) -> datetime:
        return self.end - timedelta(seconds=self.seconds)


Point = tuple[datetime, float | None]
# One value per evaluation step over [start, end], for a window of `seconds` (see replay.py).
History = Callable[[datetime, datetime, int], list[Point]]
# The same per scope, for the scopes asked, or (None) for those the metric's owner picks (a
# per-venue metric: the busiest venues).
ScopedHistory = Callable[[datetime, datetime, int, list[str] | None], dict[str, list[Point]]]


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
    # How the metric looked over the past (for the rule preview); None: it has no history.
    history: History | None = field(default=None, compare=False)
    # A per-scope metric's past, one series per scope (for the preview and incident charts).
    scoped_history: ScopedHistory | None = field(default=None, compare=False)
    # Whether an outage of a dependency that ended inside the window still shapes the value
    # (clients thrown out by a Redis outage reconnect into it), so that a rule stays held
    # back until its window no longer covers the outage. False for a value that leaves the
    # outages out itself: it is held back only while its dependency's alert fires.
    outages_shape_window: bool = True

    @property
    def unit_suffix(self) -> str:
        if self.unit == "%":
            return "%"
        return f" {self.unit}" if self.unit else ""

    def format(self, value: float | None) -> str:
        """The value as people read it: rounded for its unit, with the unit."""
        if value is None:
            return "no data"
        return f"{format_number(value, _DECIMALS.get(self.unit, 2))}{self.unit_suffix}"


# Decimals worth showing per unit: whole things are whole, rates and percentages one place.
_DECIMALS = {
    "connections": 0,
    "rooms": 0,
    "workers": 0,
    "ms": 0,
    "seconds": 0,
    "%": 1,
    "per minute": 1,
}


def format_number(value: float, decimals: int) -> str:
    """1234.5 -> "1,234.5", 66.666 -> "66.7", 50.0 -> "50"; small values keep two figures."""
    if value != 0 and abs(value) < 10 ** (-decimals):
        return f"{value:.2g}"  # 0.004% is not "0%"
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_value(metric_key: str, value: float | None) -> str:
    """A metric's value with its unit; a metric no longer registered shows a plain number."""
    metric = REGISTRY.get(metric_key)
    if metric is not None:
        return metric.format(value)
    return "no data" if value is None else format_number(value, 2)


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    REGISTRY[metric.key] = metric
    return metric


def metric_choices() -> list[tuple[str, str]]:
    return [
        (key, f"{m.label} ({m.unit})" if m.unit else m.label) for key, m in sorted(REGISTRY.items())
    ]


# --- WebSocket metrics computed from summed counts -------------------------------------

Sums = figures.Sums
Formula = Callable[[Sums, int], float | None]

SUMS = figures.SUMS
_web_samples = figures.samples


def _sums(window: Window) -> Sums:
    key = ("sums", window.end, window.seconds)
    if key not in window.memo:
        window.memo[key] = _web_samples(window.start, window.end).aggregate(**SUMS)
    return window.memo[key]  # type: ignore[return-value]


def _bucket_sums(start: datetime, end: datetime, resolution: int) -> dict[int, Sums]:
    rows = (
        _web_samples(start, end)
        .annotate(bucket=EpochBucket("recorded_at", resolution))
        .values("bucket")
        .annotate(**SUMS)
    )
    return {row["bucket"]: row for row in rows}


def from_sums(formula: Formula) -> tuple[Callable[[Window], Values], History]:
    """A metric over summed counts: its live value and its history share one formula."""

    def compute(window: Window) -> Values:
        sums = _sums(window)
        if not sums["samples"]:
            return {}
        value = formula(sums, window.seconds)
        return {} if value is None else {"": value}

    def history(start: datetime, end: datetime, seconds: int) -> list[Point]:
        grid = Grid.for_window(seconds)
        buckets = _bucket_sums(start - timedelta(seconds=seconds), end, grid.resolution)
        return sliding_sums(
            buckets, list(SUMS), start, end, seconds, grid, lambda sums: formula(sums, seconds)
        )

    return compute, history


def _per_minute(name: str) -> Formula:
    return lambda sums, seconds: sums[name] * 60.0 / seconds


def _disconnections(window: Window) -> Values:
    """Disconnections per minute: those the web processes reported, and the clients of
    processes found dead in the window (a killed process's clients are dropped all at once
    and never reported; the running totals and /metrics count them the same way)."""
    sums = _sums(window)
    lost = figures.released(window.start, window.end).aggregate(
        lost=Sum("connections_lost", default=0)
    )["lost"]
    if not sums["samples"] and not lost:
        return {}
    return {"": (sums["disconnections"] + lost) * 60.0 / window.seconds}


def _disconnections_history(start: datetime, end: datetime, seconds: int) -> list[Point]:
    grid = Grid.for_window(seconds)
    since = start - timedelta(seconds=seconds)
    buckets = _bucket_sums(since, end, grid.resolution)
    dead = (
        figures.released(since, end)
        .annotate(bucket=EpochBucket("declared_dead_at", grid.resolution))
        .values("bucket")
        .annotate(lost=Sum("connections_lost"))
    )
    for row in dead:
        sums = buckets.setdefault(row["bucket"], dict.fromkeys(SUMS, 0.0))
        sums["disconnections"] = (sums["disconnections"] or 0) + row["lost"]
    per_minute = _per_minute("disconnections")
    return sliding_sums(
        buckets, list(SUMS), start, end, seconds, grid, lambda sums: per_minute(sums, seconds)
    )


def _error_rate(sums: Sums, seconds: int) -> float:
    """The statistics endpoint's errorRate over the rule's window, in % (one computation)."""
    return 100.0 * figures.service_error_rate(sums)


def _latency_avg(sums: Sums, seconds: int) -> float | None:
    return sums["delivery_sum"] / sums["delivery_count"] if sums["delivery_count"] else None


def _latency_p95(window: Window) -> Values:
    rows = _web_samples(window.start, window.end).filter(delivery_count__gt=0)
    extremes = rows.aggregate(low=Min("delivery_min_ms"), high=Max("delivery_max_ms"))
    buckets = rows.values_list("delivery_buckets", flat=True)
    value = figures.percentile(buckets, 0.95, extremes["low"], extremes["high"])
    return {} if value is None else {"": value}


def _gauge(attribute: str) -> Callable[[Window], Values]:
    def compute(window: Window) -> Values:
        samples = [w.last_sample for w in figures.live_workers(window.end) if w.last_sample]
        if not samples:
            return {}
        return {"": float(sum(getattr(s, attribute) for s in samples))}

    return compute


def _memory_percent(window: Window) -> Values:
    """The peak over web samples, and Celery processes' last heartbeat (they write no samples)."""
    peak = WebSocketSample.objects.filter(
        recorded_at__gt=window.start, recorded_at__lte=window.end
    ).aggregate(peak=Max("memory_percent"))["peak"]
    celery = (
        Worker.objects.exclude(role=WorkerRole.WEB)
        .filter(last_seen_at__gt=window.start, last_seen_at__lte=window.end)
        .aggregate(peak=Max("memory_percent"))["peak"]
    )
    values = [float(v) for v in (peak, celery) if v is not None]
    return {"": max(values)} if values else {}


def _memory_history(start: datetime, end: datetime, seconds: int) -> list[Point]:
    grid = Grid.for_window(seconds)
    rows = (
        WebSocketSample.objects.filter(
            recorded_at__gt=start - timedelta(seconds=seconds), recorded_at__lte=end
        )
        .annotate(bucket=EpochBucket("recorded_at", grid.resolution))
        .values("bucket")
        .annotate(peak=Max("memory_percent"))
    )
    peaks = {row["bucket"]: float(row["peak"]) for row in rows}
    return sliding_max(peaks, start, end, seconds, grid)


Interval = tuple[datetime, datetime]


def database_outages(start: datetime, end: datetime) -> list[Interval]:
    """When the database was down between `start` and `end`, merged, from its incidents.

    An outage's incident opens at the first failure someone noticed (a flush or a cycle, up
    to a flush interval after it began) and is still firing, or resolved when the database
    answered again.
    """
    lead = timedelta(seconds=settings.METRICS_FLUSH_SECONDS)
    rows = (
        Incident.objects.filter(rule__metric="dependency.database_down", opened_at__lte=end)
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=start))
        .order_by("opened_at")
        .values_list("opened_at", "resolved_at")
    )
    merged: list[Interval] = []
    for opened, resolved in rows:
        begin, finish = opened - lead, min(resolved or end, end)
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


def _silent_while_database_up(last_seen: datetime, now: datetime, outages: list[Interval]) -> float:
    """Seconds since `last_seen` during which the process could have reported."""
    silent = (now - last_seen).total_seconds()
    for begin, finish in outages:
        overlap = (min(finish, now) - max(begin, last_seen)).total_seconds()
        silent -= max(0.0, overlap)
    return silent


def _silent_workers(window: Window) -> list[tuple[str, str, datetime]]:
    """(role, host, last seen) of processes that went silent in the window without being
    asked to stop, counting silence only while the database was up."""
    liveness = settings.WORKER_LIVENESS_SECONDS
    cutoff = window.end - timedelta(seconds=liveness)
    candidates = list(
        Worker.objects.filter(
            last_seen_at__lt=cutoff, last_seen_at__gte=window.start, stopped_at__isnull=True
        ).values_list("role", "hostname", "last_seen_at")
    )
    outages = database_outages(window.start, window.end) if candidates else []
    return [
        (role, host, seen)
        for role, host, seen in candidates
        if _silent_while_database_up(seen, window.end, outages) > liveness
    ]


def _crashed_workers(window: Window) -> Values:
    """Processes that died in the window (killed, crashed, out of memory), replaced or not.

    A supervisor's restart keeps the service up, so "Process stopped reporting" stays quiet;
    the crash itself is still worth an operator's look (a process that keeps dying is a
    defect, and each death drops its clients)."""
    return {"": float(len(_silent_workers(window)))}


def _missing_workers(window: Window) -> Values:
    """Processes that went silent during the window without stopping, and were not replaced.

    A replacement is a live process of the same role that started after the silent one was
    last seen, and each replaces one: first on the same host (a supervisor's restart), then
    on any other (an orchestrator that started it elsewhere, a lost host's processes started
    on a new one: the capacity is back). Without one, the process stays missing for the
    whole window, not just until its last sample leaves a short window.

    Silence counts only while the database was up: a process cannot report to a database
    that is down, and after it answers again each process needs a flush to report. So an
    outage holds this back (inhibition) until every process has had its liveness period
    with the database up.
    """
    silent = _silent_workers(window)
    if not silent:
        return {"": 0.0}
    cutoff = window.end - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    unused = {
        pk: (role, host, started)
        for pk, role, host, started in Worker.objects.filter(
            last_seen_at__gte=cutoff, stopped_at__isnull=True
        ).values_list("pk", "role", "hostname", "started_at")
    }
    # The latest silent first: a process that started after it also started after every
    # earlier one, so taking any that fits never leaves an earlier one without a match.
    left = sorted(silent, key=lambda s: s[2], reverse=True)
    for same_host in (True, False):
        unmatched = []
        for role, host, seen in left:
            match = next(
                (
                    pk
                    for pk, (r, h, started) in unused.items()
                    if r == role and started >= seen and (h == host or not same_host)
                ),
                None,
            )
            if match is None:
                unmatched.append((role, host, seen))
            else:
                del unused[match]
        left = unmatched
    return {"": float(len(left))}


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
    return {"": 0.0 if redis_reachable() else 1.0}


def _live_web_workers(window: Window) -> Values:
    return {"": float(len(figures.live_workers(window.end)))}


# --- Slack delivery (read from the notifications app's outbox and destinations) ----------

SLACK_FAILING = "notifications.slack_failing_seconds"
OUTBOX_AGE = "notifications.outbox_age_seconds"


def slack_failing_seconds(now: datetime, since: datetime) -> float:
    """The longest time Slack refused an enabled destination, failing now or after `since`.

    A failure that ended between two evaluations still counts while it is in the window, so
    an outage longer than the threshold is recorded whatever the evaluation's phase.
    /metrics asks with since=now: the failures going on (Prometheus keeps the past).
    """
    longest = 0.0
    for failing, start, end in Destination.objects.filter(enabled=True).values_list(
        "failing_since", "failed_from", "failed_until"
    ):
        if failing is not None:
            longest = max(longest, (now - failing).total_seconds())
        if start is not None and end is not None and end > since:
            longest = max(longest, (end - start).total_seconds())
    return longest


def _slack_failing_seconds(window: Window) -> Values:
    return {"": slack_failing_seconds(window.end, window.start)}


def outbox_age_seconds(now: datetime) -> float:
    """How long the oldest due notification has waited to be sent, in seconds.

    Waiting counts from when it was due, or from when Slack last came back for its
    destination; destinations Slack is failing now are left out (their rule says that), so
    what remains is the outbox not being worked: no worker takes delivery tasks, or more
    arrives than the channels' rate lets out.
    """
    waiting_since = (
        Notification.objects.filter(
            status__in=OPEN_STATUSES,
            next_attempt_at__lte=now,
            destination__failing_since__isnull=True,
        )
        .annotate(
            due=Greatest(
                "next_attempt_at", Coalesce("destination__failed_until", "next_attempt_at")
            )
        )
        .aggregate(oldest=Min("due"))["oldest"]
    )
    if waiting_since is None:
        return 0.0
    return max(0.0, (now - waiting_since).total_seconds())


def _outbox_age_seconds(window: Window) -> Values:
    return {"": outbox_age_seconds(window.end)}


# --- HTTP requests (RequestSample rows, every route but the probes, every web process) ----


def _http_sums(window: Window) -> Sums:
    key = ("http", window.end, window.seconds)
    if key not in window.memo:
        window.memo[key] = figures.served_requests(window.start, window.end).aggregate(
            **figures.HTTP_SUMS
        )
    return window.memo[key]  # type: ignore[return-value]


def _http(formula: Callable[[Sums], float | None]) -> Callable[[Window], Values]:
    def compute(window: Window) -> Values:
        sums = _http_sums(window)
        if not sums["requests"]:
            return {}
        value = formula(sums)
        return {} if value is None else {"": value}

    return compute


def _slow_queries(window: Window) -> Values:
    count = SlowQuery.objects.filter(
        recorded_at__gt=window.start, recorded_at__lte=window.end
    ).count()
    return {"": float(count)}


_connections = from_sums(_per_minute("connections"))
_errors = from_sums(_error_rate)
_client_errors = from_sums(_per_minute("client_errors"))
_resyncs = from_sums(_per_minute("resyncs"))
_latency = from_sums(_latency_avg)
_WS = ("database", "redis")

for _metric in (
    Metric("ws.new_connections_per_minute", "New WebSocket connections", "per minute",
           _connections[0], depends_on=_WS, history=_connections[1]),
    Metric("ws.disconnections_per_minute", "WebSocket disconnections", "per minute",
           _disconnections, depends_on=_WS, history=_disconnections_history),
    Metric("ws.error_rate", "WebSocket error rate", "%", _errors[0], maximum=100,
           depends_on=_WS, history=_errors[1]),
    Metric("ws.client_errors_per_minute", "Refused connections and bad client frames",
           "per minute", _client_errors[0], depends_on=_WS, history=_client_errors[1]),
    Metric("ws.resyncs_per_minute", "Reconnected screens told to reload (gap not replayable)",
           "per minute", _resyncs[0], depends_on=_WS, history=_resyncs[1]),
    Metric("ws.latency_avg_ms", "Average delivery latency", "ms", _latency[0],
           depends_on=_WS, history=_latency[1]),
    Metric("ws.latency_p95_ms", "95th percentile delivery latency", "ms", _latency_p95,
           depends_on=_WS),
    Metric("ws.active_connections", "Active WebSocket connections", "connections",
           _gauge("active_connections"), depends_on=_WS),
    Metric("ws.active_rooms", "Active venue rooms", "rooms", _gauge("active_rooms"),
           depends_on=_WS),
    Metric("http.error_rate", "HTTP server error rate (5xx)", "%",
           _http(figures.http_server_error_percent), maximum=100,
           depends_on=("database",)),
    Metric("http.avg_response_ms", "Average HTTP response time", "ms",
           _http(figures.http_average_ms), depends_on=("database",)),
    Metric("http.slow_queries", "Slow database queries (over SLOW_QUERY_MS)", "queries",
           _slow_queries, depends_on=("database",)),
    Metric("process.memory_percent", "Process memory (of its limit)", "%", _memory_percent,
           maximum=100, depends_on=("database",), history=_memory_history),
    # Silence counts only while the database was up (_silent_while_database_up).
    Metric("workers.missing", "Processes that stopped reporting", "workers", _missing_workers,
           depends_on=("database",), outages_shape_window=False),
    Metric("workers.crashed", "Processes that died (killed or crashed)", "workers",
           _crashed_workers, depends_on=("database",), outages_shape_window=False),
    Metric("workers.web_live", "Live web processes", "workers", _live_web_workers,
           depends_on=("database",)),
    Metric("dependency.database_down", "Database unreachable", "", _database_down, maximum=1),
    Metric("dependency.redis_down", "Redis unreachable", "", _redis_down, maximum=1),
    Metric(SLACK_FAILING, "Slack delivery failing (longest, per destination)", "seconds",
           _slack_failing_seconds, depends_on=("database",)),
    Metric(OUTBOX_AGE, "Oldest due notification waiting", "seconds", _outbox_age_seconds,
           depends_on=("database", "redis")),
):  # fmt: skip
    register(_metric)
