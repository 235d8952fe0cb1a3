from __future__ import annotations

from django.db import models


class TrendRollup(models.Model):
    """The deployment's samples of one hour (ends_at - 1 h, ends_at], summed over processes.

    Written once the hour is complete by monitoring.dashboard.rollup (recomputed from the
    raw rows, so writing it again changes nothing), read by the dashboard's week and month
    trends instead of the raw samples: a month is 720 rows. It holds exactly the sums that
    monitoring.dashboard.figures' WS_HISTORY_SUMS and figures.HTTP_SUMS compute from the
    samples (the time-weighted gauges as seconds of connections and of bytes), and counts
    of the rows behind them: an hour with no sample is written too, with zero samples, so
    the rollups run without gaps up to the last complete hour and the trends show it empty.
    Kept TREND_RETENTION_DAYS, longer than the samples.
    """

    ends_at = models.DateTimeField(unique=True)
    computed_at = models.DateTimeField()

    # WebSocket samples of web processes (figures.samples).
    ws_samples = models.PositiveIntegerField(default=0)
    connection_seconds = models.FloatField(default=0)
    memory_seconds = models.FloatField(default=0)
    sent = models.PositiveBigIntegerField(default=0)
    received = models.PositiveBigIntegerField(default=0)
    connections = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    delivery_count = models.PositiveBigIntegerField(default=0)
    delivery_sum = models.FloatField(default=0)

    # Request samples the HTTP figures count (figures.served_requests: not the probes).
    http_samples = models.PositiveIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)
    server_errors = models.PositiveBigIntegerField(default=0)
    duration_sum = models.FloatField(default=0)
    queries = models.PositiveBigIntegerField(default=0)
    query_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["-ends_at"]

    def __str__(self) -> str:
        return f"trends of the hour to {self.ends_at:%Y-%m-%d %H:%M}"
