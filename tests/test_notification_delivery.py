"""The outbox against a local Slack server: retries, rate limits, outages, dead workers."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
import time_machine
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from notifications import delivery
from notifications.defaults import create_default_routes
from notifications.delivery import DrainResult, drain, sweep
from notifications.formatting import MARKER, Composed
from notifications.local_slack import TOKEN, Reply, SlackServer
from notifications.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    DestinationStatus,
    Notification,
    NotificationKind,
    NotificationStatus,
    Route,
)
from notifications.outbox import enqueue
from notifications.slack import SlackMessage, SlackTransport, payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def operations(db: Any) -> Destination:
    create_default_routes(Destination, Route)
    Destination.objects.filter(name="orders").update(slack_channel_id="C0ORDERS")
    destination = Destination.objects.get(name="operations")
    destination.slack_channel_id = "C0OPS"
    destination.save()
    return destination


def alert(text: str = "⚠️ WebSocket Error") -> list[Notification]:
    return enqueue(
        NotificationKind.WEBSOCKET_ALERT,
        Composed(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]),
    )


def run_until_idle(destination: Destination, traveller: Any, limit: int = 500) -> list[DrainResult]:
    """Drive one destination like the task layer would, moving simulated time to each wake-up."""
    results = []
    for _ in range(limit):
        result = drain(destination.pk)
        results.append(result)
        if result.wait is None:
            return results
        traveller.shift(max(result.wait, 0.001))
    raise AssertionError("the destination never went idle")


def test_the_payload_is_a_plain_dict() -> None:
    body = payload(
        SlackMessage(text="hi", blocks=[{"type": "divider"}], channel="C1", thread_ts="1.2")
    )
    assert body == {
        "channel": "C1",
        "text": "hi",
        "blocks": [{"type": "divider"}],
        "thread_ts": "1.2",
        "unfurl_links": False,
    }
    update = payload(SlackMessage(text="x", channel="C1", update_ts="9.9", thread_ts="1.2"))
    assert update["ts"] == "9.9"
    assert "thread_ts" not in update


def test_a_notification_is_posted_with_blocks_and_its_delivery_recorded(
    slack: SlackServer, operations: Destination
) -> None:
    (row,) = alert()
    assert row.status == NotificationStatus.PENDING
    result = drain(operations.pk)
    assert result == DrainResult(sent=1, wait=None)
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.slack_ts == slack.posts[0].ts
    assert row.slack_channel == "C0OPS"
    (post,) = slack.posts
    assert post.path == "/api/chat.postMessage"
    assert post.body["channel"] == "C0OPS"
    assert post.body["text"] == "⚠️ WebSocket Error"
    assert post.body["blocks"][0]["type"] == "section"
    (attempt,) = DeliveryAttempt.objects.filter(notification=row)
    assert attempt.outcome == AttemptOutcome.SENT
    assert attempt.duration_ms is not None


def test_without_a_token_the_destination_webhook_is_used(
    slack: SlackServer, operations: Destination, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    operations.webhook_url = slack.webhook_url()
    operations.save()
    alert("via webhook")
    assert drain(operations.pk).sent == 1
    (post,) = slack.posts
    assert post.path.startswith("/services/")
    assert post.body["text"] == "via webhook"


def test_nothing_configured_means_skipped_visibly_not_lost(
    operations: Destination, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    (row,) = alert()
    drain(operations.pk)
    row.refresh_from_db()
    assert row.status == NotificationStatus.SKIPPED
    assert "not configured" in row.last_error


def test_a_429_waits_its_retry_after_then_delivers_once(
    slack: SlackServer, operations: Destination
) -> None:
    slack.fail_next(Reply.rate_limited(retry_after=30))
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        first = drain(operations.pk)
        assert first.sent == 0
        assert first.wait == pytest.approx(30, abs=0.01)  # returned, not slept
        row.refresh_from_db()
        assert row.status == NotificationStatus.PENDING
        traveller.shift(29)
        assert drain(operations.pk).sent == 0  # still waiting
        traveller.shift(1)
        assert drain(operations.pk).sent == 1
    assert len(slack.posts) == 1
    outcomes = list(
        DeliveryAttempt.objects.filter(notification=row).values_list("outcome", "http_status")
    )
    assert outcomes == [(AttemptOutcome.RETRY, 429), (AttemptOutcome.SENT, 200)]


@pytest.mark.parametrize(
    "failure", [Reply.status(500), Reply.status(503), Reply.drop(), Reply.hang(3)]
)
def test_server_errors_timeouts_and_dropped_connections_are_retried(
    slack: SlackServer, operations: Destination, failure: Reply
) -> None:
    slack.fail_next(failure)
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        first = drain(operations.pk)
        assert first.sent == 0
        assert first.wait is not None
        assert 1 <= first.wait <= 2  # backoff of the first retry: 2 s with jitter
        traveller.shift(first.wait)
        assert drain(operations.pk).sent == 1
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.attempts == 2


@pytest.mark.parametrize("code", ["invalid_auth", "channel_not_found", "not_in_channel"])
def test_a_permanent_error_stops_retrying_and_flags_the_destination(
    slack: SlackServer, operations: Destination, code: str
) -> None:
    slack.fail_next(Reply.error(code))
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        assert drain(operations.pk) == DrainResult(sent=0, wait=None)
        traveller.shift(3600)
        assert drain(operations.pk) == DrainResult(sent=0, wait=None)
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED
    assert row.last_error == code
    assert row.attempts == 1
    operations.refresh_from_db()
    assert operations.status == DestinationStatus.ERROR
    assert operations.last_error == code
    assert slack.posts == []


def test_a_webhook_404_or_410_is_permanent(
    slack: SlackServer, operations: Destination, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    operations.webhook_url = slack.webhook_url()
    operations.save()
    slack.fail_next(Reply.error("no_service"))
    (row,) = alert()
    drain(operations.pk)
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED
    assert "404" in row.last_error


def test_an_hour_long_outage_loses_nothing_and_sends_in_order_once_back(
    slack: SlackServer, operations: Destination
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        rows = [alert(f"alert {index}")[0] for index in range(10)]
        slack.go_down()
        outage_end = timezone.now() + timedelta(hours=1)
        while timezone.now() < outage_end:
            result = drain(operations.pk)
            assert result.sent == 0
            traveller.shift(min(result.wait or 60, 300))
        slack.come_back()
        run_until_idle(operations, traveller)
    texts = [post.body["text"] for post in slack.posts]
    assert texts[:10] == [f"alert {index}" for index in range(10)]
    # Once the backlog is out, one summary of the outage.
    assert len(texts) == 11
    assert texts[10].startswith(
        "✅ Delivery to #operations failed for 60 minutes; 10 messages delayed, all delivered"
    )
    assert set(
        Notification.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", flat=True)
    ) == {NotificationStatus.SENT}


def test_a_notification_older_than_its_maximum_age_is_given_up_visibly(
    slack: SlackServer, operations: Destination, settings: Any
) -> None:
    settings.NOTIFICATION_MAX_AGE_SECONDS = 600
    slack.go_down()
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        run_until_idle(operations, traveller)
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED
    assert row.last_error.startswith("gave up after")


class WorkerKilled(BaseException):
    """What SIGKILL looks like from inside: the send never returns."""


class DyingTransport(SlackTransport):
    def notify(self, message: SlackMessage, *, webhook_url: str = "") -> Any:
        raise WorkerKilled


def test_a_send_that_never_returns_is_swept_after_its_lease_and_sent_once(
    slack: SlackServer, operations: Destination, settings: Any
) -> None:
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        with pytest.raises(WorkerKilled):
            drain(
                operations.pk,
                transport=DyingTransport(token=TOKEN, api_url=slack.api_url, timeout=1),
            )
        row.refresh_from_db()
        assert row.status == NotificationStatus.SENDING
        # Nobody else takes a row that is being sent...
        assert drain(operations.pk) == DrainResult(sent=0, wait=None)
        traveller.shift(settings.NOTIFICATION_LEASE_SECONDS - 1)
        assert sweep().recovered == 0
        # ...until its lease runs out.
        traveller.shift(2)
        result = sweep()
        assert result.recovered == 1
        assert result.due_destinations == [operations.pk]
        assert drain(operations.pk).sent == 1
        assert sweep().recovered == 0
    assert len(slack.posts) == 1
    outcomes = list(
        DeliveryAttempt.objects.filter(notification=row).values_list("outcome", flat=True)
    )
    assert outcomes == [AttemptOutcome.LOST, AttemptOutcome.SENT]


def database_gone() -> OperationalError:
    exc = OperationalError("terminating connection due to administrator command")
    exc.__cause__ = psycopg.errors.AdminShutdown()  # SQLSTATE 57P01: a restart
    return exc


@pytest.mark.django_db(transaction=True)  # each try reconnects: no test transaction
def test_a_sent_message_whose_recording_meets_a_database_restart_is_not_sent_again(
    slack: SlackServer, operations: Destination, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack took the message, then PostgreSQL restarted before the row said so (the soak
    met it): the row is recorded sent once the database answers, within the lease, and the
    sweep after the lease has nothing to send again."""
    (row,) = alert()
    failures = iter([database_gone(), database_gone()])
    mark_sent = delivery._mark_sent

    def flaky(*args: Any) -> None:
        if (exc := next(failures, None)) is not None:
            raise exc
        mark_sent(*args)

    monkeypatch.setattr(delivery, "_mark_sent", flaky)
    monkeypatch.setattr(delivery, "RECORD_RETRY_SECONDS", 0)
    assert drain(operations.pk).sent == 1
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.slack_ts
    with time_machine.travel(
        timezone.now() + timedelta(seconds=settings.NOTIFICATION_LEASE_SECONDS + 1)
    ):
        assert sweep().recovered == 0
        assert drain(operations.pk).sent == 0
    assert len(slack.posts) == 1


@pytest.mark.django_db(transaction=True)  # each try reconnects: no test transaction
def test_a_database_gone_past_the_lease_leaves_the_row_to_the_sweep(
    slack: SlackServer, operations: Destination, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried no longer than the lease: the row is then the sweep's (sent again: the one case
    of a message posted twice, said in the log with its Slack timestamp)."""
    (row,) = alert()
    with time_machine.travel(timezone.now(), tick=False) as traveller:

        def down(*args: Any) -> None:
            traveller.shift(1)
            raise database_gone()

        monkeypatch.setattr(delivery, "_mark_sent", down)
        monkeypatch.setattr(delivery, "RECORD_RETRY_SECONDS", 0)
        with pytest.raises(OperationalError):
            drain(operations.pk)
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENDING
    assert len(slack.posts) == 1


def test_sixty_alerts_in_one_second_never_exceed_one_message_per_second(
    slack: SlackServer, operations: Destination
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for index in range(60):
            alert(f"alert {index}")
            traveller.shift(1 / 60)
        run_until_idle(operations, traveller)
    starts = sorted(DeliveryAttempt.objects.values_list("started_at", flat=True))
    assert len(starts) == 60
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1.0
    assert len(slack.posts) == 60


def test_oversized_texts_are_cut_not_rejected(slack: SlackServer, operations: Destination) -> None:
    from notifications.formatting import fit, section_block

    huge = fit("x" * 10_000, [section_block("y" * 5_000)] * 60)
    enqueue(NotificationKind.SYSTEM_ALERT, huge)
    assert drain(operations.pk).sent == 1
    body = slack.posts[0].body
    assert len(body["text"]) == 4000
    assert body["text"].endswith(MARKER)
    assert len(body["blocks"]) == 50
    assert len(body["blocks"][0]["text"]["text"]) == 3000
    assert MARKER in body["blocks"][-1]["elements"][0]["text"]


def test_replies_are_threaded_and_updates_replace_the_message(
    slack: SlackServer, operations: Destination
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        (parent,) = alert("incident opened")
        drain(operations.pk)
        parent.refresh_from_db()
        enqueue(NotificationKind.SYSTEM_ALERT, Composed("resolved"), thread_parent=parent)
        enqueue(
            NotificationKind.SYSTEM_ALERT, Composed("incident (resolved)"), update_target=parent
        )
        run_until_idle(operations, traveller)
    reply, update = slack.posts[1], slack.posts[2]
    assert reply.path == "/api/chat.postMessage"
    assert reply.body["thread_ts"] == parent.slack_ts
    assert update.path == "/api/chat.update"
    assert update.body["ts"] == parent.slack_ts
    assert update.body["channel"] == "C0OPS"


def test_a_retrying_head_holds_back_the_rest_of_its_destination_only(
    slack: SlackServer, operations: Destination
) -> None:
    slack.fail_next(Reply.status(500))
    alert("first")
    alert("second")
    enqueue(NotificationKind.ORDER_PLACED, Composed("an order"))
    orders = Destination.objects.get(name="orders")
    assert drain(operations.pk).sent == 0
    assert [p.body["text"] for p in slack.posts] == []
    assert drain(orders.pk).sent == 1
    assert [p.body["text"] for p in slack.posts] == ["an order"]


def test_transport_errors_classify_vendor_codes() -> None:
    from notifications.slack import _classify

    for code in ("invalid_auth", "channel_not_found", "not_in_channel"):
        permanent = _classify(200, code)
        assert permanent.permanent, code
        assert (str(permanent), permanent.retry_after) == (code, None)
    limited = _classify(429, "ratelimited", {"Retry-After": "12"})
    assert (limited.permanent, limited.retry_after, limited.http_status) == (False, 12, 429)
    # A 429 without Retry-After, or "ratelimited" in a 200's body, still waits a moment.
    assert _classify(429, "").retry_after == 1.0
    assert _classify(200, "ratelimited").http_status == 429
    # 5xx: retried at the outbox's own pace, with what the server said kept for the log.
    failing = _classify(503, "")
    assert (failing.permanent, failing.retry_after, failing.http_status) == (False, None, 503)
    assert str(failing) == "HTTP 503"
    assert str(_classify(500, "internal_error")) == "internal_error"
    # An error code Slack may add later is retried, not taken for a broken channel.
    assert not _classify(200, "some_new_error").permanent


@pytest.mark.django_db(transaction=True)
def test_two_workers_draining_at_once_post_each_notification_once(
    slack: SlackServer, operations: Destination, settings: Any
) -> None:
    settings.SLACK_MIN_INTERVAL_SECONDS = 0
    rows = [alert(f"n{index}")[0] for index in range(20)]

    def worker() -> int:
        try:
            total = 0
            for _ in range(30):
                total += drain(operations.pk).sent
            return total
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = sum(pool.map(lambda _: worker(), range(4)))
    assert sent == 20
    texts = [post.body["text"] for post in slack.posts]
    assert sorted(texts) == sorted(f"n{index}" for index in range(20))
    assert len(texts) == len(set(texts))
    assert texts == [f"n{index}" for index in range(20)]  # and still in order
    assert (
        Notification.objects.filter(
            pk__in=[r.pk for r in rows], status=NotificationStatus.SENT
        ).count()
        == 20
    )


def queued_tasks() -> int:
    from inkwave.celery import app

    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare("celery", passive=True).message_count)


def purge_tasks() -> None:
    from inkwave.celery import app

    app.control.purge()


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_notifications_queues_one_drain_per_destination(operations: Destination) -> None:
    from notifications.outbox import start_delivery
    from notifications.tasks import drain_destination

    purge_tasks()
    for index in range(20):
        alert(f"burst {index}")  # each commits and asks for a drain
    assert queued_tasks() == 1
    drain_destination(operations.pk)  # the queued drain starts: the next row queues again
    alert("after the drain started")
    assert queued_tasks() == 2
    start_delivery([operations.pk])
    assert queued_tasks() == 2
    purge_tasks()


def test_a_row_rewritten_after_a_drain_read_it_is_sent_with_its_new_text(
    slack: SlackServer, operations: Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db.models import F

    from notifications import delivery

    (row,) = alert("one alert")
    real_head = delivery._head

    def head_then_rewrite(destination_id: int, now: datetime) -> Notification | None:
        head = real_head(destination_id, now)
        if head is not None and head.text == "one alert":
            # An alert joins the group between the drain's read and its claim.
            Notification.objects.filter(pk=head.pk).update(
                text="two alerts", revision=F("revision") + 1
            )
        return head

    monkeypatch.setattr(delivery, "_head", head_then_rewrite)
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        run_until_idle(operations, traveller)
    assert [post.body["text"] for post in slack.posts] == ["two alerts"]
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT


@pytest.mark.django_db(transaction=True)
def test_a_hung_broker_does_not_hold_the_caller(
    operations: Destination, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A request that commits a notification while the broker hangs answers anyway: the
    drain task's publish goes on in the background, and a failed one clears the flag."""
    import threading

    from notifications import outbox

    settings.NOTIFICATION_DISPATCH_WAIT_SECONDS = 0.2
    release = threading.Event()

    def hung_then_refused(*args: Any, **kwargs: Any) -> None:
        release.wait(30)
        raise ConnectionError("the broker went away")

    monkeypatch.setattr(outbox, "send_drain_task", hung_then_refused)
    Destination.objects.filter(pk=operations.pk).update(drain_requested=False)
    caller = threading.Thread(target=outbox.start_delivery, args=([operations.pk],))
    caller.start()
    caller.join(5)
    assert not caller.is_alive(), "the caller waited on the hung broker"
    operations.refresh_from_db()
    assert operations.drain_requested  # a publish is under way: no second one is queued
    release.set()
    outbox._publisher().submit(lambda: None).result(10)  # the publish has failed by now
    operations.refresh_from_db()
    assert not operations.drain_requested  # the next notification asks again
