"""The staff dashboard: who may see it, what its history answers, what its socket pushes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from inkwave.db import database_sync_to_async
from inkwave.routing import build_websocket_application
from monitoring.dashboard.feed import get_feed
from monitoring.dashboard.figures import history, live_figures
from monitoring.models import AlertRule, Incident, RequestSample, WebSocketSample, Worker
from monitoring.stats import websocket_stats
from orders.models import Order, OrderStatus, Venue
from tests.conftest import PatientCommunicator, session_cookie_for

HISTORY = "/api/v1/monitoring/dashboard/history"


def _worker(name: str, now: Any) -> Worker:
    return Worker.objects.create(
        name=name, hostname="h", pid=1, started_at=now - timedelta(days=31), last_seen_at=now
    )


def seed_samples(now: Any, hours: int, workers: int = 2) -> None:
    rows = []
    for w in range(workers):
        worker = _worker(f"web:h:{w}", now)
        for i in range(hours * 6):  # one row per worker per 10 minutes
            rows.append(
                WebSocketSample(
                    worker=worker,
                    recorded_at=now - timedelta(minutes=10 * i),
                    interval_seconds=600,
                    active_connections=10,
                    messages_sent=600,
                    messages_received=0,
                    connections=5,
                    errors=1,
                    memory_rss_bytes=100_000_000,
                )
            )
        worker.last_sample = rows[-hours * 6]
    WebSocketSample.objects.bulk_create(rows)
    for w, worker in enumerate(Worker.objects.order_by("name")):
        worker.last_sample = WebSocketSample.objects.filter(worker=worker).order_by("-recorded_at")[
            0
        ]
        worker.save()
        RequestSample.objects.create(
            worker=worker,
            recorded_at=now - timedelta(minutes=1),
            interval_seconds=10,
            route="api/v1/orders",
            requests=10,
            server_errors=w,  # 1 of 20 over both workers
            duration_sum_ms=200.0,
            queries=40,
            query_ms=80.0,
        )


def test_a_months_history_is_grouped_into_six_hour_buckets_summed_over_workers(db: Any) -> None:
    now = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(seconds=30)
    seed_samples(now, hours=30 * 24)
    rule = AlertRule.objects.create(name="r", metric="ws.error_rate", threshold=1)
    Incident.objects.create(
        rule=rule, title="High error rate", severity="critical", opened_at=now - timedelta(days=3),
        last_seen_at=now, resolved_at=now - timedelta(days=2), status="resolved",
        first_value=1, peak_value=2, last_value=1,
    )  # fmt: skip
    answer = history("month", now)
    assert answer["stepSeconds"] == 6 * 3600
    assert len(answer["times"]) == len(answer["series"]["activeConnections"]) in (120, 121)
    whole = answer["series"]["activeConnections"][5]  # a whole bucket inside the range
    # Two workers with 10 connections each all the time: 20 on average, not 10, not 36 rows' sum.
    assert whole == pytest.approx(20.0)
    # 2 x 600 messages per 10 minutes: 120 a minute.
    assert answer["series"]["messagesPerMinute"][5] == pytest.approx(120.0)
    # 2 errors per 10 minutes over 10 connection attempts: figures.error_rate's 20 %.
    assert answer["series"]["errorRatePercent"][5] == pytest.approx(20.0)
    assert answer["series"]["memoryMb"][5] == pytest.approx(200.0)
    [span] = answer["incidents"]
    assert span["label"] == "High error rate"
    assert span["end"] is not None
    assert span["url"].endswith(f"/admin/monitoring/incident/{span['id']}/change/")


def test_live_figures_are_the_stats_endpoints_totals_and_the_reports_orders(
    db: Any, venue: Venue
) -> None:
    now = timezone.now()
    seed_samples(now, hours=1)
    for number, (total, status) in enumerate(
        [("30.00", OrderStatus.PLACED), ("10.00", OrderStatus.PLACED), ("99.00", "cancelled")]
    ):
        Order.objects.create(
            venue=venue, number=number, table="4", currency="EUR", total=Decimal(total),
            status=status,
        )  # fmt: skip
    live = live_figures(now + timedelta(seconds=1))
    stats = websocket_stats(now + timedelta(seconds=1))
    # The reports' count: the cancelled order is no revenue.
    assert live["orders"] == {
        "ordersPerHour": 2,
        "byCurrency": [{"currency": "EUR", "orders": 2, "revenue": "40.00", "average": "20.00"}],
    }
    assert live["activeConnections"] == stats["activeConnections"] == 20
    assert live["errorRate"] == stats["errorRate"]
    assert live["messagesPerMinute"] == stats["window"]["messagesPerMinute"]
    assert live["http"]["serverErrorPercent"] == pytest.approx(5.0)
    assert live["http"]["avgMs"] == pytest.approx(20.0)
    assert live["http"]["queryAvgMs"] == pytest.approx(2.0)


def test_the_history_endpoint_refuses_a_bad_range_with_field_errors(
    db: Any, staff_user: Any
) -> None:
    client = Client()
    client.force_login(staff_user)
    for query in ("", "?range=year", "?range=hour&step=5"):
        response = client.get(HISTORY + query)
        assert response.status_code == 400, query
        fields = response.json()["error"]["fields"]
        assert fields, query
    assert (
        "hour, day, week, month"
        in client.get(HISTORY + "?range=year").json()["error"]["fields"]["range"][0]
    )
    ok = client.get(HISTORY + "?range=hour")
    assert ok.status_code == 200
    assert len(ok.json()["times"]) in (60, 61)


def test_the_history_endpoint_and_the_page_are_for_staff_only(db: Any, plain_user: Any) -> None:
    anonymous = Client()
    assert anonymous.get(HISTORY + "?range=hour").status_code == 401
    page = anonymous.get("/ops/dashboard/")
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")
    signed_in = Client()
    signed_in.force_login(plain_user)
    assert signed_in.get(HISTORY + "?range=hour").status_code == 403
    assert signed_in.get("/ops/dashboard/")["Location"].startswith("/admin/login/")


def test_staff_see_the_dashboard_page_linked_from_the_admin(db: Any, staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)
    page = client.get("/ops/dashboard/")
    assert page.status_code == 200
    assert b"monitoring/dashboard.js" in page.content
    assert b'href="/ops/dashboard/"' in client.get("/admin/").content


def _socket(cookie: bytes | None) -> PatientCommunicator:
    headers = [(b"cookie", cookie)] if cookie else []
    return PatientCommunicator(build_websocket_application(), "/ws/ops/dashboard/", headers)


@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_socket_refuses_anonymous_and_non_staff_with_documented_codes(
    plain_user: Any,
) -> None:
    anonymous = _socket(None)
    assert (await anonymous.connect())[0] is True
    assert (await anonymous.receive_output())["code"] == 4401
    cookie = await database_sync_to_async(session_cookie_for)(plain_user)
    waiter = _socket(cookie)
    assert (await waiter.connect())[0] is True
    assert (await waiter.receive_output())["code"] == 4403


@pytest.mark.django_db(transaction=True)
async def test_two_dashboard_sockets_of_a_process_share_one_reading_per_tick(
    staff_user: Any, settings: Any
) -> None:
    settings.DASHBOARD_PUSH_SECONDS = 30  # one tick during the test
    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    first, second = _socket(cookie), _socket(cookie)
    assert (await first.connect())[0] is True
    frame = await first.receive_json_from()
    assert frame["type"] == "figures"
    assert [c["name"] for c in frame["components"]][:3] == ["database", "redis", "channel_layer"]
    assert (await second.connect())[0] is True
    assert await second.receive_json_from() == frame  # the same reading, at once
    assert get_feed().frames == 1
    await first.disconnect()
    await second.disconnect()
    assert get_feed().task is None  # the last socket gone, the feed stops


@pytest.mark.django_db(transaction=True)
async def test_an_open_dashboard_closes_when_its_user_signs_out_or_stops_being_staff(
    staff_user: Any, settings: Any
) -> None:
    from django.contrib.sessions.models import Session

    settings.DASHBOARD_PUSH_SECONDS = 30
    settings.DASHBOARD_RECHECK_SECONDS = 0.2
    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    demoted = _socket(cookie)
    assert (await demoted.connect())[0] is True
    assert (await demoted.receive_json_from())["type"] == "figures"
    staff_user.is_staff = False
    await database_sync_to_async(staff_user.save)()
    assert (await demoted.receive_output(timeout=5))["code"] == 4403

    staff_user.is_staff = True
    await database_sync_to_async(staff_user.save)()
    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    signed_out = _socket(cookie)
    assert (await signed_out.connect())[0] is True
    assert (await signed_out.receive_json_from())["type"] == "figures"
    await database_sync_to_async(lambda: Session.objects.all().delete())()
    assert (await signed_out.receive_output(timeout=5))["code"] == 4401
    assert get_feed().task is None  # neither socket is fed any more
