from __future__ import annotations

from django.db import models


class WorkerRole(models.TextChoices):
    WEB = "web", "Web (ASGI)"
    CELERY = "celery", "Celery worker"
    BEAT = "beat", "Celery beat"


class Worker(models.Model):
    """One process that reports samples; the deployment's figures are summed over live ones."""

    name = models.CharField(max_length=200, unique=True)
    role = models.CharField(max_length=16, choices=WorkerRole.choices, default=WorkerRole.WEB)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_sample = models.ForeignKey(
        "WebSocketSample", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The process's memory at its last report, for every role (Celery processes serve no
    # WebSocket and write no samples; their heartbeat updates only this row).
    memory_rss_bytes = models.PositiveBigIntegerField(default=0)
    memory_percent = models.FloatField(default=0)
    # A process that dies without stopping never reports its clients leaving: when it is
    # found dead, its last sample's open connections are counted as disconnected (once).
    declared_dead_at = models.DateTimeField(null=True, blank=True)
    connections_lost = models.PositiveIntegerField(
        default=0, help_text="Open connections counted as disconnected when it was found dead."
    )

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.name


# What the dashboard's trends read of each sample (monitoring/dashboard/figures.py).
TREND_COLUMNS = [
    "worker",
    "interval_seconds",
    "active_connections",
    "memory_rss_bytes",
    "messages_sent",
    "messages_received",
    "connections",
    "rejected_connections",
    "errors",
    "delivery_count",
    "delivery_sum_ms",
]


class WebSocketSample(models.Model):
    """What one worker saw during one flush interval (counts) and its state at the end (gauges).

    Any window's figure is a sum (counts, histogram buckets) or a max over these rows.
    """

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="samples")
    recorded_at = models.DateTimeField()
    interval_seconds = models.FloatField()

    # Counts during the interval.
    connections = models.PositiveIntegerField(default=0)
    disconnections = models.PositiveIntegerField(default=0)
    rejected_connections = models.PositiveIntegerField(default=0)
    messages_sent = models.PositiveBigIntegerField(default=0)
    messages_received = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveIntegerField(
        default=0, help_text="Failures of the service (internal errors, channel layer down)."
    )
    client_errors = models.PositiveIntegerField(
        default=0, help_text="Refused connections and clients' protocol errors."
    )
    resumes = models.PositiveIntegerField(
        default=0, help_text="Reconnected room clients caught up, or told to reload."
    )
    events_replayed = models.PositiveBigIntegerField(default=0)
    resyncs = models.PositiveIntegerField(
        default=0, help_text="Resumes that could not be replayed: the client had to reload."
    )
    errors_by_type = models.JSONField(default=dict, blank=True)
    delivery_count = models.PositiveBigIntegerField(default=0)
    delivery_sum_ms = models.FloatField(default=0)
    delivery_buckets = models.JSONField(default=list, blank=True)
    # The interval's extremes: a percentile is never reported outside them.
    delivery_min_ms = models.FloatField(null=True, blank=True)
    delivery_max_ms = models.FloatField(null=True, blank=True)
    round_trip_count = models.PositiveBigIntegerField(default=0)
    round_trip_sum_ms = models.FloatField(default=0)
    round_trip_buckets = models.JSONField(default=list, blank=True)
    round_trip_min_ms = models.FloatField(null=True, blank=True)
    round_trip_max_ms = models.FloatField(null=True, blank=True)
    cpu_seconds = models.FloatField(default=0)

    # State at the end of the interval.
    active_connections = models.PositiveIntegerField(default=0)
    active_rooms = models.PositiveIntegerField(default=0)
    rooms = models.JSONField(default=dict, blank=True, help_text="Members per venue room.")
    memory_rss_bytes = models.PositiveBigIntegerField(default=0)
    memory_limit_bytes = models.PositiveBigIntegerField(default=0)
    memory_percent = models.FloatField(default=0)

    class Meta:
        ordering = ["-recorded_at"]
        verbose_name = "WebSocket sample"
        indexes = [
            models.Index(fields=["recorded_at"], name="wssample_recorded_idx"),
            models.Index(fields=["worker", "-recorded_at"], name="wssample_worker_recent_idx"),
            # The dashboard's trends sum these over a range grouped by time: on PostgreSQL a
            # month is read from this index alone (an index-only scan), not from the rows
            # with their JSON (bench/dashboard.py shows the plan). Other databases ignore
            # INCLUDE and keep a plain index on recorded_at.
            models.Index(
                fields=["recorded_at"],
                include=TREND_COLUMNS,
                name="wssample_trend_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} @ {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class MetricTotals(models.Model):
    """Running totals since the deployment's metrics began; pruning samples never lowers them."""

    SINGLETON_ID = 1

    started_at = models.DateTimeField()
    connections = models.PositiveBigIntegerField(default=0)
    disconnections = models.PositiveBigIntegerField(default=0)
    rejected_connections = models.PositiveBigIntegerField(default=0)
    messages_sent = models.PositiveBigIntegerField(default=0)
    messages_received = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0)
    resumes = models.PositiveBigIntegerField(default=0)
    events_replayed = models.PositiveBigIntegerField(default=0)
    resyncs = models.PositiveBigIntegerField(default=0)
    # The latency histograms summed since then (buckets of monitoring.histogram's bounds),
    # so that /metrics serves counters that only grow, whatever is pruned or restarted.
    delivery_count = models.PositiveBigIntegerField(default=0)
    delivery_sum_ms = models.FloatField(default=0)
    delivery_buckets = models.JSONField(default=list, blank=True)
    round_trip_count = models.PositiveBigIntegerField(default=0)
    round_trip_sum_ms = models.FloatField(default=0)
    round_trip_buckets = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "metric totals"

    def __str__(self) -> str:
        return f"Totals since {self.started_at:%Y-%m-%d %H:%M}"


class VenueScreenSample(models.Model):
    """How many of a venue's screens one web process held at one flush.

    Written with the process's sample for every venue it holds a screen of, and once more
    with 0 at the first flush after its last screen left, so a process's latest row for a
    venue is the truth; the deployment's figure is the sum over processes (monitoring.screens).
    The venue is a plain id: the monitoring app knows no venues (orders is above it).
    """

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="screen_samples")
    recorded_at = models.DateTimeField()
    venue_id = models.PositiveBigIntegerField()
    screens = models.PositiveIntegerField()

    class Meta:
        ordering = ["-recorded_at"]
        indexes = [
            models.Index(fields=["venue_id", "recorded_at"], name="screensample_venue_idx"),
            models.Index(fields=["recorded_at"], name="screensample_recorded_idx"),
        ]

    def __str__(self) -> str:
        return f"venue {self.venue_id}: {self.screens} @ {self.recorded_at:%Y-%m-%d %H:%M:%S}"
