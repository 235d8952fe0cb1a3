"""The dashboard's hourly rollups: written once per complete hour, read by the week and month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, cast

import pytest
from django.conf import settings as django_settings

from inkwave.celery import app as celery_app
from monitoring import retention
from monitoring.dashboard import trends
from monitoring.dashboard.figures import history
from monitoring.models import RequestSample, TrendRollup, WebSocketSample, Worker, WorkerRole

pytestmark = pytest.mark.django_db

HOUR_END = datetime(2026, 6, 5, 11, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _worker(name: str, role: str = WorkerRole.WEB) -> Worker:
    return Worker.objects.create(
        name=name, role=role, hostname="h", pid=1, started_at=HOUR_END - timedelta(days=40),
        last_seen_at=HOUR_END,
    )  # fmt: skip


def _ws(worker: Worker, at: datetime, i: int) -> WebSocketSample:
    return WebSocketSample(
        worker=worker,
        recorded_at=at,
        interval_seconds=10 + i % 7,
        active_connections=20 + i % 13,
        memory_rss_bytes=100_000_000 + 1000 * (i % 17),
        messages_sent=100 + i % 11,
        messages_received=50 + i % 5,
        connections=3 + i % 4,
        rejected_connections=i % 3,
        errors=i % 2,
        delivery_count=10 + i % 3,
        delivery_sum_ms=25.5 * (1 + i % 9),
    )


def _http(worker: Worker, at: datetime, i: int, route: str = "api/v1/orders") -> RequestSample:
    return RequestSample(
        worker=worker,
        recorded_at=at,
        interval_seconds=10,
        route=route,
        requests=10 + i % 6,
        server_errors=i % 4 == 0,
        duration_sum_ms=120.0 + i % 10,
        queries=30 + i % 5,
        query_ms=40.5 + i % 8,
    )


def seed(start: datetime, end: datetime, every: timedelta, gap: tuple[datetime, datetime]) -> None:
    """Two web processes' samples every `every` in (start, end] but in the gap, a Celery
    process's (the figures leave it out) and the probes' request samples (left out too)."""
    web = [_worker("web:a"), _worker("web:b")]
    celery = _worker("celery:a", WorkerRole.CELERY)
    ws, http = [], []
    at, i = start + every, 0
    while at <= end:
        if not gap[0] < at <= gap[1]:
            for worker in web:
                ws.append(_ws(worker, at, i))
                http.append(_http(worker, at, i))
            ws.append(_ws(celery, at, i))
            http.append(_http(web[0], at, i, route="health"))
        at, i = at + every, i + 1
    WebSocketSample.objects.bulk_create(ws)
    RequestSample.objects.bulk_create(http)


def raw_hour(ends_at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    ws, http = trends.raw_buckets(ends_at - timedelta(hours=1), ends_at, 3600)
    [w] = ws.values()
    [h] = http.values()
    return w, h


def test_an_hour_is_rolled_up_once_its_last_samples_can_no_longer_arrive() -> None:
    seed(HOUR_END - timedelta(hours=1), HOUR_END + timedelta(minutes=1), timedelta(seconds=10),
         gap=(HOUR_END, HOUR_END))  # fmt: skip
    lag = trends.lag_seconds()
    assert trends.roll_up(HOUR_END + timedelta(seconds=lag - 1)) == 0
    assert not TrendRollup.objects.exists()

    assert trends.roll_up(HOUR_END + timedelta(seconds=lag)) == 1
    row = TrendRollup.objects.get()
    assert row.ends_at == HOUR_END
    # The web processes' 2 x 360 samples, not the Celery process's; no probe requests.
    assert (row.ws_samples, row.http_samples) == (720, 720)
    w, h = raw_hour(HOUR_END)
    for name in trends.WS_FIELDS:
        assert getattr(row, name) == pytest.approx(w[name]), name
    for name in trends.HTTP_FIELDS:
        assert getattr(row, name) == pytest.approx(h[name]), name
    # The next hour is not complete: nothing more.
    assert trends.roll_up(HOUR_END + timedelta(minutes=59)) == 0


def test_two_beats_or_a_retried_task_write_the_same_hours_without_doubling_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(HOUR_END - timedelta(hours=3), HOUR_END, timedelta(minutes=1), gap=(HOUR_END, HOUR_END))
    now = HOUR_END + timedelta(minutes=5)
    assert trends.roll_up(now) == 3
    first = list(TrendRollup.objects.order_by("ends_at").values(*trends.UPDATED))

    # A second beat that read the watermark before the first one wrote: the same hours again.
    real = trends._first_hour_to_write
    monkeypatch.setattr(trends, "_first_hour_to_write", lambda last, now: HOUR_END - 2 * HOUR)
    assert trends.roll_up(now) == 3
    monkeypatch.setattr(trends, "_first_hour_to_write", real)
    again = list(TrendRollup.objects.order_by("ends_at").values(*trends.UPDATED))
    assert TrendRollup.objects.count() == 3
    assert again == first
    # The next beat has nothing left to do.
    assert trends.roll_up(now) == 0


def test_missed_hours_are_caught_up_after_downtime_within_the_samples_retention(
    settings: Any,
) -> None:
    settings.METRICS_RETENTION_DAYS = 2
    seed(HOUR_END - timedelta(days=3), HOUR_END, timedelta(minutes=10), gap=(HOUR_END, HOUR_END))
    trends.roll_up(HOUR_END - timedelta(days=2, hours=12))  # then beat stopped for 2.5 days
    before = TrendRollup.objects.count()
    assert before == 11  # the first 12 hours of samples but the last, not complete yet
    trends.roll_up(HOUR_END + timedelta(minutes=1))
    ends = list(TrendRollup.objects.order_by("ends_at").values_list("ends_at", flat=True))
    assert ends[-1] == HOUR_END
    # Caught up from the retention's start (older samples may be pruned), hour after hour.
    recent = ends[before:]
    assert recent[0] == HOUR_END - timedelta(days=2) + HOUR
    assert all(b - a == HOUR for a, b in pairwise(recent))
    assert len(recent) == 48


@pytest.mark.parametrize("range_name", ["week", "month"])
def test_the_week_and_month_from_rollups_equal_the_same_range_from_the_samples(
    range_name: str, settings: Any
) -> None:
    settings.METRICS_RETENTION_DAYS = 35
    now = HOUR_END + timedelta(minutes=47, seconds=13)  # not on any bucket's edge
    # Twelve hours without samples: two whole buckets of the month's six hours.
    gap = (HOUR_END - timedelta(days=3, hours=11), HOUR_END - timedelta(days=2, hours=23))
    seed(now - timedelta(days=31), now, timedelta(minutes=7), gap)
    assert trends.roll_up(now - timedelta(minutes=40)) == 31 * 24
    # The last 47 minutes are not rolled up: they are read from the samples.
    assert trends.rolled_up_until(now) == HOUR_END
    # The rollups are read, and they differ from what was rolled up if the hours are wrong.
    rolled = history(range_name, now)
    TrendRollup.objects.all().delete()
    raw = history(range_name, now)

    assert rolled["times"] == raw["times"]
    rolled_series = cast(dict[str, list[float | None]], rolled["series"])
    raw_series = cast(dict[str, list[float | None]], raw["series"])
    for name, series in raw_series.items():
        values = rolled_series[name]
        assert [v is None for v in values] == [v is None for v in series], name
        for value, expected in zip(values, series, strict=True):
            if expected is not None:
                assert value == pytest.approx(expected, rel=1e-9, abs=0.01), name
    # The newest minutes, after the last rollup, are there; the gap is drawn as a gap.
    assert raw["series"]["messagesPerMinute"][-1] is not None
    assert None in raw["series"]["messagesPerMinute"]


def test_the_week_reads_the_rollups_for_whole_hours() -> None:
    now = HOUR_END + timedelta(minutes=30)
    seed(now - timedelta(days=2), now, timedelta(minutes=10), gap=(HOUR_END, HOUR_END))
    trends.roll_up(now)
    # An hour's rollup changed behind the samples' back shows: the week reads it.
    TrendRollup.objects.filter(ends_at=HOUR_END).update(sent=0, received=0)
    week = history("week", now)
    index = week["times"].index(int(HOUR_END.timestamp()))
    assert week["series"]["messagesPerMinute"][index] == 0
    assert week["series"]["messagesPerMinute"][index - 1] not in (0, None)


def test_rollups_outlive_the_samples_with_a_retention_of_their_own(settings: Any) -> None:
    settings.TREND_RETENTION_DAYS = 90
    for days in (30, 89, 91, 120):
        TrendRollup.objects.create(ends_at=HOUR_END - timedelta(days=days), computed_at=HOUR_END)
    assert trends.prune_trend_rollups(HOUR_END, dry_run=True) == 2
    assert retention.prune(HOUR_END)["trend_rollups"] == 2
    left = TrendRollup.objects.values_list("ends_at", flat=True)
    assert sorted(HOUR_END - moment for moment in left) == [timedelta(30), timedelta(89)]


def test_beat_rolls_up_the_trends() -> None:
    celery_app.loader.import_default_modules()
    entries = django_settings.CELERY_BEAT_SCHEDULE.values()
    assert "monitoring.trend_rollup" in {entry["task"] for entry in entries}
    assert "monitoring.trend_rollup" in celery_app.tasks


def test_a_deployment_started_inside_a_bucket_reads_as_itself_not_diluted() -> None:
    # Started 10 minutes ago: two processes, 15 connections and 130 MB each, every 10 s.
    now = HOUR_END + timedelta(minutes=20)
    workers = [_worker("web-1"), _worker("web-2")]
    rows = []
    for worker in workers:
        at = now - timedelta(minutes=10) + timedelta(seconds=10)
        while at <= now:
            sample = _ws(worker, at, 0)
            sample.interval_seconds = 10
            sample.active_connections = 15
            sample.memory_rss_bytes = 130_000_000
            rows.append(sample)
            at += timedelta(seconds=10)
    WebSocketSample.objects.bulk_create(rows)
    for range_name in ("day", "week", "month"):
        series = history(range_name, now)["series"]
        # The last bucket (10 min, 1 h or 6 h) holds only these ten minutes.
        assert series["activeConnections"][-1] == pytest.approx(30, abs=0.5), range_name
        assert series["memoryMb"][-1] == pytest.approx(260, abs=1), range_name
        assert series["messagesPerMinute"][-1] == pytest.approx(2 * 150 * 6, rel=0.02), range_name
