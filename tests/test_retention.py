"""Retention: each append-only table is pruned in bounded batches, and the floor holds.

What must survive any age: an undelivered notification, what an open incident refers to
(its messages, its timeline, a resolved incident sharing its group post), a message that a
kept reply threads under or a kept edit rewrites.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings as django_settings
from django.db.models import QuerySet
from django.utils import timezone

import inkwave.retention
from inkwave import retention
from inkwave.celery import app as celery_app
from monitoring import pruning
from monitoring import retention as monitoring_retention
from monitoring.alerting.engine import run_cycle
from monitoring.models import (
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    WebSocketSample,
    Worker,
)
from notifications import retention as notifications_retention
from notifications.defaults import create_default_routes
from notifications.models import (
    DeliveryAttempt,
    Destination,
    Notification,
    NotificationStatus,
    RateLimitSlot,
    ReportRun,
    Route,
)
from orders import retention as orders_retention
from orders.models import OrderEvent, OrderEventKind, Venue, VenueActivity

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)
LATER = START + timedelta(days=100)  # past every default retention
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def destination(db: Any) -> Destination:
    return Destination.objects.create(name="retention-test", slack_channel_id="C0RETAIN")


def note(
    destination: Destination,
    status: str = NotificationStatus.SENT,
    *,
    at: datetime = START,
    **fields: Any,
) -> Notification:
    row = Notification.objects.create(
        kind="test", destination=destination, text="x", status=status, **fields
    )
    Notification.objects.filter(pk=row.pk).update(created_at=at)
    return row


def attempt(row: Notification, at: datetime = START) -> DeliveryAttempt:
    return DeliveryAttempt.objects.create(
        notification=row, number=row.delivery_attempts.count() + 1, started_at=at
    )


def remaining(rows: QuerySet[Any]) -> set[int]:
    return set(rows.values_list("pk", flat=True))


# --- notifications ------------------------------------------------------------------------


def test_old_final_notifications_go_and_undelivered_or_recent_ones_stay(
    destination: Destination,
) -> None:
    gone = [note(destination, status) for status in ("sent", "failed", "skipped")]
    kept = [
        note(destination, "pending"),
        note(destination, "sending"),
        note(destination, "sent", at=LATER - timedelta(days=29)),
    ]
    attempt(gone[0])
    attempt(kept[1])
    assert notifications_retention.prune_notifications(LATER, dry_run=True) == 3
    assert remaining(Notification.objects.all()) == {r.pk for r in gone + kept}

    assert notifications_retention.prune_notifications(LATER) == 3
    assert remaining(Notification.objects.all()) == {r.pk for r in kept}
    # A deleted message's attempts go with it; an undelivered one's stay.
    assert list(DeliveryAttempt.objects.values_list("notification", flat=True)) == [kept[1].pk]


def test_the_retention_setting_decides_what_is_old(destination: Destination, settings: Any) -> None:
    row = note(destination, at=LATER - timedelta(days=10))
    settings.NOTIFICATION_RETENTION_DAYS = 11
    assert notifications_retention.prune_notifications(LATER) == 0
    settings.NOTIFICATION_RETENTION_DAYS = 9
    assert notifications_retention.prune_notifications(LATER) == 1
    assert not Notification.objects.filter(pk=row.pk).exists()


def test_a_thread_parent_or_update_target_of_a_kept_row_is_kept(destination: Destination) -> None:
    parent = note(destination)
    note(destination, at=LATER, thread_parent=parent)  # a recent reply in its thread
    edited = note(destination)
    note(destination, "pending", update_target=edited)  # an edit still to be sent
    # Two levels: an old reply stays because a recent edit rewrites it, so its parent too.
    root = note(destination)
    reply = note(destination, thread_parent=root)
    note(destination, at=LATER, update_target=reply)
    # Old, and everything that refers to it is old too: the whole thread goes.
    lone_root = note(destination)
    lone_reply = note(destination, thread_parent=lone_root)

    assert notifications_retention.prune_notifications(LATER) == 2
    kept = remaining(Notification.objects.all())
    assert {parent.pk, edited.pk, root.pk, reply.pk} <= kept
    assert not kept & {lone_root.pk, lone_reply.pk}


def test_threads_are_decided_across_batches(
    destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inkwave.retention, "BATCH_SIZE", 2)
    # Parent and replies land in different batches (newest first: replies, then parents).
    kept_parent = note(destination)
    gone_parent = note(destination)
    gone_replies = [note(destination, thread_parent=gone_parent) for _ in range(3)]
    note(destination, at=LATER, thread_parent=kept_parent)
    filler = [note(destination) for _ in range(3)]

    assert notifications_retention.prune_notifications(LATER, dry_run=True) == 7
    assert notifications_retention.prune_notifications(LATER) == 7
    kept = remaining(Notification.objects.all())
    assert kept_parent.pk in kept
    assert not kept & {gone_parent.pk, *(r.pk for r in gone_replies), *(f.pk for f in filler)}


def test_a_run_deletes_at_most_its_batches_and_the_next_run_goes_on(
    destination: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inkwave.retention, "BATCH_SIZE", 3)
    for _ in range(8):
        note(destination)
    assert notifications_retention.prune_notifications(LATER, max_batches=2) == 6
    assert Notification.objects.count() == 2
    assert notifications_retention.prune_notifications(LATER, max_batches=2) == 2
    assert Notification.objects.count() == 0


def test_a_row_that_changes_between_its_read_and_its_delete_stays(
    destination: Destination,
) -> None:
    requeued, parent = note(destination), note(destination)
    calls: list[list[int]] = []

    def meanwhile(ids: list[int], gone: set[int]) -> list[int]:
        """The first call stands for the read: what others do after it, the delete must see."""
        calls.append(ids)
        if len(calls) == 1:
            Notification.objects.filter(pk=requeued.pk).update(status="pending")
            note(destination, "pending", at=LATER, thread_parent=parent)
            return ids
        return notifications_retention.unreferenced(ids, gone)

    eligible = notifications_retention.eligible_notifications(LATER)
    assert retention.delete_in_batches(eligible, select=meanwhile) == 0
    assert remaining(Notification.objects.filter(pk__in=[requeued.pk, parent.pk])) == {
        requeued.pk,
        parent.pk,
    }
    assert calls == [[requeued.pk, parent.pk], [parent.pk]]


def test_delivery_attempts_age_out_unless_their_message_is_undelivered(
    destination: Destination, settings: Any
) -> None:
    settings.NOTIFICATION_RETENTION_DAYS = 365
    sent, pending = note(destination), note(destination, "pending")
    old_sent, old_pending = attempt(sent), attempt(pending)
    recent = attempt(sent, at=LATER - timedelta(days=1))
    assert notifications_retention.prune_delivery_attempts(LATER) == 1
    assert remaining(DeliveryAttempt.objects.all()) == {old_pending.pk, recent.pk}
    assert not DeliveryAttempt.objects.filter(pk=old_sent.pk).exists()
    assert Notification.objects.count() == 2


def test_report_claims_and_idle_rate_limit_slots_are_pruned(db: Any) -> None:
    old, recent = ReportRun.objects.create(key="daily:1:old"), ReportRun.objects.create(key="new")
    ReportRun.objects.filter(pk=old.pk).update(created_at=START)
    ReportRun.objects.filter(pk=recent.pk).update(created_at=LATER - timedelta(days=1))
    RateLimitSlot.objects.create(key="channel:OLD", next_free_at=LATER - timedelta(days=2))
    RateLimitSlot.objects.create(key="channel:NOW", next_free_at=LATER - timedelta(seconds=1))

    assert notifications_retention.prune_report_runs(LATER) == 1
    assert list(ReportRun.objects.values_list("key", flat=True)) == ["new"]
    assert notifications_retention.prune_rate_limit_slots(LATER) == 1
    assert list(RateLimitSlot.objects.values_list("key", flat=True)) == ["channel:NOW"]


# --- incidents ------------------------------------------------------------------------------


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def spike_rule(name: str) -> AlertRule:
    return AlertRule.objects.create(
        name=name,
        metric="ws.new_connections_per_minute",
        comparison="gte",
        threshold=50,
        window_seconds=60,
        pending_seconds=0,
        clear_seconds=0,
        repeat_interval_seconds=0,
        escalation_delay_seconds=0,
    )


def spike(connections: int) -> None:
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name="web-1",
        defaults={"last_seen_at": now},
        create_defaults={"hostname": "h", "pid": 1, "started_at": now, "last_seen_at": now},
    )
    WebSocketSample.objects.create(
        worker=worker, recorded_at=now, interval_seconds=10, connections=connections
    )


def prune_all(now: datetime) -> None:
    monitoring_retention.prune(now)
    notifications_retention.prune(now)


def test_an_open_incident_keeps_its_timeline_and_messages_a_resolved_one_goes(
    clock: Any, settings: Any
) -> None:
    create_default_routes(Destination, Route)
    AlertRule.objects.update(enabled=False)
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    spike_rule("Resolved spike")
    spike(75)
    run_cycle()
    Notification.objects.update(status="sent", slack_ts="1.1")
    clock.shift(61)
    run_cycle()  # resolved: a reply in its thread and an edit of its message
    resolved = Incident.objects.get()
    assert resolved.status == IncidentStatus.RESOLVED
    resolved_messages = remaining(Notification.objects.all())
    assert len(resolved_messages) == 3

    clock.shift(3600)
    spike_rule("Open spike")
    AlertRule.objects.filter(name="Resolved spike").update(enabled=False)
    spike(75)
    run_cycle()
    Notification.objects.update(status="sent", slack_ts="1.2")
    opened = Incident.objects.get(status=IncidentStatus.FIRING)
    assert opened.notification_id is not None
    open_events = remaining(opened.events.all())
    open_messages = remaining(Notification.objects.all()) - resolved_messages

    clock.move_to(LATER)
    prune_all(timezone.now())
    assert remaining(Incident.objects.all()) == {opened.pk}
    assert remaining(IncidentEvent.objects.all()) == open_events
    assert remaining(Notification.objects.all()) == open_messages


def incident(rule: AlertRule, status: str = IncidentStatus.RESOLVED, **fields: Any) -> Incident:
    return Incident.objects.create(
        rule=rule,
        scope=fields.pop("scope", ""),
        title=rule.name,
        severity="warning",
        status=status,
        opened_at=START,
        last_seen_at=START,
        resolved_at=START if status == IncidentStatus.RESOLVED else None,
        first_value=1,
        peak_value=1,
        last_value=1,
        **fields,
    )


def test_a_resolved_member_of_an_open_group_is_kept_with_the_groups_post(
    destination: Destination,
) -> None:
    rule = spike_rule("Grouped")
    post = note(destination)
    member = incident(rule, scope="1")
    still_firing = incident(rule, IncidentStatus.FIRING, scope="2")
    for each in (member, still_firing):
        IncidentEvent.objects.create(
            incident=each, at=START, kind=IncidentEventKind.NOTIFIED, notification=post
        )
    lone = incident(rule, scope="3")
    IncidentEvent.objects.create(incident=lone, at=START, kind=IncidentEventKind.OPENED)

    prune_all(LATER)
    assert remaining(Incident.objects.all()) == {member.pk, still_firing.pk}
    assert IncidentEvent.objects.filter(incident=member).exists()
    assert Notification.objects.filter(pk=post.pk).exists()


def test_messages_of_open_incidents_and_unsettled_flapping_runs_are_kept(
    destination: Destination,
) -> None:
    rule = spike_rule("Pinned")
    announcement, notice, resolved_message = note(destination), note(destination), note(destination)
    # Announced before timelines linked their messages: only Incident.notification says so.
    incident(rule, IncidentStatus.FIRING, scope="1", notification=announcement)
    flapping = incident(rule, scope="2", flapping=True)
    IncidentEvent.objects.create(
        incident=flapping, at=START, kind=IncidentEventKind.FLAPPING, notification=notice
    )
    incident(rule, scope="3", notification=resolved_message)

    assert notifications_retention.prune_notifications(LATER) == 1
    assert remaining(Notification.objects.all()) == {announcement.pk, notice.pk}


def test_a_postmortem_or_an_unsettled_flapping_run_keeps_its_incident(db: Any) -> None:
    rule = spike_rule("Kept")
    written = incident(rule, scope="1", postmortem="The cache fell over.")
    flapping = incident(rule, scope="2", flapping=True)
    old = incident(rule, scope="3")
    recent = incident(rule, scope="4")
    Incident.objects.filter(pk=recent.pk).update(resolved_at=LATER - timedelta(days=89))
    for each in (written, flapping, old, recent):
        IncidentEvent.objects.create(incident=each, at=START, kind=IncidentEventKind.OPENED)

    assert monitoring_retention.prune_incidents(LATER, dry_run=True) == 1
    # The incident waits for its timeline: its events go first, then (next) the incident.
    assert monitoring_retention.prune_incidents(LATER) == 0
    assert monitoring_retention.prune_incident_events(LATER) == 1
    assert monitoring_retention.prune_incidents(LATER) == 1
    assert remaining(Incident.objects.all()) == {written.pk, flapping.pk, recent.pk}
    assert IncidentEvent.objects.count() == 3


# --- order events and samples ----------------------------------------------------------------


def test_order_events_are_pruned_in_batches_of_a_thousand(db: Any) -> None:
    OrderEvent.objects.bulk_create(OrderEvent(kind=OrderEventKind.PLACED) for _ in range(2500))
    OrderEvent.objects.update(created_at=START)
    fresh = OrderEvent.objects.create(kind=OrderEventKind.PLACED)
    # Two batches of 1,000 this run; the rest next run.
    assert orders_retention.prune_order_events(LATER, max_batches=2) == 2000
    assert OrderEvent.objects.count() == 501
    assert orders_retention.prune(LATER) == {"order_events": 500, "venue_activity": 0}
    assert remaining(OrderEvent.objects.all()) == {fresh.pk}


def test_venue_activity_goes_after_its_retention_and_the_baseline_weeks_stay(
    venue: Venue,
) -> None:
    cutoff = LATER - timedelta(days=70)
    for starts_at in (cutoff - timedelta(minutes=15), cutoff):
        VenueActivity.objects.create(venue=venue, starts_at=starts_at, week_slot=0, open=True)
    assert orders_retention.prune_venue_activity(LATER) == 1
    assert list(VenueActivity.objects.values_list("starts_at", flat=True)) == [cutoff]


def test_samples_are_pruned_in_batches_and_their_workers_after_them(db: Any) -> None:
    old = START - timedelta(days=30)
    worker = Worker.objects.create(
        name="gone", hostname="h", pid=1, started_at=old, last_seen_at=old
    )
    WebSocketSample.objects.bulk_create(
        WebSocketSample(worker=worker, recorded_at=old, interval_seconds=10) for _ in range(1500)
    )
    assert pruning.prune_samples(START, max_batches=1) == 1000
    assert Worker.objects.filter(pk=worker.pk).exists()  # 500 samples left: not cascaded
    assert pruning.prune_samples(START) == 500
    assert not Worker.objects.filter(pk=worker.pk).exists()


# --- wiring -----------------------------------------------------------------------------------


def test_every_append_only_table_has_a_registered_prune_and_a_setting() -> None:
    prunes = {prune.label: prune for prune in retention.registered()}
    assert set(prunes) == {
        "monitoring.VenueScreenSample",
        "monitoring.WebSocketSample",
        "monitoring.RequestSample",
        "monitoring.SlowQuery",
        "monitoring.SlowRequest",
        "monitoring.IncidentEvent",
        "monitoring.Incident",
        "monitoring.ComponentDay",
        "monitoring.MaintenanceWindow",
        "monitoring.TrendRollup",
        "notifications.Notification",
        "notifications.DeliveryAttempt",
        "notifications.ReportRun",
        "notifications.RateLimitSlot",
        "orders.OrderEvent",
        "orders.VenueActivity",
    }
    for prune in prunes.values():
        if prune.label != "notifications.RateLimitSlot":  # not history: idle slots go
            assert isinstance(getattr(django_settings, prune.setting), int)
    # An incident's timeline is pruned before the incident (which waits for it).
    labels = list(prunes)
    assert labels.index("monitoring.IncidentEvent") < labels.index("monitoring.Incident")
    # Screen counts before the samples, whose prune deletes a worker once nothing is left.
    assert labels.index("monitoring.VenueScreenSample") < labels.index("monitoring.WebSocketSample")


def test_beat_runs_every_prune_task() -> None:
    celery_app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    for task in (
        "monitoring.prune_samples",
        "monitoring.prune_incidents",
        "notifications.prune",
        "orders.prune",
    ):
        assert task in scheduled
        assert task in celery_app.tasks


def test_prune_dry_run_works_on_the_embedded_sqlite_defaults(tmp_path: Path) -> None:
    """Nothing configured: the settings import, migrate, and the command prints each table."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL"}
    }
    env.update(INKWAVE_VAR_DIR=str(tmp_path), LOG_LEVEL="warning")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "-v0")
    manage(
        "shell",
        "-v0",
        "-c",
        "from orders.models import OrderEvent\n"
        "OrderEvent.objects.create(kind='order.placed')\n"
        "OrderEvent.objects.update(created_at='2020-01-01T00:00:00Z')\n"
        "OrderEvent.objects.create(kind='order.placed')",
    )
    lines = manage("prune", "--dry-run").splitlines()
    assert "orders.OrderEvent: would delete 1 of 2 rows (ORDER_EVENT_RETENTION_DAYS=90 days)" in (
        lines
    )
    assert len(lines) == len(retention.registered())
    assert "orders.OrderEvent: deleted 1 of 2 rows" in manage("prune")
