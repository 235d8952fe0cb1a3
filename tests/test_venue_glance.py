"""A venue at a glance: screens online (recorded per web process at its flush, summed over the
processes) and orders per hour against the same hours a week before."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import ClientConnection, connect

from inkwave.db import database_sync_to_async
from monitoring import screens
from monitoring.models import VenueScreenSample, WebSocketSample, Worker
from monitoring.pruning import prune_all_samples
from orders.hub import screens_per_venue
from orders.models import Order, Venue
from orders.pictures import venue_day
from tests.servers import DaphneServer, ServerGroup, poll_until
from tests.test_venue_room import join

LONDON = ZoneInfo("Europe/London")
# A Wednesday evening in June (British summer time: UTC+1).
NOW = datetime(2026, 6, 10, 19, 50, tzinfo=LONDON)


def worker(name: str) -> Worker:
    return Worker.objects.create(
        name=name, hostname="h", pid=1, started_at=NOW - timedelta(hours=20), last_seen_at=NOW
    )


def run_flushes(
    recorders: dict[Worker, tuple[screens.ScreenRecorder, Any]],
    start: datetime,
    end: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every 10 s, each process flushes with what its rooms hold then (counts(at))."""
    at = start
    while at <= end:
        for process, (recorder, counts) in recorders.items():
            monkeypatch.setattr(screens, "_counter", lambda counts=counts, at=at: counts(at))
            sample = WebSocketSample.objects.create(
                worker=process, recorded_at=at, interval_seconds=10
            )
            recorder.flush(sample)
        at += timedelta(seconds=10)


@pytest.mark.django_db
def test_screens_of_two_processes_add_up_and_a_dropped_screen_shows_when_it_dropped(
    venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = worker("web-a"), worker("web-b")
    dropped_at = datetime(2026, 6, 10, 19, 40, 25, tzinfo=LONDON)
    recorders = {
        # Two screens on process a all evening; the kitchen screen on b until 19:40:25.
        a: (screens.ScreenRecorder(), lambda at: {venue.pk: 2, 999: 1}),
        b: (screens.ScreenRecorder(), lambda at: {venue.pk: 1} if at < dropped_at else {}),
    }
    run_flushes(recorders, NOW - timedelta(minutes=20), NOW, monkeypatch)
    online = dict(screens.screens_over(venue.pk, NOW - timedelta(minutes=20), NOW))
    at = lambda minute: datetime(2026, 6, 10, 19, minute, tzinfo=LONDON)  # noqa: E731
    assert [online[at(m)] for m in range(31, 40)] == [3] * 9
    assert online[at(40)] == 2  # the minute it dropped in
    assert [online[at(m)] for m in range(41, 50)] == [2] * 9
    assert screens.screens_now(venue.pk, NOW) == 2
    # Not a row per flush: a count is written when it changes and every 30 s.
    flushes = 2 * (20 * 6 + 1)
    assert VenueScreenSample.objects.filter(venue_id=venue.pk).count() < flushes / 2
    # Process a dies: once it is no longer live its screens are gone from "now".
    Worker.objects.filter(pk=a.pk).update(last_seen_at=NOW - timedelta(minutes=5))
    assert screens.screens_now(venue.pk, NOW) == 0


@pytest.mark.django_db
def test_screen_counts_are_pruned_with_the_samples(venue: Venue) -> None:
    process = worker("web-a")
    old = NOW - timedelta(days=30)
    screens.record(process.pk, old, {venue.pk: 1})
    screens.record(process.pk, NOW, {venue.pk: 2})
    prune_all_samples(NOW)
    assert list(VenueScreenSample.objects.values_list("screens", flat=True)) == [2]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_client")
async def test_the_process_counts_the_screens_in_each_venue_room(
    venue: Venue, venue_token: str
) -> None:
    kitchen = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    bar = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    assert screens_per_venue() == {venue.pk: 2}
    await bar.disconnect()
    assert screens_per_venue() == {venue.pk: 1}
    await kitchen.disconnect()
    assert screens_per_venue() == {}


def place(venue: Venue, at: datetime, number: int) -> None:
    order = Order.objects.create(
        venue=venue, number=number, table="5", currency="GBP", total=Decimal("12.50")
    )
    Order.objects.filter(pk=order.pk).update(created_at=at)


def hour(days_ago: int, h: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, 10 - days_ago, h, minute, tzinfo=LONDON)


@pytest.mark.django_db
def test_orders_per_hour_today_against_the_same_hours_a_week_before(venue: Venue) -> None:
    numbers = iter(range(1, 100))
    for at in (hour(0, 12, 5), hour(0, 12, 40), hour(0, 12, 59), hour(0, 18, 30)):
        place(venue, at, next(numbers))
    for at in (hour(7, 12, 10), hour(7, 19, 10), hour(7, 19, 55), hour(7, 21, 0)):
        place(venue, at, next(numbers))
    place(venue, hour(0, 0, 0) - timedelta(minutes=1), next(numbers))  # yesterday, 23:59
    place(venue, hour(1, 12, 0), next(numbers))  # yesterday: not a week before
    day = venue_day(venue, NOW)
    chart = day.orders
    assert chart["times"][0] == int(hour(0, 0).timestamp())
    assert len(chart["times"]) == 20  # the hours 00:00 .. 19:00 so far
    today, week_before = chart["series"]
    assert today["values"][12] == 3
    assert today["values"][18] == 1
    assert sum(v or 0 for v in today["values"]) == 4 == day.orders_today
    assert week_before["label"] == "Wednesday 3 June"
    assert week_before["values"][12] == 1
    assert week_before["values"][19] == 2  # the whole hour, to set against this one
    assert sum(v or 0 for v in week_before["values"]) == 3  # 21:00 is later than now
    assert day.orders_last_week == 2  # by 19:50 a week ago: 12:10 and 19:10


@pytest.mark.django_db
def test_the_glance_page_is_linked_from_the_venue_and_shows_both_charts(
    admin_client: Client, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = worker("web-a")
    screens.record(process.pk, NOW - timedelta(seconds=5), {venue.pk: 2})
    place(venue, NOW - timedelta(minutes=30), 1)
    change = admin_client.get(f"/admin/orders/venue/{venue.pk}/change/").content.decode()
    assert f'href="/admin/orders/venue/{venue.pk}/glance/"' in change
    with time_machine.travel(NOW.astimezone(UTC), tick=False):
        page = admin_client.get(f"/admin/orders/venue/{venue.pk}/glance/").content.decode()
    assert '<span id="screens-now">2</span>' in page
    assert '<span id="orders-today">1</span>' in page
    for chart in ("screens-chart-data", "orders-chart-data"):
        found = re.search(rf'<script id="{chart}" type="application/json">(.*?)</script>', page)
        assert found, chart
        assert json.loads(found.group(1))["times"]


@pytest.mark.django_db
def test_only_staff_see_a_venue_at_a_glance(client: Client, venue: Venue, plain_user: Any) -> None:
    client.force_login(plain_user)
    response = client.get(f"/admin/orders/venue/{venue.pk}/glance/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


async def screens_seen(venue_id: int) -> dict[str, Any]:
    return {"now": await database_sync_to_async(screens.screens_now)(venue_id, timezone.now())}


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
async def test_two_web_processes_report_one_venue_total_and_the_drop(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    """Real daphne processes, real sockets: their flushers read their own rooms' counts."""
    first, second = servers.start(), servers.start()
    path = f"/ws/venues/{venue.pk}/?token={venue_token}"
    kitchen, bar = await screen(first, path), await screen(first, path)
    till = await screen(second, path)
    seen = await poll_until(lambda: screens_seen(venue.pk), lambda s: s == {"now": 3}, 15, 0.1)
    assert seen == {"now": 3}
    await till.close()
    seen = await poll_until(lambda: screens_seen(venue.pk), lambda s: s == {"now": 2}, 15, 0.1)
    assert seen == {"now": 2}
    # The second process wrote the drop as a 0 for the venue, once.
    zeros = VenueScreenSample.objects.filter(venue_id=venue.pk, screens=0)
    assert await database_sync_to_async(zeros.count)() == 1
    await kitchen.close()
    await bar.close()


async def screen(server: DaphneServer, path: str) -> ClientConnection:
    ws = await connect(server.ws_url(path), open_timeout=15, ping_interval=None)
    assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "welcome"
    return ws
