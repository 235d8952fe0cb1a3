"""The alerting engine, driven through simulated time over real sample rows."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django.utils import timezone

from monitoring.alerting.defaults import DEFAULT_RULES, install_defaults
from monitoring.alerting.engine import acknowledge, run_cycle
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    OnCallShift,
    RequestSample,
    Silence,
    SlowQuery,
    SlowStatement,
    WebSocketSample,
    Worker,
    WorkerRole,
)
from notifications.defaults import create_default_routes
from notifications.models import Destination, Notification, Route
from orders.anomaly.defaults import VENUE_RULES
from tests.fakes import closed_port

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)  # a Friday


@pytest.fixture(autouse=True)
def setup(db: Any, settings: Any) -> None:
    create_default_routes(Destination, Route)
    # The migration's default rules stay out of the way unless a test enables one.
    AlertRule.objects.update(enabled=False)
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    settings.WORKER_LIVENESS_SECONDS = 30


def only_default_rules(*names: str) -> None:
    install_defaults()
    AlertRule.objects.update(enabled=False)
    AlertRule.objects.filter(name__in=names).update(enabled=True)


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def worker(name: str = "web-1", role: str = WorkerRole.WEB, seen: datetime | None = None) -> Worker:
    seen = seen or timezone.now()
    found, _ = Worker.objects.update_or_create(
        name=name,
        defaults={"last_seen_at": seen},
        create_defaults={
            "role": role,
            "hostname": "h",
            "pid": 1,
            "started_at": seen - timedelta(hours=1),
            "last_seen_at": seen,
        },
    )
    return found


def sample(**fields: Any) -> WebSocketSample:
    w = worker(fields.pop("worker", "web-1"))
    row = WebSocketSample.objects.create(
        worker=w, recorded_at=fields.pop("at", timezone.now()), interval_seconds=10, **fields
    )
    Worker.objects.filter(pk=w.pk).update(last_sample=row)
    return row


def rule(**fields: Any) -> AlertRule:
    defaults: dict[str, Any] = {
        "name": "Test rule",
        "metric": "ws.new_connections_per_minute",
        "comparison": "gte",
        "threshold": 50,
        "window_seconds": 60,
        "pending_seconds": 0,
        "clear_seconds": 0,
        "severity": "warning",
        "repeat_interval_seconds": 0,
        "escalation_delay_seconds": 0,
    }
    return AlertRule.objects.create(**{**defaults, **fields})


def firing() -> list[Incident]:
    return list(Incident.objects.filter(status=IncidentStatus.FIRING).select_related("rule"))


# --- every default rule, just over and just under its threshold -----------------------

CROSSINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "Connection spike": ({"connections": 50}, {"connections": 49}),
    "Disconnection spike": ({"disconnections": 50}, {"disconnections": 49}),
    "High error rate": (
        {"messages_received": 94, "connections": 0, "errors": 6},  # 6 of 100 ops... see below
        {"messages_received": 95, "errors": 5},
    ),
    "Elevated error rate": (
        {"messages_received": 98, "errors": 2},
        {"messages_received": 99, "errors": 1},
    ),
    "Refused connections and bad frames": ({"client_errors": 600}, {"client_errors": 599}),
    "Memory critical": ({"memory_percent": 90.5}, {"memory_percent": 90.0}),
    "Memory high": ({"memory_percent": 80.5}, {"memory_percent": 80.0}),
    "WebSocket latency": (
        {"delivery_count": 2, "delivery_sum_ms": 2002.0},
        {"delivery_count": 2, "delivery_sum_ms": 2000.0},
    ),
}


def error_rate_ops(fields: dict[str, Any]) -> dict[str, Any]:
    """Error rate = errors / (connections + rejected + received): make errors part of received."""
    if "errors" in fields:
        fields = {**fields, "messages_received": fields["messages_received"] + fields["errors"]}
    return fields


@pytest.mark.parametrize("name", sorted(CROSSINGS))
def test_each_sample_based_default_rule_fires_over_its_threshold_and_not_just_under(
    clock: Any, name: str
) -> None:
    only_default_rules(name)
    over, under = CROSSINGS[name]
    sample(**error_rate_ops(under))
    run_cycle()
    assert firing() == []
    clock.shift(3600)  # the earlier sample leaves every window
    sample(**error_rate_ops(over))
    run_cycle()
    assert [i.rule.name for i in firing()] == [name]


HTTP_CROSSINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "HTTP errors critical": (
        {"requests": 1000, "server_errors": 52},
        {"requests": 1000, "server_errors": 50},
    ),
    "HTTP errors elevated": (
        {"requests": 1000, "server_errors": 12},
        {"requests": 1000, "server_errors": 10},
    ),
    "Slow responses": (
        {"requests": 10, "duration_sum_ms": 20_020.0},
        {"requests": 10, "duration_sum_ms": 20_000.0},
    ),
}


def request_sample(route: str = "api/v1/orders", **fields: Any) -> RequestSample:
    return RequestSample.objects.create(
        worker=worker(), recorded_at=timezone.now(), interval_seconds=10, route=route, **fields
    )


@pytest.mark.parametrize("name", sorted(HTTP_CROSSINGS))
def test_each_http_default_rule_fires_over_its_threshold_and_not_just_under(
    clock: Any, name: str
) -> None:
    only_default_rules(name)
    over, under = HTTP_CROSSINGS[name]
    request_sample(**under)
    run_cycle()
    assert firing() == []
    clock.shift(3600)
    # Summed over routes: half of it on each of two.
    request_sample("api/v1/orders", **{k: v // 2 for k, v in over.items()})
    request_sample("api/v1/orders/<int:order_id>", **{k: v // 2 for k, v in over.items()})
    run_cycle()
    assert [i.rule.name for i in firing()] == [name]


def test_health_probes_answering_503_are_not_http_errors(clock: Any) -> None:
    only_default_rules("HTTP errors critical", "HTTP errors elevated", "Slow responses")
    # A quiet night: the balancer's probes are most of the traffic, and /health says 503
    # while a dependency is down (its own rule's business), slowly as its checks time out.
    request_sample("api/v1/orders", requests=20)
    for probe in ("health", "api/v1/monitoring/database/health"):
        request_sample(probe, requests=200, server_errors=200, duration_sum_ms=200 * 3000.0)
    run_cycle()
    assert firing() == []
    request_sample("api/v1/orders", requests=20, server_errors=3)
    clock.shift(1)
    run_cycle()
    # 3 of the 40 real requests (7.5%): both fire (the warning held back by the critical).
    fired = sorted(i.rule.name for i in firing())
    assert fired == ["HTTP errors critical", "HTTP errors elevated"]


def test_the_probe_routes_are_the_routes_of_the_probe_urls() -> None:
    from django.urls import resolve

    from monitoring.requests import PROBE_ROUTES

    probes = ["/health", "/health/live", "/metrics", "/api/v1/monitoring/websocket/health"]
    probes.append("/api/v1/monitoring/database/health")
    assert sorted(PROBE_ROUTES) == sorted(resolve(path).route for path in probes)


def test_slow_queries_fire_from_their_count_in_the_window(clock: Any) -> None:
    only_default_rules("Slow queries")
    statement = SlowStatement.objects.create(
        fingerprint="f",
        statement="SELECT ?",
        first_seen_at=timezone.now(),
        last_seen_at=timezone.now(),
    )
    for _ in range(9):
        SlowQuery.objects.create(statement=statement, recorded_at=timezone.now(), duration_ms=1500)
    run_cycle()
    assert firing() == []
    SlowQuery.objects.create(statement=statement, recorded_at=timezone.now(), duration_ms=1500)
    clock.shift(1)
    run_cycle()
    assert [i.rule.name for i in firing()] == ["Slow queries"]


def test_the_critical_http_error_rule_holds_back_its_warning(clock: Any) -> None:
    only_default_rules("HTTP errors critical", "HTTP errors elevated")
    request_sample(requests=100, server_errors=20)
    run_cycle()
    held = Incident.objects.get(rule__name="HTTP errors elevated")
    assert held.events.filter(message="inhibited: HTTP errors critical is firing").exists()


def test_a_flood_of_refusals_and_bad_frames_is_an_attack_warning_not_an_error_rate(
    clock: Any,
) -> None:
    only_default_rules(
        "High error rate", "Elevated error rate", "Refused connections and bad frames"
    )
    # 5,000 refused handshakes and garbage frames against 100 real operations.
    sample(connections=10, messages_received=90, rejected_connections=2000, client_errors=5000)
    run_cycle()
    assert [i.rule.name for i in firing()] == ["Refused connections and bad frames"]


def test_round_trips_that_clients_report_feed_no_alerting_metric(clock: Any) -> None:
    from monitoring.alerting.metrics import REGISTRY, Window
    from monitoring.histogram import BUCKET_COUNT

    honest = {"connections": 5, "messages_received": 20, "delivery_count": 4}
    sample(**honest, delivery_sum_ms=40.0, delivery_buckets=[4] + [0] * (BUCKET_COUNT - 1))
    before = {key: m.compute(Window(timezone.now(), 300)) for key, m in REGISTRY.items()}
    # A client lies about its round trips: a minute each, a thousand times.
    sample(
        **{name: 0 for name in honest},
        round_trip_count=1000,
        round_trip_sum_ms=60_000_000.0,
        round_trip_buckets=[0] * (BUCKET_COUNT - 1) + [1000],
    )
    after = {key: m.compute(Window(timezone.now(), 300)) for key, m in REGISTRY.items()}
    assert after == before


def test_the_error_rate_thresholds_are_exact() -> None:
    # 6 errors in 100 operations is 6% (> 5%); 5 in 100 is not above 5%.
    assert error_rate_ops({"messages_received": 94, "errors": 6})["messages_received"] == 100


def test_api_server_down_fires_when_no_web_process_reports_for_its_pending_period(
    clock: Any,
) -> None:
    only_default_rules("API server down")
    sample(connections=1)
    run_cycle()
    assert firing() == []
    clock.shift(31)  # the only web worker is no longer live
    run_cycle()
    assert firing() == []  # pending: 60 s
    clock.shift(59)
    run_cycle()
    assert firing() == []
    clock.shift(1)
    run_cycle()
    assert [i.rule.name for i in firing()] == ["API server down"]


def test_a_process_that_goes_silent_without_stopping_is_reported(clock: Any) -> None:
    only_default_rules("Process stopped reporting")
    worker("celery-1", role=WorkerRole.CELERY)
    stopped = worker("web-old")
    Worker.objects.filter(pk=stopped.pk).update(stopped_at=timezone.now())
    run_cycle()
    assert firing() == []
    clock.shift(29)
    run_cycle()
    assert firing() == []
    clock.shift(2)
    run_cycle()
    assert firing() == []  # missing, and not replaced within the rule's minute yet
    clock.shift(60)
    run_cycle()
    (incident,) = firing()
    assert incident.last_value == 1  # the celery worker; the cleanly stopped one is not missing


def test_redis_unreachable_fires_from_a_real_failed_ping(clock: Any, settings: Any) -> None:
    only_default_rules("Redis unreachable")
    run_cycle()
    assert firing() == []
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    clock.shift(60)
    run_cycle()
    assert [i.rule.name for i in firing()] == ["Redis unreachable"]


def test_database_connection_lost_fires_on_a_value_of_one_and_not_zero(
    clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring.alerting import metrics

    only_default_rules("Database connection lost")
    run_cycle()  # the real probe: the database answers
    assert firing() == []
    real = metrics.REGISTRY["dependency.database_down"]
    monkeypatch.setitem(
        metrics.REGISTRY,
        "dependency.database_down",
        metrics.Metric(real.key, real.label, real.unit, lambda window: {"": 1.0}, maximum=1),
    )
    clock.shift(60)
    run_cycle()
    assert [i.rule.name for i in firing()] == ["Database connection lost"]


def test_the_default_rules_are_the_specifications_thresholds(db: Any) -> None:
    names = {spec["name"]: spec for spec in DEFAULT_RULES}
    assert names["Connection spike"]["threshold"] == 50
    assert names["High error rate"]["threshold"] == 5
    assert names["Elevated error rate"]["threshold"] == 1
    assert names["Memory critical"]["threshold"] == 90
    assert names["Memory high"]["threshold"] == 80
    assert names["WebSocket latency"]["threshold"] == 1000
    assert names["Database connection lost"]["severity"] == "critical"
    assert names["API server down"]["severity"] == "critical"
    assert names["HTTP errors critical"]["threshold"] == 5
    assert names["HTTP errors elevated"]["threshold"] == 1
    assert names["Slow responses"]["threshold"] == 2000
    # The data migrations installed them, and the venue rules (orders.anomaly.defaults).
    venue_rules = {spec["name"] for spec in VENUE_RULES}
    assert set(AlertRule.objects.values_list("name", flat=True)) == set(names) | venue_rules


# --- pending, hysteresis, one incident per rule ----------------------------------------


def test_the_condition_must_hold_for_the_pending_period(clock: Any) -> None:
    rule(pending_seconds=120)
    for step in (60, 59, 1):
        sample(connections=60)
        run_cycle()
        assert firing() == []
        clock.shift(step)
    sample(connections=60)
    run_cycle()  # 120 s after the condition first held
    assert len(firing()) == 1


def test_a_blip_shorter_than_the_pending_period_never_fires(clock: Any) -> None:
    rule(pending_seconds=120)
    sample(connections=60)
    run_cycle()
    clock.shift(61)
    run_cycle()  # clear now: the pending clock resets
    clock.shift(60)
    sample(connections=60)
    run_cycle()
    assert firing() == []


def test_further_firings_update_the_one_incident(clock: Any) -> None:
    rule()
    for count in (60, 90, 70):
        sample(connections=count)
        run_cycle()
        clock.shift(61)
    (incident,) = Incident.objects.all()
    assert incident.occurrences == 3
    assert incident.peak_value == 90
    assert incident.last_value == 70


def test_it_resolves_only_after_the_clear_period(clock: Any) -> None:
    rule(clear_seconds=180)
    sample(connections=60)
    run_cycle()
    for _ in range(3):
        clock.shift(61)
        run_cycle()
        assert len(firing()) == 1
    clock.shift(61)
    run_cycle()
    assert firing() == []
    (incident,) = Incident.objects.all()
    assert incident.status == IncidentStatus.RESOLVED
    kinds = list(incident.events.values_list("kind", flat=True))
    assert kinds[0] == IncidentEventKind.OPENED
    assert IncidentEventKind.RESOLVED in kinds
    assert kinds.index(IncidentEventKind.RESOLVED) > kinds.index(IncidentEventKind.NOTIFIED)


def test_a_relapse_within_the_clear_period_keeps_the_incident_open(clock: Any) -> None:
    rule(clear_seconds=180)
    sample(connections=60)
    run_cycle()
    clock.shift(120)
    run_cycle()
    sample(connections=60)
    run_cycle()
    clock.shift(120)
    run_cycle()
    assert len(firing()) == 1
    assert Incident.objects.count() == 1


# --- notifications ---------------------------------------------------------------------


def notes_to(name: str) -> list[Notification]:
    return list(Notification.objects.filter(destination__name=name).order_by("pk"))


def test_opening_notifies_and_resolving_threads_a_reply_and_updates_in_place(clock: Any) -> None:
    rule(name="Connection spike test", runbook_url="https://runbooks.example/spike")
    sample(connections=75)
    run_cycle()
    (opening,) = notes_to("operations")
    assert opening.text.startswith("🟠 Connection spike test")
    assert "Value: 75 per minute" in opening.text
    assert "Runbook: <https://runbooks.example/spike>" in opening.text
    Notification.objects.filter(pk=opening.pk).update(status="sent", slack_ts="1.1", attempts=1)
    clock.shift(61)
    run_cycle()
    _, reply, update = notes_to("operations")
    assert reply.thread_parent_id == opening.pk
    assert reply.text.startswith("✅ Resolved after")
    assert update.update_target_id == opening.pk
    assert update.text.startswith("✅ Resolved: Connection spike test")
    # Every message the incident caused is on its timeline, with its delivery.
    (incident,) = Incident.objects.all()
    linked = set(incident.events.exclude(notification=None).values_list("notification", flat=True))
    assert linked == {opening.pk, reply.pk, update.pk}


def test_unacknowledged_incidents_are_repeated_at_the_rules_interval(
    clock: Any, admin_user: Any
) -> None:
    rule(repeat_interval_seconds=600)
    sample(connections=75)
    run_cycle()
    for _ in range(10):
        clock.shift(60)
        sample(connections=75)
        run_cycle()
    texts = [n.text for n in notes_to("operations")]
    assert len(texts) == 2
    assert texts[1].startswith("⏰ Still firing after 10 minutes")
    (incident,) = firing()
    acknowledge(incident, admin_user)
    for _ in range(20):
        clock.shift(60)
        sample(connections=75)
        run_cycle()
    assert not any(t.startswith("⏰") for t in [n.text for n in notes_to("operations")][2:])
    kinds = list(incident.events.values_list("kind", flat=True))
    assert IncidentEventKind.REMINDED in kinds
    assert IncidentEventKind.ACKNOWLEDGED in kinds


def test_critical_incidents_escalate_to_the_on_call_person(clock: Any) -> None:
    escalation = Destination.objects.create(name="escalation", slack_channel_id="C0ESC")
    rule(severity="critical", escalation_delay_seconds=900, escalation_destination=escalation)
    OnCallShift.objects.create(
        person="Dana", slack_user_id="U0DANA", starts_at=START, ends_at=START + timedelta(days=7)
    )
    sample(connections=75)
    run_cycle()
    for _ in range(16):
        clock.shift(60)
        sample(connections=75)
        run_cycle()
    (escalated,) = notes_to("escalation")
    assert escalated.text.startswith("🚨 Escalation:")
    assert "<@U0DANA>" in escalated.text
    (incident,) = firing()
    assert incident.escalated_at is not None
    assert incident.events.filter(kind=IncidentEventKind.ESCALATED).count() == 1


def test_flapping_notifies_once_until_it_settles(clock: Any) -> None:
    rule(flap_threshold=4)
    for _ in range(6):
        sample(connections=75)
        run_cycle()
        clock.shift(61)
        run_cycle()  # clear: resolves (clear_seconds=0)
        clock.shift(60)
    texts = [n.text for n in notes_to("operations")]
    flapping = [t for t in texts if t.startswith("🔁 Flapping")]
    assert len(flapping) == 1
    # Before flapping: opened + resolved notifications; after: silence.
    assert Incident.objects.filter(flapping=True).count() >= 2


def test_alerts_firing_together_go_out_as_one_message(clock: Any, settings: Any) -> None:
    settings.ALERT_GROUP_WAIT_SECONDS = 30
    rule(name="Spike A", threshold=50)
    rule(name="Spike B", threshold=40)
    sample(connections=60)
    run_cycle()
    (grouped,) = notes_to("operations")
    assert grouped.text.startswith("⚠️ 2 alerts (2 firing)")
    assert "Spike A" in grouped.text
    assert "Spike B" in grouped.text
    assert grouped.next_attempt_at == timezone.now() + timedelta(seconds=30)
    clock.shift(10)
    rule(name="Spike C", threshold=30)
    run_cycle()
    (grouped,) = notes_to("operations")
    assert grouped.text.startswith("⚠️ 3 alerts")


def test_a_silence_suppresses_the_notification_not_the_incident(clock: Any) -> None:
    spike = rule()
    Silence.objects.create(
        reason="load test", rule=spike, starts_at=START, ends_at=START + timedelta(hours=1)
    )
    sample(connections=75)
    run_cycle()
    assert len(firing()) == 1
    assert notes_to("operations") == []
    (incident,) = firing()
    assert incident.events.filter(
        kind=IncidentEventKind.SUPPRESSED, message__contains="load test"
    ).exists()


@pytest.mark.parametrize(
    ("moment", "active"),
    [
        (datetime(2026, 6, 5, 22, 30), True),  # Friday evening, inside
        (datetime(2026, 6, 6, 1, 30), True),  # Saturday early hours: Friday's window
        (datetime(2026, 6, 6, 2, 30), False),  # after it ends
        (datetime(2026, 6, 4, 23, 0), False),  # Thursday: not a window day
        (datetime(2026, 6, 5, 1, 30), False),  # Friday early hours belong to Thursday
        (datetime(2026, 6, 5, 21, 59), False),
    ],
)
def test_a_recurring_maintenance_window_can_cross_midnight(moment: datetime, active: bool) -> None:
    window = Silence(
        reason="nightly deploys",
        weekdays="4",  # Friday
        start_time=time(22, 0),
        end_time=time(2, 0),
        timezone="Europe/London",
    )
    window.full_clean()
    from zoneinfo import ZoneInfo

    assert window.active_at(moment.replace(tzinfo=ZoneInfo("Europe/London"))) is active


def test_alerts_that_depend_on_redis_are_held_while_redis_is_unreachable(
    clock: Any, settings: Any
) -> None:
    only_default_rules("Redis unreachable", "High error rate")
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    sample(messages_received=50, errors=50)
    run_cycle()
    assert sorted(i.rule.name for i in firing()) == ["High error rate", "Redis unreachable"]
    texts = [n.text for n in notes_to("operations")]
    assert any("Redis unreachable" in t for t in texts)
    assert not any("High error rate" in t for t in texts)
    held = Incident.objects.get(rule__name="High error rate")
    assert held.events.filter(message="inhibited: Redis unreachable is firing").exists()


def test_dependents_stay_held_while_their_window_still_covers_the_outage(
    clock: Any, settings: Any
) -> None:
    """Clients thrown out by a Redis outage reconnect and fail into the error rate's 5-minute
    window; the outage's incident resolves first, and the error-rate alert must not then go
    out as if it were news of its own."""
    only_default_rules("Redis unreachable", "High error rate")
    up = settings.REDIS_URL  # the run's own Redis database, not a fixed one
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    run_cycle()
    settings.REDIS_URL = up
    for _ in range(2):  # Redis answers again; its incident resolves after its clear period
        clock.shift(61)
        run_cycle()
    assert [i.rule.name for i in firing()] == []
    sample(messages_received=50, errors=50)  # the reconnect storm, counted after
    clock.shift(10)
    run_cycle()
    (held,) = firing()
    assert held.rule.name == "High error rate"
    assert held.events.filter(
        message="inhibited: Redis unreachable fired within this rule's window"
    ).exists()
    assert not any("High error rate" in n.text for n in notes_to("operations"))
    # Still failing once the window no longer reaches back to the outage: announced then.
    for _ in range(6):
        clock.shift(60)
        sample(messages_received=50, errors=50)
        run_cycle()
    assert any("High error rate" in n.text for n in notes_to("operations"))


@pytest.mark.parametrize("name", ["Process stopped reporting", "Process died"])
def test_a_process_that_dies_after_a_database_outage_is_announced_at_once(
    clock: Any, name: str
) -> None:
    """Their windows (a day, 15 minutes) reach back past a database outage that ended two
    minutes ago, but their value already leaves outages out (silence counts only while the
    database was up): the outage must not hold back a process that died after it for the
    rest of the window (found by bench/alertmanager.py: a web process SIGKILLed 72 s after
    the database came back reached Alertmanager at once and Slack never)."""
    only_default_rules(name)
    AlertRule.objects.filter(name=name).update(pending_seconds=0)  # its wait is tested apart
    Incident.objects.create(
        rule=AlertRule.objects.get(name="Database connection lost"),
        title="Database connection lost",
        severity="critical",
        status=IncidentStatus.RESOLVED,
        opened_at=timezone.now() - timedelta(minutes=3),
        last_seen_at=timezone.now() - timedelta(minutes=2),
        resolved_at=timezone.now() - timedelta(minutes=2),
        first_value=1,
        peak_value=1,
        last_value=0,
    )
    worker("web-a")  # reports now, with the database up, then goes silent
    clock.shift(31)
    run_cycle()
    (incident,) = firing()
    assert incident.rule.name == name
    assert not incident.events.filter(kind=IncidentEventKind.SUPPRESSED).exists()
    assert any(name in n.text for n in notes_to("operations"))


def test_the_clients_of_a_killed_web_process_are_a_disconnection_spike(clock: Any) -> None:
    """A web process SIGKILLed with 60 clients never reports them leaving; found dead, they
    count as disconnected in the running totals (/metrics' counter, on which Prometheus'
    DisconnectionSpike fired) and now in the rule's figure too (found by
    bench/alertmanager.py: the application saw no spike)."""
    from monitoring.recording import release_dead_workers

    only_default_rules("Disconnection spike")
    sample(worker="web-killed", active_connections=60)
    clock.shift(31)
    assert release_dead_workers() == 60
    run_cycle()
    (incident,) = firing()
    assert (incident.rule.name, incident.last_value) == ("Disconnection spike", 60)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("group_wait", [0, 30])
def test_two_concurrent_cycles_open_and_notify_once(settings: Any, group_wait: int) -> None:
    settings.ALERT_GROUP_WAIT_SECONDS = group_wait
    create_default_routes(Destination, Route)
    for index in range(5):
        rule(name=f"Rule {index}", threshold=10 + index)
    sample(connections=60)

    def cycle() -> int:
        try:
            return len(run_cycle().opened)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=2) as pool:
        opened = sum(pool.map(lambda _: cycle(), range(2)))
    assert opened == 5
    assert Incident.objects.count() == 5
    notes = Notification.objects.filter(destination__name="operations")
    if group_wait == 0:
        assert notes.count() == 5
    announced = IncidentEvent.objects.filter(kind=IncidentEventKind.NOTIFIED)
    assert sorted(announced.values_list("incident_id", flat=True)) == sorted(
        Incident.objects.values_list("pk", flat=True)
    )
    assert {event.notification_id for event in announced} == set(notes.values_list("pk", flat=True))


def test_a_per_venue_metric_opens_one_incident_per_venue(
    clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring.alerting import metrics

    values: dict[str, float] = {"1": 5.0, "2": 0.0}
    monkeypatch.setitem(
        metrics.REGISTRY,
        "venue.test_failures",
        metrics.Metric(
            "venue.test_failures", "Failures", "", lambda window: dict(values), per_venue=True
        ),
    )
    rule(metric="venue.test_failures", comparison="gte", threshold=3)
    run_cycle()
    assert [(i.scope, i.title) for i in firing()] == [("1", "Test rule (venue 1)")]
    values["2"] = 7.0
    clock.shift(60)
    run_cycle()
    assert sorted(i.scope for i in firing()) == ["1", "2"]
    values["1"] = 0.0
    clock.shift(60)
    run_cycle()
    assert [i.scope for i in firing()] == ["2"]


def test_an_alert_silenced_when_it_opened_is_announced_when_the_silence_ends(clock: Any) -> None:
    spike = rule()
    Silence.objects.create(
        reason="maintenance", rule=spike, starts_at=START, ends_at=START + timedelta(minutes=30)
    )
    sample(connections=75)
    run_cycle()
    assert notes_to("operations") == []
    clock.shift(60 * 29)
    sample(connections=75)
    run_cycle()
    assert notes_to("operations") == []  # still inside the window
    clock.shift(120)
    sample(connections=75)
    run_cycle()
    # First what happened while it was on, then the alert that still fires.
    summary, announced = notes_to("operations")
    assert summary.text.startswith("🔕 Silence ended: maintenance")
    assert "Test rule: fired at 2026-06-05 12:00 PM UTC and is still firing" in summary.text
    assert announced.text.startswith("🟠 Test rule")
    clock.shift(60)
    sample(connections=75)
    run_cycle()
    assert len(notes_to("operations")) == 2  # each said once


def started(name: str, hostname: str = "h") -> Worker:
    """A web process that starts now and reports (a replacement, when one went silent)."""
    now = timezone.now()
    return Worker.objects.create(
        name=name, role=WorkerRole.WEB, hostname=hostname, pid=2, started_at=now, last_seen_at=now
    )


def stopped_reporting_at_once() -> None:
    """Only "Process stopped reporting", without its minute's wait for a replacement."""
    only_default_rules("Process stopped reporting")
    AlertRule.objects.filter(name="Process stopped reporting").update(pending_seconds=0)


def test_a_process_its_supervisor_replaces_within_a_minute_is_not_missing(clock: Any) -> None:
    """The soak (bench/soak.py) SIGKILLed a web process and started it again at once; an
    evaluation between the dead one's liveness running out and the replacement's first report
    took it for gone. The rule waits a minute for a replacement."""
    only_default_rules("Process stopped reporting")
    dead = worker("web-a")
    clock.shift(31)
    run_cycle()  # silent past its liveness, no replacement reporting yet
    replacement = started("web-b")
    assert replacement.started_at >= dead.last_seen_at
    for _ in range(4):
        clock.shift(30)
        Worker.objects.filter(pk=replacement.pk).update(last_seen_at=timezone.now())
        run_cycle()
        assert firing() == []


def test_a_missing_process_stays_missing_until_it_is_replaced(clock: Any) -> None:
    stopped_reporting_at_once()
    worker("web-a")
    clock.shift(31)
    run_cycle()
    (incident,) = firing()
    clock.shift(3600)  # an hour later, still gone: still firing
    run_cycle()
    assert firing() == [incident]
    replacement = started("web-b")
    assert replacement.pk
    clock.shift(60)
    Worker.objects.filter(pk=replacement.pk).update(last_seen_at=timezone.now())
    run_cycle()
    clock.shift(121)
    Worker.objects.filter(pk=replacement.pk).update(last_seen_at=timezone.now())
    run_cycle()
    assert firing() == []


def test_a_process_started_again_on_another_host_replaces_the_lost_one(clock: Any) -> None:
    """An orchestrator puts a lost host's process on another host (a new hostname): the
    capacity is back, so it is not missing, although it died (found by the soak, whose web
    processes are hosts of their own)."""
    stopped_reporting_at_once()
    worker("web-a")
    clock.shift(31)
    started("web-b", hostname="elsewhere")
    run_cycle()
    assert firing() == []


def test_one_replacement_stands_in_for_one_missing_process(clock: Any) -> None:
    stopped_reporting_at_once()
    worker("web-a")
    worker("web-b")
    worker("celery-1", role=WorkerRole.CELERY)
    clock.shift(31)
    started("web-c")
    run_cycle()
    (incident,) = firing()
    assert incident.last_value == 2  # one of the two web processes, and the celery worker


def test_a_process_that_died_is_an_incident_even_when_a_restart_replaced_it(clock: Any) -> None:
    only_default_rules("Process died", "Process stopped reporting")
    dead = worker("web-a")
    worker("web-old")
    Worker.objects.filter(name="web-old").update(stopped_at=timezone.now())  # asked to stop
    clock.shift(31)
    # The supervisor restarted it on the same host at once.
    Worker.objects.create(
        name="web-b",
        role=WorkerRole.WEB,
        hostname="h",
        pid=2,
        started_at=dead.last_seen_at,
        last_seen_at=timezone.now(),
    )
    run_cycle()
    (incident,) = firing()
    assert (incident.rule.name, incident.last_value) == ("Process died", 1)
    # It resolves once the death has left the rule's 5-minute window, after its clear period.
    clock.shift(200)
    Worker.objects.filter(name="web-b").update(last_seen_at=timezone.now())
    run_cycle()
    assert [i.rule.name for i in firing()] == ["Process died"]
    for _ in range(2):
        clock.shift(150)
        Worker.objects.filter(name="web-b").update(last_seen_at=timezone.now())
        run_cycle()
    assert firing() == []


@pytest.mark.parametrize(("group_by", "posts"), [("", 1), ("venue", 2), ("rule,severity", 1)])
def test_a_rule_says_what_its_alerts_are_grouped_by(
    clock: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, group_by: str, posts: int
) -> None:
    from monitoring.alerting import metrics

    settings.ALERT_GROUP_WAIT_SECONDS = 30
    monkeypatch.setitem(
        metrics.REGISTRY,
        "venue.test_failures",
        metrics.Metric(
            "venue.test_failures", "Failures", "", lambda w: {"1": 5.0, "2": 6.0}, per_venue=True
        ),
    )
    rule(metric="venue.test_failures", comparison="gte", threshold=3, group_by=group_by)
    run_cycle()
    assert len(notes_to("operations")) == posts
    assert len(firing()) == 2


def test_grouping_by_an_unknown_label_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        rule(group_by="venue,colour").full_clean()
    assert caught.value.message_dict["group_by"] == [
        "Unknown label colour: use rule, venue, severity."
    ]


def test_a_run_whose_notice_left_the_window_still_settles_with_it(
    clock: Any, settings: Any
) -> None:
    """The notice (minute 2) is more than the flap window before the run's last resolution
    (minute 13): it is still the run's notice, edited, and the channel hears it settled."""
    settings.ALERT_FLAP_WINDOW_SECONDS = 600
    rule(flap_threshold=2, settle_seconds=600)
    breaching = {0, 2, 10, 11, 12}
    for minute in range(25):
        if minute in breaching:
            sample(connections=75)
        run_cycle()
        clock.shift(60)
    texts = [n.text for n in notes_to("operations")]
    (notice,) = [t for t in texts if t.startswith("🔁")]  # one notice for the run...
    assert "settled resolved" in notice  # ...which says how it ended
    assert any(t.startswith("✅ Settled: Test rule") for t in texts)


def test_an_alert_with_nowhere_to_go_is_not_announced_again_every_cycle(clock: Any) -> None:
    Route.objects.all().delete()  # no destination for system or WebSocket alerts
    rule()
    for _ in range(5):
        sample(connections=75)
        run_cycle()
        clock.shift(60)
    (incident,) = firing()
    assert incident.events.filter(message__contains="announcing").count() <= 1
    assert incident.announced_at is not None
