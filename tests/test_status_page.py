"""The public status page: states, daily uptime, maintenance, and nothing internal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_type_hints

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from inkwave.lib import spans
from monitoring.alerting.defaults import install_defaults
from monitoring.health import CheckResult, DatabaseCheck, SharedChecks, Status
from monitoring.models import (
    AlertRule,
    ComponentDay,
    Incident,
    IncidentStatus,
    MaintenanceWindow,
    PublicComponent,
    Worker,
)
from monitoring.retention import prune
from monitoring.status import page, rollup, views
from monitoring.status.page import ComponentJSON, DayJSON, IncidentJSON, MaintenanceJSON, StatusJSON

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
ORDERING, LIVE, NOTIFY = (
    PublicComponent.ORDERING,
    PublicComponent.LIVE_UPDATES,
    PublicComponent.NOTIFICATIONS,
)
HOSTNAME = "ip-10-0-3-117.eu-west-1.compute.internal"
EXCEPTION = "OperationalError: connection to server at 10.0.3.5 refused"


@pytest.fixture(autouse=True)
def clock() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def fresh_snapshot(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test reads its own snapshot; the page's health checks are the database's (the
    others need running web processes: the browser test has those)."""
    cache.clear()
    monkeypatch.setattr(views, "public_checks", SharedChecks(lambda: [DatabaseCheck()]))
    yield
    cache.clear()


@pytest.fixture
def rules(db: Any) -> None:
    install_defaults()
    # Monitoring began a month ago: the shown days since then have data.
    AlertRule.objects.update(created_at=NOW - timedelta(days=30))


def at(day: date, hour: float) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)


def incident(
    rule_name: str, opened: datetime, resolved: datetime | None, **fields: Any
) -> Incident:
    rule = AlertRule.objects.get(name=rule_name)
    return Incident.objects.create(
        rule=rule,
        title=fields.pop("title", rule.name),
        severity=rule.severity,
        status=IncidentStatus.FIRING if resolved is None else IncidentStatus.RESOLVED,
        opened_at=opened,
        last_seen_at=resolved or NOW,
        resolved_at=resolved,
        first_value=7.5,
        peak_value=9.25,
        last_value=8.0,
        **fields,
    )


def snapshot(client: Client) -> StatusJSON:
    response = client.get("/status.json")
    assert response.status_code == 200
    data: StatusJSON = response.json()
    return data


def component(data: StatusJSON, component_id: str) -> ComponentJSON:
    (found,) = [c for c in data["components"] if c["id"] == component_id]
    return found


def day_of(data: StatusJSON, component_id: str, day: date) -> DayJSON:
    (found,) = [d for d in component(data, component_id)["days"] if d["date"] == day.isoformat()]
    return found


# --- spans and days -----------------------------------------------------------------------


def test_spans_merge_overlaps_and_subtract_holes() -> None:
    a, b = at(TODAY, 1), at(TODAY, 3)
    merged = spans.merge([(a, b), (at(TODAY, 2), at(TODAY, 4)), (at(TODAY, 6), at(TODAY, 5))])
    assert merged == [(a, at(TODAY, 4))]
    left = spans.subtract([(a, at(TODAY, 4))], [(at(TODAY, 2), at(TODAY, 3))])
    assert left == [(a, at(TODAY, 2)), (at(TODAY, 3), at(TODAY, 4))]
    assert spans.seconds(left) == 2 * 3600


def test_a_critical_incident_is_outage_and_a_warning_degraded_for_its_rules_component(
    rules: None,
) -> None:
    day = TODAY - timedelta(days=3)
    incident("HTTP errors critical", at(day, 10), at(day, 11))  # critical -> ordering outage
    incident("WebSocket latency", at(day, 9), at(day, 13))  # warning -> live updates degraded
    incident("Memory critical", at(day, 0), at(day, 23))  # no public component: not shown
    found = rollup.figures([day], NOW)
    ordering, live, notify = found[ORDERING, day], found[LIVE, day], found[NOTIFY, day]
    assert (ordering.state, ordering.outage_seconds, ordering.degraded_seconds) == (
        "outage",
        3600,
        0,
    )
    assert round(ordering.uptime_percent, 3) == round(100 * 23 / 24, 3)
    assert (live.state, live.outage_seconds, live.degraded_seconds) == ("degraded", 0, 4 * 3600)
    assert live.uptime_percent == 100.0
    assert (notify.state, notify.uptime_percent) == ("operational", 100.0)


def test_outage_wins_over_degraded_and_maintenance_does_not_count_against_uptime(
    rules: None,
) -> None:
    day = TODAY - timedelta(days=2)
    incident("Elevated error rate", at(day, 8), at(day, 12))  # warning, 4 h
    incident("High error rate", at(day, 10), at(day, 11))  # critical, inside it
    MaintenanceWindow.objects.create(
        title="Upgrade",
        components=[LIVE],
        starts_at=at(day, 11),
        ends_at=at(day, 14),
    )
    live = rollup.figures([day], NOW)[LIVE, day]
    assert live.outage_seconds == 3600
    assert live.degraded_seconds == 2 * 3600  # 8-10; 11-12 is maintenance
    assert live.maintenance_seconds == 3 * 3600
    assert round(live.uptime_percent, 3) == round(100 * (21 - 1) / 21, 3)


def test_an_incident_still_firing_counts_until_now_and_across_midnight(rules: None) -> None:
    incident("Redis unreachable", at(TODAY, -2), None)
    found = rollup.figures([TODAY - timedelta(days=1), TODAY], NOW)
    assert found[LIVE, TODAY - timedelta(days=1)].outage_seconds == 2 * 3600
    today = found[LIVE, TODAY]
    assert (today.outage_seconds, today.elapsed_seconds) == (12 * 3600, 12 * 3600)
    assert today.uptime_percent == 0.0


# --- rollups ------------------------------------------------------------------------------


def test_the_rollup_writes_each_finished_day_once_and_a_second_run_writes_nothing(
    rules: None, clock: Any
) -> None:
    day = TODAY - timedelta(days=5)
    incident("Slack delivery failing", at(day, 20), at(day, 21))
    written = rollup.roll_up()
    # Thirty finished days since monitoring began, three components each; today is not over.
    assert written == 30 * 3
    assert not ComponentDay.objects.filter(day=TODAY).exists()
    row = ComponentDay.objects.get(component=NOTIFY, day=day)
    assert (row.degraded_seconds, row.outage_seconds) == (3600, 0)
    assert rollup.roll_up() == 0
    clock.move_to(NOW + timedelta(days=1))
    assert rollup.roll_up() == 3
    assert ComponentDay.objects.filter(day=TODAY).count() == 3


def test_two_beats_writing_the_same_day_leave_one_row_with_the_same_figures(
    rules: None,
) -> None:
    day = TODAY - timedelta(days=1)
    incident("API server down", at(day, 1), at(day, 2))
    # Both found the day unwritten before either wrote it.
    assert rollup.write_days([day], NOW) == 3
    assert rollup.write_days([day], NOW + timedelta(seconds=5)) == 3
    rows = ComponentDay.objects.filter(day=day)
    assert rows.count() == 3
    assert rows.get(component=ORDERING).outage_seconds == 3600


def test_the_page_reads_past_days_from_their_rows_not_from_the_incidents(
    rules: None, client: Client
) -> None:
    day = TODAY - timedelta(days=10)
    incident("HTTP errors critical", at(day, 0), at(day, 6))
    rollup.roll_up()
    Incident.objects.all().delete()  # the page cannot replay what is gone
    data = snapshot(client)
    assert day_of(data, ORDERING, day) == {
        "date": day.isoformat(),
        "state": "outage",
        "uptimePercent": 75.0,
    }
    # The 90 bars: before monitoring began there is no data, not a perfect day.
    days = component(data, ORDERING)["days"]
    assert len(days) == 90
    assert days[-1]["date"] == TODAY.isoformat()
    assert days[0] == {
        "date": (TODAY - timedelta(days=89)).isoformat(),
        "state": "nodata",
        "uptimePercent": None,
    }


def test_yesterday_and_today_are_computed_before_their_rows_exist(
    rules: None, client: Client
) -> None:
    yesterday = TODAY - timedelta(days=1)
    incident("Notifications waiting", at(yesterday, 12), at(yesterday, 18))
    data = snapshot(client)
    assert day_of(data, NOTIFY, yesterday)["state"] == "outage"
    assert day_of(data, NOTIFY, yesterday)["uptimePercent"] == 75.0
    assert day_of(data, NOTIFY, TODAY)["state"] == "operational"
    assert day_of(data, NOTIFY, yesterday - timedelta(days=1))["state"] == "nodata"


# --- current state, incidents and maintenance --------------------------------------------


def test_an_open_incident_sets_its_component_state_in_plain_words(
    rules: None, client: Client
) -> None:
    incident("WebSocket latency", NOW - timedelta(minutes=20), None)
    data = snapshot(client)
    assert component(data, LIVE)["state"] == "degraded"
    assert component(data, ORDERING)["state"] == "operational"
    assert (data["status"], data["statusText"]) == ("degraded", "Some services are degraded")
    assert data["incidents"] == [
        {
            "component": "live_updates",
            "componentName": "Live order updates",
            "state": "degraded",
            "since": (NOW - timedelta(minutes=20)).isoformat(),
            "title": "Live order updates: degraded",
            "summary": "Some venues may see live order updates arrive late.",
        }
    ]


def test_an_incident_its_cause_holds_back_does_not_keep_the_page_in_outage(
    rules: None, client: Client, clock: Any
) -> None:
    # Redis was down until a minute ago; the error rate it shaped fires after it is back,
    # held back (not announced) while the outage is still in that rule's 5-minute window.
    incident("Redis unreachable", NOW - timedelta(minutes=3), NOW - timedelta(minutes=1))
    incident("High error rate", NOW - timedelta(seconds=40), None)
    data = snapshot(client)
    assert component(data, LIVE)["state"] == "operational"
    assert data["incidents"] == []
    cache.clear()
    clock.shift(5 * 60)  # the outage has left the window: the error rate is its own news now
    data = snapshot(client)
    assert component(data, LIVE)["state"] == "outage"
    assert [i["component"] for i in data["incidents"]] == ["live_updates"]


def test_what_an_operator_writes_replaces_the_plain_sentence(rules: None, client: Client) -> None:
    incident(
        "API server down",
        NOW - timedelta(minutes=5),
        None,
        public_title="Orders cannot be placed",
        public_summary="We are restoring the ordering service; orders already placed are safe.",
    )
    (entry,) = snapshot(client)["incidents"]
    assert entry["title"] == "Orders cannot be placed"
    assert entry["summary"].startswith("We are restoring the ordering service")
    assert entry["state"] == "outage"
    assert "Orders cannot be placed" in client.get("/status/").content.decode()


def test_a_failed_health_check_turns_its_component_to_outage() -> None:
    checks = [
        CheckResult("database", Status.HEALTHY, True, 1.0),
        CheckResult("channel_layer", Status.UNHEALTHY, True, 1.0, reason=EXCEPTION),
        CheckResult("slack", Status.DEGRADED, False, 1.0, reason="#kitchen-alerts for 90s"),
    ]
    data = page.build_without_database(NOW, checks)
    states = {c["id"]: c["state"] for c in data["components"]}
    assert states == {
        "ordering": "operational",
        "live_updates": "outage",
        "notifications": "degraded",
    }
    assert data["status"] == "outage"
    assert data["historyAvailable"] is False
    assert EXCEPTION not in json.dumps(data)
    assert "kitchen" not in json.dumps(data)


def test_a_component_in_a_maintenance_window_shows_maintenance(rules: None, client: Client) -> None:
    MaintenanceWindow.objects.create(
        title="Database upgrade",
        public_text="Ordering may pause for a minute.",
        components=[ORDERING],
        starts_at=NOW - timedelta(minutes=10),
        ends_at=NOW + timedelta(minutes=50),
    )
    MaintenanceWindow.objects.create(
        title="Slack app update",
        components=[NOTIFY],
        starts_at=NOW + timedelta(days=2),
        ends_at=NOW + timedelta(days=2, hours=1),
    )
    MaintenanceWindow.objects.create(
        title="Old work",
        components=[LIVE],
        starts_at=NOW - timedelta(days=3),
        ends_at=NOW - timedelta(days=2),
    )
    incident("HTTP errors critical", NOW - timedelta(minutes=5), None)  # during the work
    data = snapshot(client)
    states = {c["id"]: c["state"] for c in data["components"]}
    assert states == {
        "ordering": "maintenance",
        "live_updates": "operational",
        "notifications": "operational",
    }
    assert [(m["title"], m["inProgress"], m["components"]) for m in data["maintenance"]] == [
        ("Database upgrade", True, ["ordering"]),
        ("Slack app update", False, ["notifications"]),
    ]
    html = client.get("/status/").content.decode()
    assert "Database upgrade" in html
    assert "(in progress)" in html
    assert "Slack app update" in html
    assert "Old work" not in html


def test_a_maintenance_window_must_end_after_it_starts_and_name_a_component(
    rules: None, client: Client
) -> None:
    admin = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(admin)
    response = client.post(
        "/admin/monitoring/maintenancewindow/add/",
        {
            "title": "Backwards",
            "starts_at_0": "2026-03-11",
            "starts_at_1": "10:00:00",
            "ends_at_0": "2026-03-11",
            "ends_at_1": "09:00:00",
            "public_text": "",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["ends_at"] == ["The end must be after the start."]
    assert "components" in errors
    assert not MaintenanceWindow.objects.exists()
    response = client.post(
        "/admin/monitoring/maintenancewindow/add/",
        {
            "title": "Forwards",
            "components": ["ordering", "live_updates"],
            "starts_at_0": "2026-03-11",
            "starts_at_1": "09:00:00",
            "ends_at_0": "2026-03-11",
            "ends_at_1": "10:00:00",
            "public_text": "",
        },
    )
    assert response.status_code == 302
    assert MaintenanceWindow.objects.get().components == ["ordering", "live_updates"]


# --- nothing internal --------------------------------------------------------------------


def test_nothing_internal_appears_on_the_page_in_the_json_or_the_badge(
    rules: None, client: Client
) -> None:
    rule = AlertRule.objects.get(name="Database connection lost")
    rule.name = "Zeta-7 primary pg failover rule"
    rule.save()
    Worker.objects.create(
        name=f"web:{HOSTNAME}:4711", hostname=HOSTNAME, pid=4711, started_at=NOW, last_seen_at=NOW
    )
    incident(
        "Zeta-7 primary pg failover rule",
        NOW - timedelta(minutes=30),
        None,
        title=f"{EXCEPTION} on {HOSTNAME}",
        scope="42",
        postmortem=f"Venue Blue Lagoon Bistro lost orders; metric http.error_rate on {HOSTNAME}",
    )
    incident("WebSocket latency", NOW - timedelta(hours=30), NOW - timedelta(hours=29), scope="42")
    rollup.roll_up()
    answers = [
        client.get(url).content.decode()
        for url in ("/status/", "/status.json", "/status/badge.svg", "/status/ordering/badge.svg")
    ]
    assert "Some guests may not be able to place orders." in answers[0]
    for text in answers:
        for secret in (
            HOSTNAME,
            "10.0.3.5",
            "OperationalError",
            "Zeta-7",
            "failover",
            "Blue Lagoon",
            "http.error_rate",
            "ws.latency",
            "Database connection lost",
            "WebSocket latency",
            "9.25",
        ):
            assert secret not in text


# --- the answers' shapes -----------------------------------------------------------------


def keys(typed: Any) -> set[str]:
    return set(get_type_hints(typed))


def test_the_json_has_the_documented_shape_and_short_public_caching(
    rules: None, client: Client
) -> None:
    incident("Slack delivery failing", NOW - timedelta(minutes=3), None)
    MaintenanceWindow.objects.create(
        title="Upgrade",
        components=[LIVE],
        starts_at=NOW + timedelta(hours=1),
        ends_at=NOW + timedelta(hours=2),
    )
    response = client.get("/status.json")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "public, max-age=30"
    assert response["Access-Control-Allow-Origin"] == "*"
    data = response.json()
    assert set(data) == keys(StatusJSON)
    assert [c["id"] for c in data["components"]] == ["ordering", "live_updates", "notifications"]
    for entry in data["components"]:
        assert set(entry) == keys(ComponentJSON)
        assert entry["state"] in {"operational", "degraded", "outage", "maintenance"}
        assert len(entry["days"]) == 90
        assert all(set(day) == keys(DayJSON) for day in entry["days"])
    assert [set(i) for i in data["incidents"]] == [keys(IncidentJSON)]
    assert [set(m) for m in data["maintenance"]] == [keys(MaintenanceJSON)]
    assert client.head("/status.json").status_code == 200
    assert client.post("/status.json").status_code == 405


def test_the_answer_is_reused_for_the_cache_time(rules: None, client: Client, clock: Any) -> None:
    assert snapshot(client)["status"] == "operational"
    incident("API server down", NOW, None)
    assert snapshot(client)["status"] == "operational"  # the cached snapshot
    clock.shift(31)
    assert snapshot(client)["status"] == "outage"


def test_the_badge_says_the_state_in_words(rules: None, client: Client) -> None:
    response = client.get("/status/badge.svg")
    assert response["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=30"
    svg = response.content.decode()
    assert svg.startswith("<svg ")
    assert ">operational</text>" in svg
    assert 'aria-label="status: operational"' in svg
    incident("Redis unreachable", NOW - timedelta(minutes=1), None)
    cache.clear()
    svg = client.get("/status/live_updates/badge.svg").content.decode()
    assert "<title>live order updates: outage</title>" in svg
    assert ">outage</text>" in client.get("/status/badge.svg").content.decode()
    assert client.get("/status/kitchen/badge.svg").status_code == 404


def test_the_page_is_public(rules: None, client: Client) -> None:
    response = client.get("/status/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "All systems operational" in html
    for name in ("Ordering", "Live order updates", "Notifications"):
        assert name in html
    assert html.count('class="bar ') == 3 * 90
    assert response["Cache-Control"] == "public, max-age=30"


# --- retention ----------------------------------------------------------------------------


def test_day_rows_and_ended_maintenance_go_after_the_history_retention(
    rules: None, settings: Any
) -> None:
    settings.STATUS_HISTORY_DAYS = 100
    for age in (99, 101):
        ComponentDay.objects.create(
            component=ORDERING, day=TODAY - timedelta(days=age), computed_at=NOW
        )
        MaintenanceWindow.objects.create(
            title=f"{age}",
            components=[ORDERING],
            starts_at=NOW - timedelta(days=age, hours=1),
            ends_at=NOW - timedelta(days=age),
        )
    deleted = prune(NOW)
    assert (deleted["component_days"], deleted["maintenance_windows"]) == (1, 1)
    assert list(ComponentDay.objects.values_list("day", flat=True)) == [TODAY - timedelta(days=99)]
    assert list(MaintenanceWindow.objects.values_list("title", flat=True)) == ["99"]
