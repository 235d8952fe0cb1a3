"""HTTP requests: what each worker's routes served per interval, and the slow ones."""

from __future__ import annotations

from django.db import models

from monitoring.models.samples import Worker


class RequestSample(models.Model):
    """What one worker's route served during one flush interval; a window's figure is a sum
    (or, for the histogram, a bucket-wise sum) over these rows, as for WebSocketSample."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="request_samples")
    recorded_at = models.DateTimeField()
    interval_seconds = models.FloatField()
    route = models.CharField(max_length=300, help_text="The URL pattern, not the path.")
    requests = models.PositiveIntegerField(default=0)
    client_errors = models.PositiveIntegerField(default=0, help_text="4xx answers.")
    server_errors = models.PositiveIntegerField(default=0, help_text="5xx answers.")
    duration_sum_ms = models.FloatField(default=0)
    duration_buckets = models.JSONField(default=list, blank=True)
    duration_min_ms = models.FloatField(null=True, blank=True)
    duration_max_ms = models.FloatField(null=True, blank=True)
    queries = models.PositiveBigIntegerField(default=0)
    query_ms = models.FloatField(default=0)
    response_bytes = models.PositiveBigIntegerField(default=0)
    memory_growth_bytes = models.BigIntegerField(
        default=0, help_text="How much the process's memory grew during these requests."
    )

    class Meta:
        ordering = ["-recorded_at"]
        indexes = [
            models.Index(fields=["recorded_at"], name="reqsample_recorded_idx"),
            models.Index(fields=["route", "-recorded_at"], name="reqsample_route_recent_idx"),
            # The dashboard's trends, read from the index alone on PostgreSQL (see
            # WebSocketSample's).
            models.Index(
                fields=["recorded_at"],
                include=["requests", "server_errors", "duration_sum_ms", "queries", "query_ms"],
                name="reqsample_trend_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.route} @ {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class RouteTotals(models.Model):
    """What one route has served since its first request, over every process: running totals
    that pruning samples or restarting a process never lowers (/metrics' counters).

    One row per route, updated by each flush in the transaction that writes its
    RequestSample rows. Not pruned: rows are bounded by the routes the code has (each
    process counts at most MAX_ROUTES, the rest as "(other)"); a removed route's row stays,
    as its history does in Prometheus.
    """

    route = models.CharField(max_length=300, unique=True, help_text="The URL pattern.")
    requests = models.PositiveBigIntegerField(default=0)
    client_errors = models.PositiveBigIntegerField(default=0, help_text="4xx answers.")
    server_errors = models.PositiveBigIntegerField(default=0, help_text="5xx answers.")
    duration_sum_ms = models.FloatField(default=0)
    duration_buckets = models.JSONField(default=list, blank=True)
    slow_queries = models.PositiveBigIntegerField(
        default=0, help_text="Queries of at least SLOW_QUERY_MS run for this route."
    )

    class Meta:
        ordering = ["route"]
        verbose_name_plural = "route totals"

    def __str__(self) -> str:
        return self.route


class SlowStatement(models.Model):
    """One normalised SQL statement that has been slow, with its slow runs summed up."""

    fingerprint = models.CharField(max_length=64, unique=True, editable=False)
    statement = models.TextField(help_text="Literals and parameters replaced by ?.")
    occurrences = models.PositiveBigIntegerField(default=0)
    total_ms = models.FloatField(default=0)
    max_ms = models.FloatField(default=0)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    last_route = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.statement[:80]

    @property
    def average_ms(self) -> float:
        return self.total_ms / self.occurrences if self.occurrences else 0.0


class SlowQuery(models.Model):
    """One run of a query over SLOW_QUERY_MS: its statement, where it ran, how long."""

    statement = models.ForeignKey(SlowStatement, on_delete=models.CASCADE, related_name="runs")
    recorded_at = models.DateTimeField(db_index=True)
    duration_ms = models.FloatField()
    route = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-recorded_at"]
        verbose_name_plural = "slow queries"

    def __str__(self) -> str:
        return f"{self.duration_ms:.0f} ms @ {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class SlowRequest(models.Model):
    """One request over SLOW_REQUEST_MS."""

    recorded_at = models.DateTimeField(db_index=True)
    route = models.CharField(max_length=300)
    method = models.CharField(max_length=16)
    status = models.PositiveSmallIntegerField()
    duration_ms = models.FloatField()
    queries = models.PositiveIntegerField(default=0)
    query_ms = models.FloatField(default=0)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-recorded_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.route} {self.duration_ms:.0f} ms"
