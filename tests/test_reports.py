"""Scheduled messages and the spec's message formats."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client

from inkwave.lib.formats import duration, local_time, money, percent
from monitoring import notices
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.notices import error_message, health_message, send_error_alert
from monitoring.recording import SampleRecorder, WorkerIdentity
from notifications.local_slack import SlackServer
from notifications.models import Destination, Notification, NotificationKind
from notifications.outbox import UnknownDestination, send_message
from orders import reports
from orders.models import Order, OrderEvent, OrderEventKind, Venue

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("routes")]


def test_the_error_alert_reads_as_the_specification_writes_it() -> None:
    message = error_message(
        "ECONNREFUSED",
        {
            "source": "WebSocket",
            "type": "Connection Failed",
            "affected_clients": 5,
            "time": datetime(2024, 1, 1, 12, 30, tzinfo=UTC),
        },
    )
    assert message.text == "\n".join(
        [
            "⚠️ WebSocket Error",
            "Type: Connection Failed",
            "Affected Clients: 5",
            "Error: ECONNREFUSED",
            "Time: 2024-01-01 12:30 PM UTC",
            "Action Required: Check server status",
        ]
    )
    assert message.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "⚠️ WebSocket Error", "emoji": True},
    }
    assert {"type": "mrkdwn", "text": "*Affected Clients:*\n5", "verbatim": True} in message.blocks[
        1
    ]["fields"]


def test_the_health_update_reads_as_the_specification_writes_it() -> None:
    message = health_message(
        {"activeConnections": 45, "messagesPerMinute": 120, "errorRate": 0.0001, "uptime": 86400}
    )
    assert message.text == "\n".join(
        [
            "✅ System Healthy",
            "Active Connections: 45",
            "Messages/min: 120",
            "Error Rate: 0.01%",
            "Uptime: 24 hours",
        ]
    )


def test_times_are_in_the_venues_zone_and_money_in_its_currency() -> None:
    moment = datetime(2024, 1, 1, 12, 30, tzinfo=UTC)
    assert local_time(moment, "America/New_York") == "2024-01-01 07:30 AM"
    assert money(Decimal("42.5"), "USD") == "$42.50"
    assert money(Decimal("1200"), "JPY") == "¥1,200"
    assert money(Decimal("9.9"), "EUR") == "€9.90"
    assert percent(0.05) == "5.00%"
    assert duration(90) == "90 seconds"
    assert duration(3 * 86400) == "3 days"


def test_send_message_and_error_alerts_route_by_kind() -> None:
    (plain,) = send_message("orders", "Kitchen closes early today")
    assert plain.destination.name == "orders"
    with pytest.raises(UnknownDestination):
        send_message("nowhere", "x")
    (ws,) = send_error_alert(ConnectionRefusedError("ECONNREFUSED"), {"source": "WebSocket"})
    assert ws.kind == NotificationKind.WEBSOCKET_ALERT
    assert ws.destination.name == "operations"
    (system,) = send_error_alert(RuntimeError("boom"), {"source": "API", "type": "API error"})
    assert system.kind == NotificationKind.SYSTEM_ALERT
    assert system.text.startswith("⚠️ API Error\nType: API error\nError: boom")


def report_worker(errors: int = 0) -> None:
    monitor = WebSocketMonitor()
    for _ in range(45):
        monitor.track_connection("venue.1")
    for _ in range(100):
        monitor.track_message_received()
    for _ in range(errors):
        monitor.track_error("internal_error")
    SampleRecorder(WorkerIdentity(name="w"), MonitorSnapshot.empty(monitor.started_at)).flush(
        monitor.snapshot()
    )


def test_the_health_update_goes_out_once_per_interval_and_only_when_healthy() -> None:
    report_worker()
    with time_machine.travel(datetime.now(UTC), tick=False) as traveller:
        (note,) = notices.health_update(datetime.now(UTC), 3600)
        assert note.text.startswith("✅ System Healthy\nActive Connections: 45")
        assert notices.health_update(datetime.now(UTC), 3600) == []  # a second beat
        traveller.shift(3600)
        report_worker(errors=50)  # now degraded
        assert notices.health_update(datetime.now(UTC), 3600) == []
    assert Notification.objects.filter(kind=NotificationKind.HEALTH_UPDATE).count() == 1


def order(venue: Venue, number: int, total: str, at: datetime, status: str = "placed") -> None:
    with time_machine.travel(at, tick=False):
        Order.objects.create(
            venue=venue,
            number=number,
            table="1",
            currency=venue.currency,
            total=total,
            status=status,
        )


def test_daily_summaries_cover_each_venues_local_day_once() -> None:
    with time_machine.travel(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), tick=False):
        london = Venue.objects.create(
            name="London", slug="ldn", timezone="Europe/London", currency="GBP"
        )
        tokyo = Venue.objects.create(
            name="Tokyo", slug="tyo", timezone="Asia/Tokyo", currency="JPY"
        )
    # 2 March in London: 00:00-24:00 UTC. In Tokyo: 1 March 15:00 UTC - 2 March 15:00 UTC.
    order(london, 1, "10.00", datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    order(london, 2, "30.00", datetime(2026, 3, 2, 23, 30, tzinfo=UTC))
    order(london, 3, "99.00", datetime(2026, 3, 2, 12, 0, tzinfo=UTC), status="cancelled")
    order(london, 4, "50.00", datetime(2026, 3, 3, 0, 30, tzinfo=UTC))  # the next day
    order(tokyo, 1, "1200", datetime(2026, 3, 1, 16, 0, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 3, 2, 10, 0, tzinfo=UTC), tick=False):
        OrderEvent.objects.create(kind=OrderEventKind.CREATION_FAILED, venue=london)

    # 15:30 UTC on 2 March: Tokyo's 2 March is over (it is 00:30 on the 3rd there).
    at = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        notes = reports.daily_summaries(at)
    text = notes[0].text
    # 16:00 UTC on 1 March was 01:00 on 2 March in Tokyo.
    assert "Tokyo (2026-03-02): 1 order, revenue ¥1,200, avg order ¥1,200, failed orders 0" in text
    assert "London (2026-03-01): 0 orders" in text
    # At 00:30 UTC on 3 March London's 2 March has ended.
    at = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        notes = reports.daily_summaries(at)
        assert reports.daily_summaries(at) == []  # claimed once
    text = notes[0].text
    assert text.startswith("📊 Daily Summary")
    assert (
        "London (2026-03-02): 2 orders, revenue £40.00, avg order £20.00, failed orders 1" in text
    )
    assert "Total (GBP): 2 orders, revenue £40.00, avg order £20.00, failed orders 1" in text
    assert "Tokyo" not in text
    assert sorted(n.destination.name for n in notes) == ["operations", "orders"]


def test_the_weekly_report_covers_last_iso_week_once() -> None:
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        venue = Venue.objects.create(name="Harbour", slug="harbour", currency="USD")
    order(venue, 1, "20.00", datetime(2026, 2, 10, 12, tzinfo=UTC))  # week 7
    order(venue, 2, "40.00", datetime(2026, 2, 16, 12, tzinfo=UTC))  # week 8
    at = datetime(2026, 2, 17, 8, tzinfo=UTC)  # Tuesday of week 8
    (_, note) = reports.weekly_report(at)
    assert note.text.startswith("🗓️ Weekly Report 2026-W07")
    assert "Harbour (2026-W07): 1 order, revenue $20.00" in note.text
    assert reports.weekly_report(at) == []


def test_notify_deploy_queues_a_deployment_notification() -> None:
    out = StringIO()
    call_command("notify_deploy", "--release", "1.4.2", stdout=out)
    (note,) = Notification.objects.filter(kind=NotificationKind.DEPLOYMENT)
    assert note.text.startswith("🚀 Deployed 1.4.2\nRelease: 1.4.2\nEnvironment: production")
    with pytest.raises(CommandError):
        call_command("notify_deploy", "--release", " ", stdout=StringIO())


def test_slack_test_sends_to_each_enabled_destination_and_reports(
    slack_channels: SlackServer,
) -> None:
    out = StringIO()
    call_command("slack_test", stdout=out)
    assert sorted(p.body["channel"] for p in slack_channels.posts) == ["C0OPS", "C0ORD"]
    assert "operations: sent" in out.getvalue()
    assert "orders: sent" in out.getvalue()


def test_slack_test_reports_failures(slack_channels: SlackServer) -> None:
    from notifications.local_slack import Reply

    slack_channels.fail_next(Reply.error("channel_not_found"))
    out = StringIO()
    with pytest.raises(CommandError, match="1 destination"):
        call_command("slack_test", "operations", stdout=out)
    assert "operations: failed: channel_not_found" in out.getvalue()


def test_the_admin_send_test_action(slack_channels: SlackServer, admin_client: Client) -> None:
    ops = Destination.objects.get(name="operations")
    response = admin_client.post(
        "/admin/notifications/destination/",
        {"action": "send_test", "_selected_action": [ops.pk]},
        follow=True,
    )
    assert next(str(m) for m in response.context["messages"]).startswith("operations: sent")
    assert len(slack_channels.posts) == 1


def test_the_admin_shows_a_failed_notification_and_can_send_it_again(admin_client: Client) -> None:
    (note,) = send_message("operations", "hello")
    Notification.objects.filter(pk=note.pk).update(status="failed", last_error="channel_not_found")
    page = admin_client.get("/admin/notifications/notification/?status__exact=failed")
    assert "channel_not_found" in page.content.decode()
    admin_client.post(
        "/admin/notifications/notification/",
        {"action": "retry", "_selected_action": [note.pk]},
    )
    note.refresh_from_db()
    assert note.status == "pending"
    detail = admin_client.get(f"/admin/notifications/notification/{note.pk}/change/")
    assert detail.status_code == 200


def test_destinations_are_filled_from_the_environment_without_overwriting(settings: Any) -> None:
    from notifications.defaults import fill_destinations_from_environment

    settings.SLACK_OPERATIONS_CHANNEL_ID = "C0ENVOPS"
    settings.SLACK_ORDERS_CHANNEL_ID = "C0ENVORD"
    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/X"
    Destination.objects.filter(name="orders").update(slack_channel_id="C0ADMIN")
    fill_destinations_from_environment()
    ops, orders = Destination.objects.get(name="operations"), Destination.objects.get(name="orders")
    assert ops.slack_channel_id == "C0ENVOPS"
    assert ops.webhook_url.endswith("/T/B/X")
    assert orders.slack_channel_id == "C0ADMIN"


def test_daily_summaries_count_the_incidents_of_each_venues_own_local_day() -> None:
    from monitoring.models import AlertRule, Incident

    with time_machine.travel(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), tick=False):
        london = Venue.objects.create(name="London", slug="ldn", timezone="Europe/London")
        tokyo = Venue.objects.create(name="Tokyo", slug="tyo", timezone="Asia/Tokyo")
    rule = AlertRule.objects.create(name="r", metric="ws.error_rate", threshold=1)

    def incident(at: datetime, scope: str) -> None:
        Incident.objects.create(
            rule=rule, scope=scope, title="t", severity="warning", status="resolved",
            opened_at=at, last_seen_at=at, first_value=1, peak_value=1, last_value=1,
        )  # fmt: skip

    # Tokyo's 2 March is 1 March 15:00 UTC to 2 March 15:00 UTC; London's is 2 March UTC.
    incident(datetime(2026, 3, 1, 16, 0, tzinfo=UTC), "")  # both see it: Tokyo's 2 March
    incident(datetime(2026, 3, 2, 1, 0, tzinfo=UTC), str(tokyo.pk))  # Tokyo's own
    incident(datetime(2026, 3, 2, 16, 0, tzinfo=UTC), str(tokyo.pk))  # Tokyo's 3 March
    incident(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), "")  # London's 2 March only
    incident(datetime(2026, 3, 2, 18, 0, tzinfo=UTC), str(london.pk))  # London's own

    at = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        tokyo_text = reports.daily_summaries(at)[0].text
    assert "Tokyo (2026-03-02): 0 orders" in tokyo_text
    assert "failed orders 0, incidents 2" in tokyo_text
    at = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        london_text = reports.daily_summaries(at)[0].text
    assert "London (2026-03-02): 0 orders" in london_text
    assert "failed orders 0, incidents 2" in london_text
    assert "in the last 24 hours" not in london_text
