"""The pictures operators look at: the rule preview's replayed week and the metric around an
incident. Each chart is read back from the page as the browser gets it (its json_script)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client

from monitoring.alerting.engine import acknowledge, resolve_by_hand, run_cycle
from monitoring.alerting.preview import preview
from monitoring.models import AlertRule, Incident, IncidentEventKind, WebSocketSample, Worker

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
STEP = 60  # ALERT_EVALUATION_SECONDS

RULE_FORM = {
    "name": "Spike",
    "description": "",
    "enabled": "on",
    "severity": "warning",
    "runbook_url": "",
    "metric": "ws.new_connections_per_minute",
    "comparison": "gte",
    "threshold": "50",
    "window_seconds": "60",
    "pending_seconds": "0",
    "clear_seconds": "120",
    "repeat_interval_seconds": "0",
    "escalation_delay_seconds": "0",
    "flap_threshold": "4",
    "settle_seconds": "600",
    "group_by": "",
}


@pytest.fixture
def web() -> Worker:
    return Worker.objects.create(
        name="web-1", hostname="h", pid=1, started_at=NOW - timedelta(days=8), last_seen_at=NOW
    )


def spike(at: datetime, connections: int, worker: Worker) -> None:
    WebSocketSample.objects.create(
        worker=worker, recorded_at=at, interval_seconds=10, connections=connections
    )


def make_rule() -> AlertRule:
    rule = AlertRule.objects.create(
        **{k: v for k, v in RULE_FORM.items() if k not in ("enabled", "metric")},
        metric=RULE_FORM["metric"],
    )
    rule.refresh_from_db()
    return rule


def chart_on(page: str, script_id: str) -> dict[str, Any]:
    found = re.search(rf'<script id="{script_id}" type="application/json">(.*?)</script>', page)
    assert found, f"no {script_id} on the page"
    chart: dict[str, Any] = json.loads(found.group(1))
    return chart


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def test_the_preview_chart_draws_the_replay_that_fills_its_table(
    admin_client: Client, web: Worker
) -> None:
    for minute in range(3):  # three minutes over the threshold, three days ago
        spike(NOW - timedelta(days=3, minutes=minute), 80, web)
    spike(NOW - timedelta(days=1), 70, web)  # one more, yesterday
    spike(NOW - timedelta(days=2), 20, web)  # under the threshold: a bump, no incident
    rule = make_rule()
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(
            f"/admin/monitoring/alertrule/{rule.pk}/change/preview/", RULE_FORM
        )
        replay = preview(rule)
    page = response.content.decode()
    chart = chart_on(page, "preview-chart-data")
    assert '<td id="preview-incidents">2</td>' in page  # the table is still there
    # The line is the replay's evaluations, one for one: a week at the engine's step.
    assert chart["times"] == [epoch(moment) for moment, _ in replay.series]
    assert len(chart["times"]) == 7 * 86400 // STEP == replay.points
    (line,) = chart["series"]
    assert line["values"] == [value for _, value in replay.series]
    assert sum(v is not None for v in line["values"]) == replay.points_with_data
    assert max(v for v in line["values"] if v is not None) == 80.0
    assert 20.0 in line["values"]
    # The incidents of the table, shaded, with the table's peaks.
    assert [(s["start"], s["end"]) for s in chart["spans"]] == [
        (epoch(i.opened_at), epoch(i.resolved_at) if i.resolved_at else None)
        for i in replay.incidents
    ]
    assert chart["spans"][0]["start"] == epoch(NOW - timedelta(days=3, minutes=2))
    assert [s["label"] for s in chart["spans"]] == [
        "would have opened, peak 80 per minute",
        "would have opened, peak 70 per minute",
    ]
    peaks = re.findall(r'<td class="preview-peak">([^<]*)</td>', page)
    assert peaks == ["80 per minute", "70 per minute"]
    assert [(t["kind"], t["value"]) for t in chart["thresholds"]] == [
        ("fire", 50.0),
        ("clear", 50.0),
    ]
    assert chart["thresholds"][0]["label"] == "fires ≥ 50 per minute"
    assert chart["thresholds"][1]["label"] == "clears < 50 per minute for 2 minutes"
    assert chart["unit"] == "/min"


def test_the_preview_chart_follows_the_rule_as_edited(admin_client: Client, web: Worker) -> None:
    spike(NOW - timedelta(days=3), 80, web)
    spike(NOW - timedelta(days=1), 70, web)
    rule = make_rule()
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(
            f"/admin/monitoring/alertrule/{rule.pk}/change/preview/",
            {**RULE_FORM, "threshold": "75"},
        )
    chart = chart_on(response.content.decode(), "preview-chart-data")
    assert [t["value"] for t in chart["thresholds"]] == [75.0, 75.0]
    assert [s["start"] for s in chart["spans"]] == [epoch(NOW - timedelta(days=3))]


def test_a_preview_of_a_live_check_has_no_chart(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/monitoring/alertrule/add/preview/",
        {**RULE_FORM, "metric": "dependency.database_down", "threshold": "1"},
    )
    page = response.content.decode()
    assert "no stored history" in page
    assert "preview-chart-data" not in page


def cycle_at(at: datetime, web: Worker) -> Incident:
    """The cycle at `at`, and the incident it opened for "Spike" (the shipped rules may
    open their own)."""
    Worker.objects.filter(pk=web.pk).update(last_seen_at=at)
    with time_machine.travel(at, tick=False):
        (incident,) = [i for i in run_cycle(at).opened if i.rule.name == "Spike"]
    return incident


def test_the_incident_chart_spans_an_hour_before_it_opened_to_its_resolution(
    admin_client: Client, admin_user: Any, web: Worker
) -> None:
    make_rule()
    opened_at = NOW - timedelta(hours=5)
    for minute in range(4):
        spike(opened_at + timedelta(minutes=minute), 90, web)
    spike(opened_at - timedelta(minutes=30), 30, web)  # under the threshold, before it
    incident = cycle_at(opened_at, web)
    acknowledge(incident, admin_user, now=opened_at + timedelta(minutes=2))
    resolved_at = opened_at + timedelta(minutes=20)
    assert resolve_by_hand(incident, admin_user, now=resolved_at)
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(f"/admin/monitoring/incident/{incident.pk}/change/")
    chart = chart_on(page.content.decode(), "incident-chart-data")
    # One evaluation per step in (opened - 1 h, resolved]: not up to now, five hours later.
    assert chart["times"][0] == epoch(opened_at - timedelta(hours=1)) + STEP
    assert chart["times"][-1] == epoch(resolved_at)
    assert len(chart["times"]) == 80
    values = dict(zip(chart["times"], chart["series"][0]["values"], strict=True))
    assert values[epoch(opened_at)] == 90.0
    assert values[epoch(opened_at - timedelta(minutes=30))] == 30.0
    assert values[epoch(opened_at + timedelta(minutes=10))] is None  # no samples then
    assert chart["spans"] == [
        {"start": epoch(opened_at), "end": epoch(resolved_at), "label": "incident"}
    ]
    assert chart["thresholds"][0]["value"] == 50.0
    # The timeline's rows, as marks at their times.
    marks = {(m["label"], m["at"]) for m in chart["marks"]}
    assert ("Opened", epoch(opened_at)) in marks
    assert ("Acknowledged", epoch(opened_at + timedelta(minutes=2))) in marks
    assert ("Resolved", epoch(resolved_at)) in marks
    assert len(chart["marks"]) == incident.events.count()


def test_an_open_incident_is_drawn_up_to_now(admin_client: Client, web: Worker) -> None:
    make_rule()
    opened_at = NOW - timedelta(minutes=30)
    spike(opened_at, 90, web)
    incident = cycle_at(opened_at, web)
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(f"/admin/monitoring/incident/{incident.pk}/change/")
    chart = chart_on(page.content.decode(), "incident-chart-data")
    assert chart["times"][0] == epoch(opened_at - timedelta(hours=1)) + STEP
    assert chart["times"][-1] == epoch(NOW)
    assert chart["spans"] == [{"start": epoch(opened_at), "end": None, "label": "incident"}]
    assert incident.events.filter(kind=IncidentEventKind.OPENED).exists()
    assert chart["marks"][0]["label"] == "Opened"
