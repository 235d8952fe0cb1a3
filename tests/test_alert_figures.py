"""Alert figures as people read them: rounded with units, descriptions that follow the rule,
and a preview that sees what the engine saw."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import OperationalError
from django.test import Client

from monitoring import recording
from monitoring.alerting.engine import run_cycle
from monitoring.alerting.messages import incident_message
from monitoring.alerting.metrics import REGISTRY, Window, format_number, format_value
from monitoring.alerting.preview import preview
from monitoring.alerting.replay import Grid
from monitoring.models import AlertRule, WebSocketSample, Worker
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from monitoring.stats import websocket_stats
from notifications.defaults import create_default_routes
from notifications.models import Destination, Route

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def setup(db: Any) -> None:
    create_default_routes(Destination, Route)
    AlertRule.objects.update(enabled=False)


@pytest.fixture
def web() -> Worker:
    return Worker.objects.create(
        name="web:h:1:abc",
        hostname="h",
        pid=1,
        started_at=NOW - timedelta(days=8),
        last_seen_at=NOW,
    )


def error_rule(**fields: Any) -> AlertRule:
    values: dict[str, Any] = {
        "name": "Error burst",
        "metric": "ws.error_rate",
        "comparison": "gt",
        "threshold": 1,
        "window_seconds": 60,
        "pending_seconds": 0,
        "clear_seconds": 0,
        "repeat_interval_seconds": 0,
        "escalation_delay_seconds": 0,
        "description": "More than {threshold} of operations failed over {window}.",
        **fields,
    }
    return AlertRule.objects.create(**values)


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [
        ("ws.error_rate", 66.66666666666667, "66.7%"),
        ("ws.error_rate", 0.004, "0.004%"),
        ("ws.error_rate", 5.0, "5%"),
        ("ws.latency_avg_ms", 6.787330316742081, "7 ms"),
        ("ws.latency_avg_ms", 1234.5, "1,234 ms"),
        ("ws.new_connections_per_minute", 6.787330316742081, "6.8 per minute"),
        ("ws.active_connections", 2000.0, "2,000 connections"),
        ("workers.missing", 1.0, "1 workers"),
        ("no.such_metric", 1.23456, "1.23"),
    ],
)
def test_values_are_rounded_for_their_unit_and_carry_it(
    metric: str, value: float, text: str
) -> None:
    assert format_value(metric, value) == text


def test_format_number_keeps_small_values_and_drops_noise() -> None:
    assert format_number(-0.0001, 1) == "-0.0001"
    assert format_number(0.0, 1) == "0"
    assert format_number(12.0, 1) == "12"


def test_a_description_follows_the_threshold_after_it_changes(web: Worker) -> None:
    rule = error_rule(threshold=1)
    rule.threshold = 2
    rule.window_seconds = 300
    rule.save()
    WebSocketSample.objects.create(
        worker=web, recorded_at=NOW, interval_seconds=10, messages_received=3, errors=2
    )
    with time_machine.travel(NOW, tick=False):
        (incident,) = run_cycle().opened
    message = incident_message([incident])
    assert "More than 2% of operations failed over 5 minutes." in message.text
    assert "1%" not in message.text
    assert "Value: 66.7%" in message.text
    assert "Condition: WebSocket error rate &gt; 2%" in message.text  # Slack shows ">"


def test_the_admin_refuses_an_unknown_placeholder(admin_client: Client) -> None:
    rule = error_rule()
    rule.description = "Above {treshold} for {window}"
    with pytest.raises(Exception, match="treshold"):
        rule.full_clean()


def test_incident_pages_show_rounded_values_with_units(admin_client: Client, web: Worker) -> None:
    error_rule()
    WebSocketSample.objects.create(
        worker=web, recorded_at=NOW, interval_seconds=10, messages_received=3, errors=2
    )
    with time_machine.travel(NOW, tick=False):
        (incident,) = run_cycle().opened
    AlertRule.objects.filter(pk=incident.rule_id).update(threshold=1)
    # 2 failures in 3 operations: 66.666…%
    listing = admin_client.get("/admin/monitoring/incident/").content.decode()
    page = admin_client.get(f"/admin/monitoring/incident/{incident.pk}/change/").content.decode()
    for html in (listing, page):
        # What a person reads: the chart's data (a json_script) holds the raw values it draws.
        text = re.sub(r"<script\b.*?</script>", "", html, flags=re.DOTALL)
        assert "66.7%" in text
        assert "66.666" not in text


def spikes(web: Worker, rng: random.Random) -> None:
    """A week-long hour of samples every 10 s, with bursts of errors a few seconds long."""
    start = NOW - timedelta(hours=1)
    rows = []
    for i in range(360):
        errors = rng.choice([0, 0, 0, 0, 5, 40]) if i % 17 in (3, 4) else 0
        rows.append(
            WebSocketSample(
                worker=web,
                recorded_at=start + timedelta(seconds=10 * i + rng.randint(0, 9)),
                interval_seconds=10,
                connections=rng.randint(0, 30),
                messages_received=rng.randint(0, 20),
                errors=errors,
                memory_percent=rng.uniform(10, 95),
            )
        )
    WebSocketSample.objects.bulk_create(rows)


@pytest.mark.parametrize(
    ("evaluation_seconds", "window_seconds"), [(10, 10), (10, 60), (60, 300), (30, 90)]
)
@pytest.mark.parametrize(
    "metric", ["ws.error_rate", "ws.new_connections_per_minute", "process.memory_percent"]
)
def test_the_replay_computes_what_the_engine_computes_at_each_evaluation(
    settings: Any, web: Worker, evaluation_seconds: int, window_seconds: int, metric: str
) -> None:
    settings.ALERT_EVALUATION_SECONDS = evaluation_seconds
    spikes(web, random.Random(7))
    history = REGISTRY[metric].history
    assert history is not None
    points = history(NOW - timedelta(hours=1), NOW, window_seconds)
    assert len(points) == 3600 // evaluation_seconds
    assert Grid.for_window(window_seconds).exact
    for moment, replayed in points:
        live = REGISTRY[metric].compute(Window(moment, window_seconds)).get("")
        if live is None:
            assert replayed is None, moment
        else:
            assert replayed == pytest.approx(live), moment


def test_the_replay_counts_the_clients_of_processes_found_dead(settings: Any, web: Worker) -> None:
    """A web process killed outright never reports its clients leaving; they count as
    disconnections when it is found dead, in the engine's value and in the preview's alike."""
    settings.ALERT_EVALUATION_SECONDS = 10
    spikes(web, random.Random(7))
    for index, minutes in enumerate((50, 31, 7), start=2):
        Worker.objects.create(
            name=f"web:h:{index}:dead",
            hostname="h",
            pid=index,
            started_at=NOW - timedelta(days=1),
            last_seen_at=NOW - timedelta(minutes=minutes, seconds=40),
            declared_dead_at=NOW - timedelta(minutes=minutes, seconds=3),
            connections_lost=20 * index,
        )
    metric = REGISTRY["ws.disconnections_per_minute"]
    assert metric.history is not None
    points = metric.history(NOW - timedelta(hours=1), NOW, 60)
    for moment, replayed in points:
        live = metric.compute(Window(moment, 60)).get("")
        assert replayed == pytest.approx(live), moment
    assert max(v or 0 for _, v in points) == 80  # the 80 clients of the last one, in a minute


def test_the_preview_sees_a_ten_second_spike_as_the_engine_did(
    settings: Any, admin_client: Client, web: Worker
) -> None:
    settings.ALERT_EVALUATION_SECONDS = 10
    rule = error_rule(window_seconds=10)
    # One quiet minute, then 10 seconds in which 2 of 3 operations fail.
    for second in range(0, 60, 10):
        WebSocketSample.objects.create(
            worker=web,
            recorded_at=NOW - timedelta(minutes=5, seconds=second),
            interval_seconds=10,
            messages_received=100,
        )
    WebSocketSample.objects.create(
        worker=web,
        recorded_at=NOW - timedelta(minutes=3, seconds=5),
        interval_seconds=10,
        messages_received=3,
        errors=2,
    )
    with time_machine.travel(NOW, tick=False):
        result = preview(rule)
        page = admin_client.post(
            f"/admin/monitoring/alertrule/{rule.pk}/change/preview/",
            {
                "name": rule.name,
                "description": rule.description,
                "enabled": "on",
                "severity": "warning",
                "metric": rule.metric,
                "comparison": "gt",
                "threshold": "1",
                "window_seconds": "10",
                "pending_seconds": "0",
                "clear_seconds": "0",
                "repeat_interval_seconds": "0",
                "escalation_delay_seconds": "0",
                "flap_threshold": "4",
                "settle_seconds": "600",
                "group_by": "",
            },
        ).content.decode()
    assert [i.peak_text for i in result.incidents] == ["66.7%"]
    assert (result.step_seconds, result.resolution_seconds) == (10, 10)
    assert '<td class="preview-peak">66.7%</td>' in page
    assert "one evaluation every 10 s" in page


# --- one source for every figure --------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "errors", "percent"),
    [
        (1000, 49, 4.9),  # the endpoint's 4.9% is the rule's 4.9%: no page at a 5% threshold
        (100, 0, 0.0),
        # A Redis outage: broadcasts fail with no client operation behind them. Everything
        # failed, and the rate says 100%, not 171%.
        (70, 120, 100.0),
    ],
)
def test_the_endpoint_and_the_rule_read_one_error_rate(
    web: Worker, settings: Any, received: int, errors: int, percent: float
) -> None:
    settings.STATS_WINDOW_SECONDS = 300
    settings.WORKER_LIVENESS_SECONDS = 3600
    row = WebSocketSample.objects.create(
        worker=web,
        recorded_at=NOW - timedelta(seconds=30),
        interval_seconds=10,
        messages_received=received,
        errors=errors,
    )
    Worker.objects.filter(pk=web.pk).update(last_sample=row)
    endpoint = websocket_stats(NOW)["errorRate"]
    (rule_value,) = REGISTRY["ws.error_rate"].compute(Window(NOW, 300)).values()
    assert endpoint == pytest.approx(percent / 100)
    assert rule_value == pytest.approx(100 * endpoint)
    assert error_rule(threshold=5).breaches(rule_value) == (percent > 5)


def test_a_percentile_is_never_outside_what_was_observed(web: Worker, settings: Any) -> None:
    """One round trip of 12.5 ms falls in the 10-25 ms bucket: interpolation alone says 17.5."""
    settings.WORKER_LIVENESS_SECONDS = 3600
    monitor = WebSocketMonitor()
    monitor.track_round_trip(12.5)
    monitor.track_delivery_latency(3.0)
    monitor.track_delivery_latency(4.0)
    identity = WorkerIdentity(role="web")
    with time_machine.travel(NOW - timedelta(seconds=5), tick=False):
        SampleRecorder(identity, MonitorSnapshot.empty(monitor.started_at)).flush(
            monitor.snapshot()
        )
    stats = websocket_stats(NOW)
    assert stats["roundTrip"]["p50Ms"] == 12.5
    assert stats["roundTrip"]["p99Ms"] == 12.5
    assert stats["latency"]["p50Ms"] is not None
    assert 3.0 <= stats["latency"]["p50Ms"] <= 4.0
    assert stats["latency"]["p99Ms"] == 4.0
    (p95,) = REGISTRY["ws.latency_p95_ms"].compute(Window(NOW, 60)).values()
    assert p95 == 4.0


def test_extremes_of_a_flush_that_failed_are_carried_into_the_next(
    web: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = WebSocketMonitor()
    recorder = SampleRecorder(WorkerIdentity(role="web"), MonitorSnapshot.empty(0.0))
    monitor.track_delivery_latency(900.0)  # observed in the interval whose flush fails
    with monkeypatch.context() as patch:
        patch.setattr(recording, "record_sample", _database_down)
        with pytest.raises(OperationalError):
            recorder.flush(monitor.snapshot())
    monitor.track_delivery_latency(2.0)
    sample = recorder.flush(monitor.snapshot())
    assert sample.delivery_count == 2
    assert (sample.delivery_min_ms, sample.delivery_max_ms) == (2.0, 900.0)


def _database_down(*args: object, **kwargs: object) -> WebSocketSample:
    raise OperationalError("the database went away")
