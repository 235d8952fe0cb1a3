"""The deployment's figures in Prometheus' text format (the one module that uses
prometheus-client).

Each scrape builds a fresh registry with one collector over a `Reading` (monitoring.scrape):
no process-global counters, since any web process may answer for the whole deployment.
Names follow Prometheus' conventions: an `inkwave_` prefix, `_total` on counters, base units
(seconds, bytes, ratios of 1). Per-process figures carry a `worker` label (the worker's name
in the admin); everything else is the deployment's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitoring.histogram import BUCKET_COUNT, LATENCY_BOUNDS_MS
from monitoring.models import RouteTotals
from monitoring.scrape import HistogramTotals, Reading, default_window

# The classic text format (0.0.4), which every Prometheus 2.x and 3.x reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
P = "inkwave_"


def render(reading: Reading | None, dependencies: Mapping[str, bool]) -> bytes:
    """The exposition; without a reading (the database does not answer) only whether each
    dependency is up, so that the scrape still tells Prometheus the database is down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(reading, dependencies))
    return generate_latest(registry)


class DeploymentCollector(Collector):
    def __init__(self, reading: Reading | None, dependencies: Mapping[str, bool]) -> None:
        self.reading = reading
        self.dependencies = dependencies

    def collect(self) -> Iterator[Metric]:
        yield labelled(
            GaugeMetricFamily,
            "dependency_up",
            "Whether a dependency answers the health check (1) or not (0).",
            "dependency",
            {name: float(up) for name, up in self.dependencies.items()},
        )
        if self.reading is None:
            return
        yield from websocket_families(self.reading)
        yield from process_families(self.reading)
        yield from http_families(self.reading.routes)
        yield from operations_families(self.reading)


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


def labelled(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    family = kind(P + name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def histogram(
    name: str,
    doc: str,
    labels: Sequence[str],
    series: Iterable[tuple[Sequence[str], HistogramTotals]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(P + name, doc, labels=labels)
    for values, totals in series:
        family.add_metric(values, cumulative_buckets(totals.buckets), totals.sum_ms / 1000.0)
    return family


def cumulative_buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Prometheus' buckets: cumulative, `le` in seconds, the last one +Inf (= the count).
    A histogram written with other bounds cannot be shown honestly: it shows as empty."""
    if len(counts) != BUCKET_COUNT:
        counts = [0] * BUCKET_COUNT
    bounds = [str(bound / 1000.0) for bound in LATENCY_BOUNDS_MS] + ["+Inf"]
    buckets, seen = [], 0
    for bound, count in zip(bounds, counts, strict=True):
        seen += count
        buckets.append((bound, float(seen)))
    return buckets


# --- WebSocket: the statistics endpoint's figures -------------------------------------------

# (name, help, the statistics' field): running totals since the metrics began.
WEBSOCKET_COUNTERS = [
    ("websocket_connections_total", "WebSocket connections accepted.", "totalConnections"),
    ("websocket_disconnections_total", "WebSocket connections that ended.", "totalDisconnections"),
    (
        "websocket_rejected_connections_total",
        "WebSocket connections refused (bad origin, credentials, limits).",
        "totalRejectedConnections",
    ),
    ("websocket_messages_sent_total", "Frames sent to clients.", "totalMessagesSent"),
    ("websocket_messages_received_total", "Frames received from clients.", "totalMessagesReceived"),
    (
        "websocket_resumes_total",
        "Reconnected room clients caught up, or told to reload.",
        "totalResumes",
    ),
    (
        "websocket_events_replayed_total",
        "Events sent again to reconnected clients.",
        "totalEventsReplayed",
    ),
    (
        "websocket_resyncs_total",
        "Resumes that could not be replayed: the client had to reload.",
        "totalResyncs",
    ),
]


def websocket_families(reading: Reading) -> Iterator[Metric]:
    stats = reading.stats
    for name, doc, field in WEBSOCKET_COUNTERS:
        yield counter(name, doc, stats[field])  # type: ignore[literal-required]
    yield labelled(
        CounterMetricFamily,
        "websocket_errors_total",
        "WebSocket errors: the service's failures (service) and clients' refusals and bad "
        "frames (client).",
        "kind",
        {"service": stats["totalServiceErrors"], "client": stats["totalClientErrors"]},
    )
    yield labelled(
        GaugeMetricFamily,
        "websocket_connections_active",
        "Open WebSocket connections of each live web process at its last flush.",
        "worker",
        {w["id"]: w["activeConnections"] for w in stats["workers"]},
    )
    yield gauge(
        "websocket_rooms_active",
        "Venue rooms with a member, deployment-wide.",
        stats["rooms"]["active"],
    )
    yield labelled(
        GaugeMetricFamily,
        "websocket_room_members",
        "Members of each venue room, over every live web process.",
        "room",
        stats["rooms"]["members"],
    )
    yield histogram(
        "websocket_delivery_latency_seconds",
        "From an event's creation to its frame being sent to a member.",
        [],
        [((), reading.delivery)],
    )
    yield histogram(
        "websocket_round_trip_seconds",
        "Clients' ping-to-pong round trips as they report them.",
        [],
        [((), reading.round_trip)],
    )


# --- processes ------------------------------------------------------------------------------


def process_families(reading: Reading) -> Iterator[Metric]:
    yield labelled(
        GaugeMetricFamily,
        "workers_live",
        "Processes of each role that reported within WORKER_LIVENESS_SECONDS.",
        "role",
        reading.live_workers,
    )
    rss = GaugeMetricFamily(
        P + "worker_memory_rss_bytes",
        "Resident memory of each live process.",
        labels=["worker", "role"],
    )
    ratio = GaugeMetricFamily(
        P + "worker_memory_usage_ratio",
        "Resident memory of each live process over its limit (the container's, else the "
        "machine's).",
        labels=["worker", "role"],
    )
    for process in reading.memory:
        rss.add_metric([process.worker, process.role], process.rss_bytes)
        ratio.add_metric([process.worker, process.role], process.percent / 100.0)
    yield rss
    yield ratio
    yield gauge(
        "workers_died",
        f"Processes that went silent without being asked to stop in the last "
        f"{default_window('workers.crashed')} s, replaced or not.",
        reading.workers_died,
    )
    yield gauge(
        "workers_missing",
        f"Processes that went silent without being asked to stop in the last "
        f"{default_window('workers.missing')} s and were not replaced.",
        reading.workers_missing,
    )


# --- HTTP: each route's running totals ------------------------------------------------------


def http_families(routes: list[RouteTotals]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        P + "http_requests_total", "HTTP requests answered, by URL pattern.", labels=["route"]
    )
    errors = CounterMetricFamily(
        P + "http_errors_total",
        "HTTP requests answered with an error, by URL pattern and class (4xx, 5xx).",
        labels=["route", "status_class"],
    )
    slow = CounterMetricFamily(
        P + "http_slow_queries_total",
        "Database queries of at least SLOW_QUERY_MS, by the URL pattern they ran for.",
        labels=["route"],
    )
    for row in routes:
        requests.add_metric([row.route], row.requests)
        errors.add_metric([row.route, "4xx"], row.client_errors)
        errors.add_metric([row.route, "5xx"], row.server_errors)
        slow.add_metric([row.route], row.slow_queries)
    yield requests
    yield errors
    yield slow
    yield histogram(
        "http_request_duration_seconds",
        "Time to answer HTTP requests, by URL pattern.",
        ["route"],
        [
            ([row.route], HistogramTotals(row.duration_buckets, row.duration_sum_ms, row.requests))
            for row in routes
        ],
    )


# --- incidents, the outbox, and what other apps register ------------------------------------


def operations_families(reading: Reading) -> Iterator[Metric]:
    yield labelled(
        GaugeMetricFamily,
        "incidents_open",
        "Incidents firing, by severity.",
        "severity",
        reading.incidents_open,
    )
    yield labelled(
        GaugeMetricFamily,
        "outbox_notifications",
        "Slack outbox rows by state: every pending and sending row; the sent, failed and "
        "skipped rows of the last 24 hours.",
        "status",
        reading.outbox,
    )
    yield gauge(
        "outbox_oldest_pending_age_seconds",
        "How long the oldest due notification has waited to be sent (destinations Slack is "
        "failing left out).",
        reading.outbox_age_seconds,
    )
    yield gauge(
        "slack_failing_seconds",
        "How long Slack has refused the enabled destination it refuses longest (0: none).",
        reading.slack_failing_seconds,
    )
    for extra, values in reading.extra:
        yield labelled(GaugeMetricFamily, extra.name, extra.documentation, extra.label, values)
