"""Alerting through a database outage: what fires, and how one outage is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from monitoring.alerting import direct, recovery
from monitoring.alerting.defaults import install_defaults
from monitoring.alerting.engine import run_cycle
from monitoring.models import AlertRule, Incident, IncidentStatus, Worker, WorkerRole
from notifications.defaults import create_default_routes
from notifications.models import Destination, Notification, Route

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)
PROCESSES = [
    ("web-1", WorkerRole.WEB),
    ("web-2", WorkerRole.WEB),
    ("celery-1", WorkerRole.CELERY),
    ("beat-1", WorkerRole.BEAT),
]


@pytest.fixture(autouse=True)
def setup(db: Any, settings: Any, tmp_path: Path) -> None:
    create_default_routes(Destination, Route)
    install_defaults()
    AlertRule.objects.exclude(name="Process stopped reporting").update(enabled=False)
    # Its minute's wait for a replacement is tested in test_alerting; here, the outage's effect.
    AlertRule.objects.filter(name="Process stopped reporting").update(pending_seconds=0)
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    settings.METRICS_FLUSH_SECONDS = 10
    settings.WORKER_LIVENESS_SECONDS = 30
    settings.VAR_DIR = tmp_path  # this host's spool; Slack is not configured


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def report(name: str, role: str = WorkerRole.WEB) -> None:
    now = timezone.now()
    Worker.objects.update_or_create(
        name=name,
        defaults={"last_seen_at": now},
        create_defaults={
            "role": role,
            "hostname": name,
            "pid": 1,
            "started_at": now - timedelta(hours=1),
            "last_seen_at": now,
        },
    )


def missing_incidents() -> list[Incident]:
    return list(Incident.objects.filter(rule__name="Process stopped reporting"))


def test_processes_silent_through_a_database_outage_are_not_reported_missing(clock: Any) -> None:
    for name, role in PROCESSES:
        report(name, role)
    clock.shift(5)  # the database stops answering; this host's next flush notices
    direct.DirectAlerter().alert("database", "OperationalError: connection refused")
    clock.shift(36)  # 41 s of silence: past the liveness, all of it with the database down
    run_cycle()  # the first cycle once it answers again records the outage first
    assert Incident.objects.filter(rule__metric="dependency.database_down").count() == 1
    assert missing_incidents() == []

    clock.shift(9)  # three processes report at their next flush; web-2 died meanwhile
    for name, role in PROCESSES:
        if name != "web-2":
            report(name, role)
    clock.shift(10)
    run_cycle()  # web-2 has been silent only 19 s with the database up
    assert missing_incidents() == []

    clock.shift(15)
    run_cycle()
    (incident,) = missing_incidents()
    assert (incident.status, incident.last_value) == (IncidentStatus.FIRING, 1)


def test_a_process_dead_before_the_outage_is_still_missing(clock: Any) -> None:
    report("web-1")
    clock.shift(55)
    report("web-2")
    clock.shift(5)
    direct.DirectAlerter().alert("database", "OperationalError: connection refused")
    clock.shift(30)
    run_cycle()
    (incident,) = missing_incidents()
    assert incident.last_value == 1  # web-1, silent 50 s with the database up; not web-2


def spooled_on(host: str, pid: int, at: datetime) -> dict[str, Any]:
    """What one process's spool holds after its direct alert (Slack is not configured)."""
    entry = direct._send("database", "OperationalError: connection refused", at)
    return {**entry, "host": host, "pid": pid}


def test_one_outage_seen_by_four_processes_is_one_incident_with_one_recovery_reply(
    clock: Any,
) -> None:
    reports = [
        spooled_on(host, pid, START + timedelta(seconds=offset))
        for host, pid, offset in (("web-1", 11, 2), ("web-2", 22, 4), ("worker", 33, 7))
    ]
    clock.shift(31)  # the database answers: each process records its spool when it can
    first = recovery.record("database", [reports[0]], timezone.now())
    clock.shift(3)
    second = recovery.record("database", [reports[1]], timezone.now())
    clock.shift(5)
    third = recovery.record("database", [reports[2], spooled_on("beat", 44, START)], timezone.now())
    assert first is not None
    assert first == second == third
    incident = Incident.objects.get(rule__metric="dependency.database_down")
    assert incident.opened_at == START  # beat saw it first
    assert incident.resolved_at == START + timedelta(seconds=31)
    assert incident.occurrences == 4
    timeline = " | ".join(incident.events.values_list("message", flat=True))
    for process in ("web-1 (pid 11)", "web-2 (pid 22)", "worker (pid 33)", "beat (pid 44)"):
        assert process in timeline
    # Four direct messages are recorded (each host sent its own), and one recovery reply.
    assert Notification.objects.filter(context__direct=True).count() == 4
    (reply,) = Notification.objects.filter(context__recovery=incident.pk)
    assert reply.thread_parent == incident.notification
    assert reply.text.startswith("✅ Resolved: Database connection lost; down for about 31")
    assert "seen by 4 processes" in reply.text
    assert "beat (pid 44)" in reply.text
    assert reply.next_attempt_at == START + timedelta(seconds=31 + 10)


def test_a_later_outage_is_an_incident_of_its_own(clock: Any) -> None:
    recovery.record("database", [spooled_on("web-1", 11, START)], START + timedelta(seconds=30))
    clock.shift(600)
    later = spooled_on("web-2", 22, timezone.now())
    recovery.record("database", [later], timezone.now() + timedelta(seconds=20))
    assert Incident.objects.filter(rule__metric="dependency.database_down").count() == 2
    assert Notification.objects.filter(context__has_key="recovery").count() == 2
