"""One noisy venue must not delay an alert: urgent kinds go first, order chatter is coalesced."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import close_old_connections, transaction
from django.test import Client
from django.utils import timezone

from monitoring.notices import deployment, send_error_alert
from notifications.defaults import create_default_routes
from notifications.delivery import DrainResult, drain
from notifications.formatting import Composed
from notifications.local_slack import Post, Reply, SlackServer
from notifications.models import (
    Destination,
    Notification,
    NotificationKind,
    NotificationPriority,
    NotificationStatus,
    Route,
)
from notifications.outbox import enqueue
from orders import events
from orders.models import Order, OrderEvent, OrderEventKind, Venue

pytestmark = pytest.mark.django_db

OPS, ORDERS = "C0OPS", "C0ORDERS"


@pytest.fixture
def destinations(db: Any) -> dict[str, Destination]:
    create_default_routes(Destination, Route)
    Destination.objects.filter(name="operations").update(slack_channel_id=OPS)
    Destination.objects.filter(name="orders").update(slack_channel_id=ORDERS)
    return {d.name: d for d in Destination.objects.all()}


def chatter(text: str, destination: Destination) -> Notification:
    (row,) = enqueue(NotificationKind.PAYMENT_ISSUE, Composed(text), destinations=[destination])
    return row


def urgent(text: str, destination: Destination, **extra: Any) -> Notification:
    (row,) = enqueue(
        NotificationKind.SYSTEM_ALERT, Composed(text), destinations=[destination], **extra
    )
    return row


def deliver_until_idle(traveller: Any, limit: int = 5000) -> None:
    """Drain each destination like an always-ready worker; simulated time moves to each wake-up."""
    pks = list(Destination.objects.values_list("pk", flat=True))
    for _ in range(limit):
        waits = [drain(pk).wait for pk in pks]
        pending = [wait for wait in waits if wait is not None]
        if not pending:
            return
        traveller.shift(max(min(pending), 0.001))
    raise AssertionError("the outbox never went idle")


def texts(slack: SlackServer, channel: str) -> list[str]:
    return [post.body["text"] for post in slack.posts if post.body["channel"] == channel]


def test_an_alert_goes_before_order_chatter_queued_earlier_each_class_in_order(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    operations = destinations["operations"]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for index in range(5):
            chatter(f"payment {index}", operations)
        alert = urgent("alert", operations)
        deployment("1.4.2", "production")
        for index in range(5, 7):
            chatter(f"payment {index}", operations)
        assert alert.priority == NotificationPriority.URGENT
        deliver_until_idle(traveller)
    assert texts(slack, OPS) == [
        "alert",
        "🚀 Deployed 1.4.2\nRelease: 1.4.2\nEnvironment: production",
        *(f"payment {index}" for index in range(7)),
    ]


def test_an_alert_arriving_while_chatter_drains_waits_only_for_the_next_slot(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    operations = destinations["operations"]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for index in range(30):
            chatter(f"payment {index}", operations)
        assert drain(operations.pk) == DrainResult(sent=1, wait=1.0)
        traveller.shift(0.5)
        alert = urgent("alert", operations)
        traveller.shift(0.5)
        assert drain(operations.pk).sent == 1
        deliver_until_idle(traveller)
    assert texts(slack, OPS)[:3] == ["payment 0", "alert", "payment 1"]
    alert.refresh_from_db()
    assert alert.sent_at is not None
    assert alert.sent_at - alert.created_at == timedelta(seconds=0.5)


def test_a_retrying_chatter_row_does_not_hold_back_an_alert(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    operations = destinations["operations"]
    slack.fail_next(Reply.status(500))
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        chatter("payment 0", operations)
        chatter("payment 1", operations)
        first = drain(operations.pk)
        assert first.sent == 0
        assert first.wait is not None
        assert first.wait >= 1
        traveller.shift(0.5)
        urgent("alert", operations)
        traveller.shift(0.5)
        assert drain(operations.pk).sent == 1  # the alert; the payment still waits its retry
        deliver_until_idle(traveller)
    assert texts(slack, OPS) == ["alert", "payment 0", "payment 1"]


def test_a_reply_or_an_update_waits_for_its_original_whatever_its_class(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    operations = destinations["operations"]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        original = chatter("payment 0", operations)
        urgent("reply", operations, thread_parent=original)
        urgent("payment 0 (handled)", operations, update_target=original)
        deliver_until_idle(traveller)
    original.refresh_from_db()
    first, reply, update = slack.posts
    assert first.body["text"] == "payment 0"
    assert reply.body["thread_ts"] == original.slack_ts
    assert update.path == "/api/chat.update"
    assert update.body["ts"] == original.slack_ts


def test_a_deferred_group_holds_back_nothing_and_goes_out_when_due(
    slack: SlackServer, destinations: dict[str, Destination]
) -> None:
    operations = destinations["operations"]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        later = timezone.now() + timedelta(seconds=30)
        group = urgent("grouped alerts", operations, not_before=later)
        urgent("grouped alerts resolved", operations, thread_parent=group)
        urgent("deployed", operations)
        result = drain(operations.pk)
        assert result.sent == 1
        assert result.wait == pytest.approx(30)  # a wake-up for the group, not a busy loop
        assert texts(slack, OPS) == ["deployed"]
        traveller.shift(30)
        deliver_until_idle(traveller)
    group.refresh_from_db()
    assert texts(slack, OPS) == ["deployed", "grouped alerts", "grouped alerts resolved"]
    assert slack.posts[2].body["thread_ts"] == group.slack_ts


# --- Coalescing a venue's order chatter ---------------------------------------------------


def make_order(venue: Venue, number: int) -> Order:
    return Order.objects.create(
        venue=venue, number=number, table="Table 5", currency="USD", total=Decimal("9.50")
    )


def fail_payment(order: Order) -> None:
    """What the API does for {"paymentStatus": "failed"} on a pending payment."""
    with transaction.atomic():
        order.payment_status = "failed"
        order.save(update_fields=["payment_status"])
        events.order_changed(order, {"payment_status": ("pending", "failed")})
    order.payment_status = "pending"
    order.save(update_fields=["payment_status"])


def payment_rows(destination: str) -> list[Notification]:
    return list(
        Notification.objects.filter(
            kind=NotificationKind.PAYMENT_ISSUE, destination__name=destination
        ).order_by("pk")
    )


def counted(rows: list[Notification]) -> int:
    return sum(row.context["tally"]["count"] if row.context.get("summary") else 1 for row in rows)


def test_past_the_limit_a_venues_payment_issues_are_counted_into_one_summary(
    destinations: dict[str, Destination], venue: Venue, other_venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 3
    settings.ORDER_NOTIFY_WINDOW_SECONDS = 60
    orders = [make_order(venue, number) for number in range(1, 11)]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for order in orders:
            fail_payment(order)
            traveller.shift(1)
        fail_payment(make_order(other_venue, 1))
    assert OrderEvent.objects.filter(kind=OrderEventKind.PAYMENT_ISSUE).count() == 11
    for name in ("orders", "operations"):
        rows = payment_rows(name)
        mine = [row for row in rows if row.context["venue"] == venue.pk]
        assert [row.text.splitlines()[0] for row in mine] == [
            "💳 Payment Issue: Order #1",
            "💳 Payment Issue: Order #2",
            "💳 Payment Issue: Order #3",
            "💳 7 payment issues at Main Branch",
        ]
        summary = mine[-1]
        assert summary.context["tally"]["count"] == 7
        assert summary.context["tally"]["latest"] == ["#6", "#7", "#8", "#9", "#10"]
        assert summary.revision == 6  # rewritten by each event it took after the first
        assert summary.next_attempt_at == summary.created_at + timedelta(seconds=60)
        assert "Latest Orders: #6, #7, #8, #9, #10" in summary.text
        # Another venue's issues are counted on their own.
        (theirs,) = [row for row in rows if row.context["venue"] == other_venue.pk]
        assert theirs.text.startswith("💳 Payment Issue: Order #1\nVenue: Harbour")


def test_the_summary_goes_out_after_its_window_and_a_later_one_counts_what_follows(
    slack: SlackServer, destinations: dict[str, Destination], venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 2
    settings.ORDER_NOTIFY_WINDOW_SECONDS = 60
    order = make_order(venue, 1)
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for _ in range(5):
            fail_payment(order)
        deliver_until_idle(traveller)  # two singles now, the summary of 3 a minute later
        for _ in range(4):
            fail_payment(order)  # the window still holds 3 messages: a new summary
        deliver_until_idle(traveller)
    assert [text.splitlines()[0] for text in texts(slack, ORDERS)] == [
        "💳 Payment Issue: Order #1",
        "💳 Payment Issue: Order #1",
        "💳 3 payment issues at Main Branch",
        "💳 4 payment issues at Main Branch",
    ]
    assert counted(payment_rows("orders")) == 9
    assert {row.status for row in payment_rows("orders")} == {NotificationStatus.SENT}


def test_an_event_after_the_summary_was_claimed_starts_a_new_one(
    destinations: dict[str, Destination], venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 1
    order = make_order(venue, 1)
    fail_payment(order)
    fail_payment(order)
    first_summary = payment_rows("orders")[-1]
    Notification.objects.filter(pk=first_summary.pk).update(status=NotificationStatus.SENDING)
    fail_payment(order)
    rows = payment_rows("orders")
    assert len(rows) == 3
    assert rows[-1].pk != first_summary.pk
    assert rows[-1].context["tally"]["count"] == 1
    assert counted(rows) == 3


def test_a_limit_of_zero_turns_coalescing_off(
    destinations: dict[str, Destination], venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 0
    order = make_order(venue, 1)
    for _ in range(30):
        fail_payment(order)
    rows = payment_rows("orders")
    assert len(rows) == 30
    assert not any(row.context.get("summary") for row in rows)


def test_new_orders_and_status_changes_are_coalesced_per_kind(
    destinations: dict[str, Destination], venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 2
    for number in range(1, 6):
        order = make_order(venue, number)
        events.order_placed(order)
        events.order_changed(order, {"status": ("placed", "accepted")})
    for kind, title in [
        (NotificationKind.ORDER_PLACED, "🛒 3 new orders at Main Branch"),
        (NotificationKind.ORDER_STATUS_CHANGED, "🔄 3 order status changes at Main Branch"),
    ]:
        rows = Notification.objects.filter(kind=kind).order_by("pk")
        assert len(rows) == 3
        assert rows[2].text.splitlines()[0] == title
    assert OrderEvent.objects.filter(venue=venue).count() == 10


@pytest.mark.django_db(transaction=True)
def test_concurrent_events_of_one_venue_are_each_counted_once(
    destinations: dict[str, Destination], venue: Venue, settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 2
    orders = [make_order(venue, number) for number in range(1, 5)]

    def toggle(order: Order) -> None:
        try:
            for _ in range(10):
                fail_payment(order)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(toggle, orders))
    for name in ("orders", "operations"):
        rows = payment_rows(name)
        assert counted(rows) == 40
        assert len(rows) == 3  # the limit's two singles and one summary: no race got past it


# --- The flood, through the API -----------------------------------------------------------


def api(client: Client, method: str, path: str, body: Any) -> Any:
    response = getattr(client, method)(path, json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def notification_of(post: Post) -> Notification:
    return Notification.objects.get(slack_ts=post.ts)


def test_a_flood_from_one_venue_neither_delays_an_alert_nor_floods_the_channels(
    slack: SlackServer, destinations: dict[str, Destination], venue: Venue, venue_token: str
) -> None:
    device = Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}")
    order = {
        "venue": venue.pk,
        "table": "Table 5",
        "currency": "USD",
        "items": [{"name": "Soup", "quantity": 1, "unitPrice": "4.50"}],
    }
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        ids = [api(device, "post", "/api/v1/orders", order)["id"] for _ in range(6)]
        status = dict.fromkeys(ids, "pending")
        alerts: list[Notification] = []
        for toggle in range(120):
            order_id = ids[toggle % len(ids)]
            status[order_id] = "failed" if status[order_id] == "pending" else "pending"
            api(device, "patch", f"/api/v1/orders/{order_id}", {"paymentStatus": status[order_id]})
            if toggle == 60:
                alerts += send_error_alert("Redis unreachable", {"source": "Redis"})
                alerts += deployment("1.4.2", "production")
            for pk in destinations_pks(destinations):
                drain(pk)  # a worker keeps up as it can: one message per second per channel
            traveller.shift(0.01)
        deliver_until_idle(traveller)

    assert OrderEvent.objects.filter(kind=OrderEventKind.PAYMENT_ISSUE).count() == 60
    # The alert and the deployment reached #operations within the next send slot, in order,
    # ahead of the chatter queued before them.
    alert, deploy = alerts
    for row in alerts:
        row.refresh_from_db()
        assert row.status == NotificationStatus.SENT
        assert row.sent_at is not None
        assert row.sent_at - row.created_at <= timedelta(seconds=2)
    ops = [notification_of(post) for post in slack.posts if post.body["channel"] == OPS]
    assert ops.index(alert) < ops.index(deploy)
    queued_before = [
        row for row in ops if row.kind == NotificationKind.PAYMENT_ISSUE and row.pk < alert.pk
    ]
    assert queued_before  # the flood was there first...
    assert any(ops.index(row) > ops.index(deploy) for row in queued_before)  # ...and waited
    # Each channel got a bounded number of payment messages that count all 60 events, each
    # kind in the order it was queued.
    for channel in (OPS, ORDERS):
        sent = [notification_of(post) for post in slack.posts if post.body["channel"] == channel]
        payments = [row for row in sent if row.kind == NotificationKind.PAYMENT_ISSUE]
        assert len(payments) == 11  # ORDER_NOTIFY_LIMIT (10) singles and one summary
        assert counted(payments) == 60
        assert payments[-1].text.startswith("💳 50 payment issues at Main Branch")
        for kind in {row.kind for row in sent}:
            pks = [row.pk for row in sent if row.kind == kind]
            assert pks == sorted(pks), kind


def destinations_pks(destinations: dict[str, Destination]) -> list[int]:
    return [destination.pk for destination in destinations.values()]


def test_a_summary_lists_each_order_once_however_often_it_changed(
    venue: Venue, destinations: dict[str, Destination], settings: Any
) -> None:
    settings.ORDER_NOTIFY_LIMIT = 1
    settings.ORDER_NOTIFY_WINDOW_SECONDS = 60
    first, second = make_order(venue, 6), make_order(venue, 7)
    with time_machine.travel(timezone.now(), tick=False):
        for order in (first, first, first, second, first):
            fail_payment(order)
    summary = [r for r in payment_rows("orders") if r.context["venue"] == venue.pk][-1]
    assert summary.context["tally"]["count"] == 4
    assert summary.context["tally"]["latest"] == ["#7", "#6"]
