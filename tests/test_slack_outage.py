"""Faults in delivery itself: Slack failing for a while, and an outbox nobody drains.

Slack failing is recorded (an incident, /health degraded) and summarised in each channel
once its backlog is out; the backlog goes out as soon as Slack answers (the head row is the
probe). An outbox that is not drained fires its own rule, sent past the queue.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import close_old_connections
from django.test import Client
from django.utils import timezone

from monitoring.alerting.defaults import install_defaults
from monitoring.alerting.engine import run_cycle
from monitoring.alerting.metrics import OUTBOX_AGE, REGISTRY, SLACK_FAILING, Window
from monitoring.health import SlackDeliveryCheck, Status, run_checks
from monitoring.models import AlertRule, Incident, IncidentEventKind, IncidentStatus
from notifications.defaults import create_default_routes
from notifications.delivery import drain
from notifications.formatting import Composed
from notifications.local_slack import Reply, SlackServer
from notifications.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    Notification,
    NotificationKind,
    NotificationStatus,
    Route,
)
from notifications.outbox import enqueue

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)
OPS, ORDERS = "C0OPS", "C0ORDERS"
SUMMARY = re.compile(
    r"^✅ Delivery to #(\w+) failed for (\d+) seconds; (\d+) messages? delayed, all delivered"
)


@pytest.fixture
def destinations(db: Any, settings: Any) -> dict[str, Destination]:
    settings.ALERT_GROUP_WAIT_SECONDS = 0
    create_default_routes(Destination, Route)
    Destination.objects.filter(name="operations").update(slack_channel_id=OPS)
    Destination.objects.filter(name="orders").update(slack_channel_id=ORDERS)
    # Only the rules about delivery: the others would watch samples these tests do not write.
    install_defaults()
    AlertRule.objects.exclude(metric__in=[SLACK_FAILING, OUTBOX_AGE]).update(enabled=False)
    return {d.name: d for d in Destination.objects.all()}


class Workers:
    """Always-ready workers: a drain when a row arrives and at each wake-up it asks for,
    with simulated time moved from one to the next."""

    def __init__(self, traveller: Any) -> None:
        self.traveller = traveller
        self.wake: dict[int, datetime] = {}

    def enqueue(self, kind: str, text: str, destination: Destination) -> Notification:
        (row,) = enqueue(kind, Composed(text), destinations=[destination])
        self.wake[destination.pk] = timezone.now()
        return row

    def run_until(self, moment: datetime) -> None:
        assert moment >= timezone.now(), "simulated time only moves forward"
        while self.wake and min(self.wake.values()) <= moment:
            self.traveller.move_to(max(min(self.wake.values()), timezone.now()))
            now = timezone.now()
            for pk, at in sorted(self.wake.items()):
                if at > now:
                    continue
                wait = drain(pk).wait
                if wait is None:
                    del self.wake[pk]
                else:
                    self.wake[pk] = now + timedelta(seconds=max(wait, 0.001))
        self.traveller.move_to(moment)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def sent_at(channel: str) -> list[datetime]:
    return sorted(
        DeliveryAttempt.objects.filter(
            outcome=AttemptOutcome.SENT, notification__destination__slack_channel_id=channel
        ).values_list("started_at", flat=True)
    )


def incident(name: str) -> Incident | None:
    return Incident.objects.filter(rule__name=name).order_by("-pk").first()


def test_slack_failing_for_a_minute_is_recorded_then_summarised_once_the_backlog_is_out(
    slack: SlackServer, destinations: dict[str, Destination], settings: Any
) -> None:
    ops, orders = destinations["operations"], destinations["orders"]
    with time_machine.travel(START, tick=False) as traveller:
        workers = Workers(traveller)
        slack.go_down()
        for index in range(120):  # two orders a second for a minute
            workers.run_until(at(index * 0.5))
            workers.enqueue(NotificationKind.ORDER_PLACED, f"order {index}", orders)
            if index == 10:
                workers.enqueue(NotificationKind.SYSTEM_ALERT, "⚠️ an alert", ops)
        run_cycle()  # at 59.5 s
        opened = incident("Slack delivery failing")
        assert opened is not None
        assert opened.status == IncidentStatus.FIRING
        assert opened.last_value == pytest.approx(59.5)
        # Slack cannot carry it: recorded, not queued for a Slack that fails.
        assert opened.notification is None
        assert opened.events.filter(
            kind=IncidentEventKind.SUPPRESSED, message__contains="Slack is failing"
        ).exists()
        # Slack's fault, not the workers': the outbox rule stays quiet.
        assert incident("Notifications waiting") is None

        workers.run_until(at(61))
        slack.come_back()
        back = timezone.now()
        workers.run_until(at(400))
        run_cycle()

        # The head row is the probe: both channels answered within one probe interval...
        for channel in (OPS, ORDERS):
            assert sent_at(channel)[0] - back <= timedelta(
                seconds=settings.NOTIFICATION_PROBE_SECONDS
            )
        # ...and the backlog followed at once, one message per second per channel.
        order_times = sent_at(ORDERS)
        assert order_times[119] - order_times[0] <= timedelta(seconds=120)
        texts = [post.body["text"] for post in slack.posts if post.body["channel"] == ORDERS]
        assert texts[:120] == [f"order {index}" for index in range(120)]

        summaries = [
            (post.body["channel"], SUMMARY.match(post.body["text"]))
            for post in slack.posts
            if post.body["text"].startswith("✅ Delivery to")
        ]
        assert sorted(channel for channel, _ in summaries) == [OPS, ORDERS]
        by_channel = {channel: match for channel, match in summaries}
        orders_summary, ops_summary = by_channel[ORDERS], by_channel[OPS]
        assert orders_summary is not None
        assert ops_summary is not None
        assert orders_summary[1] == "orders"
        assert 61 <= int(orders_summary[2]) <= 61 + settings.NOTIFICATION_PROBE_SECONDS
        assert orders_summary[3] == "120"
        assert ops_summary.groups() == ("operations", ops_summary[2], "1")
        # The summary comes after the backlog it tells of.
        assert texts[120].startswith("✅ Delivery to #orders")

        # Later drains and evaluations send nothing more; the incident resolves unannounced.
        workers.enqueue(NotificationKind.ORDER_PLACED, "order after", orders)
        workers.run_until(at(600))
        run_cycle()
    assert incident("Slack delivery failing").status == IncidentStatus.RESOLVED  # type: ignore[union-attr]
    assert len([p for p in slack.posts if p.body["text"].startswith("✅ Delivery to")]) == 2
    assert not [p for p in slack.posts if "Slack delivery failing" in p.body["text"]]
    assert Destination.objects.filter(failing_since__isnull=False).count() == 0
    assert not Destination.objects.filter(outage_summary_due=True).exists()


def test_while_slack_fails_the_head_is_probed_at_least_every_probe_interval(
    slack: SlackServer, destinations: dict[str, Destination], settings: Any
) -> None:
    settings.NOTIFICATION_PROBE_SECONDS = 5
    ops = destinations["operations"]
    with time_machine.travel(START, tick=False) as traveller:
        workers = Workers(traveller)
        slack.go_down()
        workers.enqueue(NotificationKind.SYSTEM_ALERT, "⚠️ an alert", ops)
        workers.run_until(at(600))
        slack.come_back()
        workers.run_until(at(700))
    starts = list(
        DeliveryAttempt.objects.order_by("started_at").values_list("started_at", flat=True)
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= 5
    assert len(starts) > 100  # not backed off to NOTIFICATION_RETRY_MAX_SECONDS


def test_a_short_failure_is_retried_without_a_summary_or_an_incident(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    ops = destinations["operations"]
    slack.fail_next(Reply.status(503), Reply.rate_limited(retry_after=3))
    with time_machine.travel(START, tick=False) as traveller:
        workers = Workers(traveller)
        workers.enqueue(NotificationKind.SYSTEM_ALERT, "⚠️ an alert", ops)
        workers.run_until(at(60))
        run_cycle()
    assert [post.body["text"] for post in slack.posts] == ["⚠️ an alert"]
    ops.refresh_from_db()
    assert ops.failing_since is None
    assert ops.failed_from == at(0)
    assert ops.failed_until is not None
    assert ops.failed_until - ops.failed_from < timedelta(seconds=10)
    assert not ops.outage_summary_due
    assert incident("Slack delivery failing") is None


def test_a_failure_that_ended_between_two_evaluations_is_still_recorded(
    destinations: dict[str, Destination],
) -> None:
    Destination.objects.filter(name="orders").update(failed_from=at(0), failed_until=at(40))
    metric = REGISTRY[SLACK_FAILING]
    assert metric.compute(Window(at(90), 60)) == {"": 40.0}
    assert metric.compute(Window(at(101), 60)) == {"": 0.0}
    Destination.objects.filter(name="operations").update(failing_since=at(70))
    assert metric.compute(Window(at(101), 60)) == {"": 31.0}
    with time_machine.travel(at(90), tick=False):
        run_cycle()
    assert incident("Slack delivery failing") is not None


def test_when_only_one_channel_fails_the_incident_is_announced_in_the_others(
    destinations: dict[str, Destination],
) -> None:
    Destination.objects.filter(name="orders").update(failing_since=at(0))
    with time_machine.travel(at(45), tick=False):
        run_cycle()
    opened = incident("Slack delivery failing")
    assert opened is not None
    assert opened.notification is not None
    assert opened.notification.destination.name == "operations"
    assert "Slack delivery failing" in opened.notification.text


@pytest.mark.django_db(transaction=True)
def test_health_is_degraded_not_down_while_slack_fails_for_the_outage_threshold(
    settings: Any,
) -> None:
    settings.HEALTH_CACHE_SECONDS = 0
    create_default_routes(Destination, Route)
    orders = Destination.objects.get(name="orders")

    def slack_check() -> tuple[str, str]:
        (result,) = asyncio.run(run_checks([SlackDeliveryCheck()]))
        return result.status, result.reason

    assert slack_check() == (Status.HEALTHY, "")
    # A failure younger than SLACK_OUTAGE_SECONDS is a retry, not an outage.
    Destination.objects.filter(pk=orders.pk).update(failing_since=timezone.now())
    assert slack_check() == (Status.HEALTHY, "")
    Destination.objects.filter(pk=orders.pk).update(
        failing_since=timezone.now() - timedelta(seconds=settings.SLACK_OUTAGE_SECONDS + 5)
    )
    status, reason = slack_check()
    assert status == Status.DEGRADED
    assert reason.startswith("Slack delivery failing: #orders for 3")
    response = Client().get("/health")
    assert response.status_code == 200  # degraded, not down
    assert response.json()["checks"]["slack"] == "degraded"
    assert response.json()["status"] == "degraded"
    assert "orders" not in response.content.decode()  # the public body names no destination
    Destination.objects.filter(pk=orders.pk).update(failing_since=None)
    assert Client().get("/health").json()["checks"]["slack"] == "healthy"


@pytest.mark.django_db(transaction=True)
def test_two_workers_finishing_the_backlog_send_the_summary_once(
    slack: SlackServer, settings: Any
) -> None:
    settings.SLACK_MIN_INTERVAL_SECONDS = 0
    create_default_routes(Destination, Route)
    ops = Destination.objects.get(name="operations")
    now = timezone.now()
    Destination.objects.filter(pk=ops.pk).update(
        slack_channel_id=OPS,
        failed_from=now - timedelta(seconds=90),
        failed_until=now - timedelta(seconds=5),
        outage_summary_due=True,
    )
    for index in range(3):
        (row,) = enqueue(
            NotificationKind.SYSTEM_ALERT, Composed(f"late {index}"), destinations=[ops]
        )
        Notification.objects.filter(pk=row.pk).update(
            created_at=now - timedelta(seconds=60),
            status=NotificationStatus.SENT,
            sent_at=now - timedelta(seconds=4),
        )
    start = threading.Barrier(4)

    def worker() -> int:
        try:
            start.wait()
            return drain(ops.pk).sent
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = sum(pool.map(lambda _: worker(), range(4)))
    summaries = [p.body["text"] for p in slack.posts if p.body["text"].startswith("✅ Delivery")]
    assert len(summaries) == 1
    assert sent == 1
    assert summaries[0].startswith(
        "✅ Delivery to #operations failed for 85 seconds; 3 messages delayed, all delivered"
    )
    assert not Destination.objects.filter(pk=ops.pk, outage_summary_due=True).exists()


def test_notifications_due_and_not_drained_fire_the_outbox_rule_sent_past_the_queue(
    slack: SlackServer,
    destinations: dict[str, Destination],
    django_capture_on_commit_callbacks: Any,
) -> None:
    ops, orders = destinations["operations"], destinations["orders"]
    with time_machine.travel(START, tick=False) as traveller:
        # No worker takes the drain tasks: rows are due and stay pending.
        stuck = [
            enqueue(NotificationKind.ORDER_PLACED, Composed(f"order {i}"), destinations=[orders])[0]
            for i in range(5)
        ]
        enqueue(NotificationKind.SYSTEM_ALERT, Composed("⚠️ an earlier alert"), destinations=[ops])
        traveller.shift(299)
        with django_capture_on_commit_callbacks(execute=True):
            run_cycle()
        assert incident("Notifications waiting") is None
        traveller.shift(2)
        with django_capture_on_commit_callbacks(execute=True):
            run_cycle()
        opened = incident("Notifications waiting")
        assert opened is not None
        assert opened.last_value == pytest.approx(301)
        # Sent by the evaluating process at once, ahead of what waits in the queue.
        (post,) = slack.posts
        assert post.body["channel"] == OPS
        assert "Notifications waiting" in post.body["text"]
        assert opened.notification is not None
        opened.notification.refresh_from_db()
        assert opened.notification.status == NotificationStatus.SENT
        assert (
            Notification.objects.filter(
                pk__in=[r.pk for r in stuck], status=NotificationStatus.PENDING
            ).count()
            == 5
        )
        # The workers come back: the queue drains and the rule resolves.
        workers = Workers(traveller)
        workers.wake = {ops.pk: timezone.now(), orders.pk: timezone.now()}
        workers.run_until(timezone.now() + timedelta(seconds=30))
        with django_capture_on_commit_callbacks(execute=True):
            run_cycle()
        traveller.shift(121)
        with django_capture_on_commit_callbacks(execute=True):
            run_cycle()
    assert incident("Notifications waiting").status == IncidentStatus.RESOLVED  # type: ignore[union-attr]
    assert len([p for p in slack.posts if "Notifications waiting" in p.body["text"]]) == 1


def test_outbox_age_counts_what_waits_on_the_workers_only(
    destinations: dict[str, Destination],
) -> None:
    ops, orders = destinations["operations"], destinations["orders"]
    metric = REGISTRY[OUTBOX_AGE]
    with time_machine.travel(START, tick=False) as traveller:
        assert metric.compute(Window(timezone.now(), 60)) == {"": 0.0}
        enqueue(NotificationKind.ORDER_PLACED, Composed("due"), destinations=[orders])
        # Deferred on purpose (a group, a summary): not due, so not waiting.
        enqueue(
            NotificationKind.SYSTEM_ALERT,
            Composed("later"),
            destinations=[ops],
            not_before=timezone.now() + timedelta(hours=1),
        )
        traveller.shift(100)
        assert metric.compute(Window(timezone.now(), 60)) == {"": 100.0}
        # Slack failing the destination: its rule says that, not this one.
        Destination.objects.filter(pk=orders.pk).update(failing_since=START)
        assert metric.compute(Window(timezone.now(), 60)) == {"": 0.0}
        # Back 30 s ago: the row has waited on the workers since then.
        Destination.objects.filter(pk=orders.pk).update(
            failing_since=None, failed_from=START, failed_until=at(70)
        )
        assert metric.compute(Window(timezone.now(), 60)) == {"": 30.0}
