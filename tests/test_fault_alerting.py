"""Alerting through a database outage: what fires, and how one outage is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from monitoring.alerting import direct
from monitoring.alerting.defaults import create_default_rules
from monitoring.alerting.engine import run_cycle
from monitoring.models import AlertRule, Incident, IncidentStatus, Worker, WorkerRole
from notifications.defaults import create_default_routes
from notifications.models import Destination, Route

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
    create_default_rules(AlertRule)
    AlertRule.objects.exclude(name="Process stopped reporting").update(enabled=False)
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
