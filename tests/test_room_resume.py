"""A room client that reconnects misses nothing: it says the last event it saw and is sent
what it missed, in order, before anything live; or it is told to reload when that cannot be
done. Driven through the real middleware stack, the Redis layer and the orders API."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import transaction
from django.test import Client
from django.utils import timezone

from inkwave.db import database_sync_to_async
from inkwave.routing import build_websocket_application
from monitoring.alerting.metrics import REGISTRY, Window
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from monitoring.stats import websocket_stats
from orders import events
from orders.models import Order, OrderEvent, Venue
from tests.conftest import PatientCommunicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]

ORDER = {"table": "5", "items": [{"name": "Tea", "quantity": 1, "unitPrice": "2.50"}]}


async def join(venue: Venue, token: str, after: int | str | None = None) -> Any:
    query = f"?token={token}" + ("" if after is None else f"&after={after}")
    comm = PatientCommunicator(build_websocket_application(), f"/ws/venues/{venue.pk}/{query}")
    connected, code = await comm.connect()
    assert connected, code
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome"
    comm.welcome = welcome
    return comm


def place(device: Client, venue: Venue, count: int = 1) -> list[int]:
    """Orders placed through the API, as a device places them; their numbers."""
    numbers = []
    for _ in range(count):
        response = device.post(
            "/api/v1/orders",
            json.dumps({**ORDER, "venue": venue.pk}),
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        numbers.append(response.json()["number"])
    return numbers


async def frames_until(comm: Any, done: Any) -> list[dict[str, Any]]:
    """Frames until `done(frames)`; each must come within the communicator's patience."""
    frames: list[dict[str, Any]] = []
    while not done(frames):
        frames.append(await comm.receive_json_from())
    return frames


async def test_a_client_that_missed_fifty_orders_gets_exactly_those_in_order_then_live(
    venue: Venue, venue_token: str, device: Client, fresh_monitor: WebSocketMonitor
) -> None:
    first = await join(venue, venue_token)
    assert first.welcome["seq"] == 0
    await database_sync_to_async(place)(device, venue)
    (event,) = await frames_until(first, lambda f: len(f) == 1)
    assert (event["event"], event["seq"], event["data"]["number"]) == ("order.placed", 1, 1)
    await first.disconnect()

    await database_sync_to_async(place)(device, venue, 50)  # while the screen is away
    back = await join(venue, venue_token, after=event["seq"])
    assert back.welcome["seq"] == 51
    frames = await frames_until(back, lambda f: f and f[-1]["type"] == "live")
    replayed, live = frames[:-1], frames[-1]
    assert [f["seq"] for f in replayed] == list(range(2, 52))
    assert [f["data"]["number"] for f in replayed] == list(range(2, 52))
    assert all(f["event"] == "order.placed" for f in replayed)
    assert live == {"type": "live", "seq": 51, "replayed": 50}
    await database_sync_to_async(place)(device, venue)
    (next_one,) = await frames_until(back, lambda f: len(f) == 1)
    assert (next_one["seq"], next_one["data"]["number"]) == (52, 52)
    assert await back.receive_nothing(0.2)
    await back.disconnect()
    assert (fresh_monitor.resumes, fresh_monitor.events_replayed, fresh_monitor.resyncs) == (
        1,
        50,
        0,
    )


async def test_a_resume_that_races_live_orders_sends_each_once_and_in_order(
    venue: Venue, venue_token: str, device: Client
) -> None:
    await database_sync_to_async(place)(device, venue, 20)
    stop = threading.Event()

    def keep_placing() -> None:
        while not stop.is_set():
            place(device, venue)

    placer = threading.Thread(target=keep_placing)
    placer.start()
    try:
        await asyncio.sleep(0.2)  # orders are being placed as the screen comes back
        comm = await join(venue, venue_token, after=5)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.to_thread(placer.join)
    last = await database_sync_to_async(
        lambda: Venue.objects.values_list("room_seq", flat=True).get(pk=venue.pk)
    )()
    frames = await frames_until(comm, lambda f: f and f[-1].get("seq") == last)
    events_seen = [f["seq"] for f in frames if f["type"] == "event"]
    assert events_seen == list(range(6, last + 1))  # none twice, none skipped
    live = [i for i, f in enumerate(frames) if f["type"] == "live"]
    assert len(live) == 1
    # What was replayed came before the live marker; everything after it is newer.
    assert all(f["seq"] <= frames[live[0]]["seq"] for f in frames[: live[0]])
    assert all(f["seq"] > frames[live[0]]["seq"] for f in frames[live[0] + 1 :])
    await comm.disconnect()


@pytest.mark.parametrize(
    ("case", "reason"), [("too_many", "too_many"), ("too_old", "too_old"), ("pruned", "pruned"),
                         ("ahead", "unknown")],
)  # fmt: skip
async def test_a_gap_that_cannot_be_replayed_tells_the_client_to_reload(
    venue: Venue,
    venue_token: str,
    device: Client,
    settings: Any,
    fresh_monitor: WebSocketMonitor,
    case: str,
    reason: str,
) -> None:
    settings.ROOM_REPLAY_MAX_EVENTS = 10
    settings.ROOM_REPLAY_MAX_AGE_SECONDS = 600
    after = 2
    if case == "too_old":
        with time_machine.travel(timezone.now() - timedelta(hours=1)):
            await database_sync_to_async(place)(device, venue, 5)
    else:
        await database_sync_to_async(place)(device, venue, 15 if case == "too_many" else 5)
    if case == "pruned":
        await database_sync_to_async(lambda: OrderEvent.objects.filter(seq=3).delete())()
    if case == "ahead":
        after = 99
    comm = await join(venue, venue_token, after=after)
    (frame,) = await frames_until(comm, lambda f: len(f) == 1)
    assert frame == {"type": "resync", "seq": comm.welcome["seq"], "reason": reason}
    # Live from there on: the next order arrives, numbered after the resync's.
    await database_sync_to_async(place)(device, venue)
    (live,) = await frames_until(comm, lambda f: len(f) == 1)
    assert live["seq"] == comm.welcome["seq"] + 1
    await comm.disconnect()
    assert (fresh_monitor.resumes, fresh_monitor.resyncs) == (1, 1)


async def test_a_broadcast_the_connection_missed_is_sent_from_the_record(
    venue: Venue, venue_token: str, device: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    comm = await join(venue, venue_token)
    lost = threading.Event()

    def drop_once(*args: Any, **kwargs: Any) -> bool:
        lost.set()
        return False  # as when Redis did not take it

    with monkeypatch.context() as patch:
        patch.setattr(events, "broadcast_to_venue", drop_once)
        await database_sync_to_async(place)(device, venue)
    assert lost.is_set()
    await database_sync_to_async(place)(device, venue)
    frames = await frames_until(comm, lambda f: len(f) == 2)
    assert [(f["type"], f["seq"]) for f in frames] == [("event", 1), ("event", 2)]
    await comm.disconnect()


async def test_a_broadcast_that_timed_out_reaches_the_room_again_without_a_next_event(
    venue: Venue, venue_token: str, device: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's attack made broadcasts time out, and in a quiet room a screen heard of
    that order only at the next one (up to 39 s late): a failed broadcast is sent again."""
    from orders import broadcast

    comm = await join(venue, venue_token)
    real_send = broadcast._send_event
    failed = threading.Event()

    async def times_out_once(venue_id: int, message: dict[str, Any]) -> None:
        if not failed.is_set():
            failed.set()
            raise TimeoutError
        await real_send(venue_id, message)

    monkeypatch.setattr(broadcast, "_send_event", times_out_once)
    monkeypatch.setattr(broadcast.Retries, "DELAYS", (0.2, 0.2))
    (number,) = await database_sync_to_async(place)(device, venue)
    assert failed.is_set()
    (frame,) = await frames_until(comm, lambda f: len(f) == 1)  # no other order placed
    assert (frame["type"], frame["seq"], frame["data"]["number"]) == ("event", 1, number)
    await comm.disconnect()


async def test_a_resume_frame_mid_connection_and_bad_resumes(
    venue: Venue, venue_token: str, device: Client
) -> None:
    await database_sync_to_async(place)(device, venue, 3)
    comm = await join(venue, venue_token, after="abc")
    (error,) = await frames_until(comm, lambda f: len(f) == 1)
    assert (error["type"], error["code"]) == ("error", "invalid_message")
    for bad in (-1, "2", True, 2.5, None):
        await comm.send_json_to({"type": "resume", "after": bad})
        (error,) = await frames_until(comm, lambda f: len(f) == 1)
        assert (error["type"], error["code"]) == ("error", "invalid_message"), bad
    await comm.send_json_to({"type": "resume", "after": 1})
    frames = await frames_until(comm, lambda f: f and f[-1]["type"] == "live")
    assert [f.get("seq") for f in frames] == [2, 3, 3]
    await comm.disconnect()


def test_the_open_orders_endpoint_gives_a_screen_its_state_and_where_to_resume(
    venue: Venue, device: Client, other_venue: Venue, staff_user: Any
) -> None:
    place(device, venue, 3)
    Order.objects.filter(venue=venue, number=2).update(status="completed")
    with transaction.atomic():
        events.order_changed(
            Order.objects.get(venue=venue, number=1), {"status": ("placed", "ready")}
        )
    body = device.get(f"/api/v1/venues/{venue.pk}/orders").json()
    assert body["venue"] == venue.pk
    assert body["seq"] == 4  # three placed, one change
    assert [o["number"] for o in body["orders"]] == [1, 3]
    assert device.get(f"/api/v1/venues/{other_venue.pk}/orders").status_code == 404
    assert Client().get(f"/api/v1/venues/{venue.pk}/orders").status_code == 401
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get(f"/api/v1/venues/{other_venue.pk}/orders").json()["orders"] == []


def test_resumes_replays_and_resyncs_reach_the_statistics(venue: Venue) -> None:
    monitor = WebSocketMonitor()
    monitor.track_resume(50, resynced=False)
    monitor.track_resume(0, resynced=True)
    recorder = SampleRecorder(WorkerIdentity(role="web"), MonitorSnapshot.empty(monitor.started_at))
    recorder.flush(monitor.snapshot())
    stats = websocket_stats(timezone.now() + timedelta(seconds=1))
    window = stats["window"]
    assert (window["resumes"], window["eventsReplayed"], window["resyncs"]) == (2, 50, 1)
    totals = (stats["totalResumes"], stats["totalEventsReplayed"], stats["totalResyncs"])
    assert totals == (2, 50, 1)
    (per_minute,) = (
        REGISTRY["ws.resyncs_per_minute"].compute(Window(timezone.now() + timedelta(seconds=1), 60))
    ).values()
    assert per_minute == 1.0


def test_saving_a_venue_read_earlier_keeps_its_counters(venue: Venue, device: Client) -> None:
    """The admin's form holds the venue as it was when the page was read; an order placed
    meanwhile must not have its numbers written back over by the save."""
    stale = Venue.objects.get(pk=venue.pk)
    place(device, venue, 2)
    stale.name = "Main Branch (renamed)"
    stale.save()
    venue.refresh_from_db()
    assert (venue.name, venue.order_counter, venue.room_seq) == ("Main Branch (renamed)", 2, 2)
    assert place(device, venue) == [3]


async def test_a_second_resume_within_the_interval_is_a_flood(
    venue: Venue, venue_token: str, device: Client, settings: Any
) -> None:
    settings.WS_RESUME_INTERVAL_SECONDS = 60
    await database_sync_to_async(place)(device, venue, 3)
    comm = await join(venue, venue_token)
    await comm.send_json_to({"type": "resume", "after": 0})
    frames = await frames_until(comm, lambda f: f and f[-1]["type"] == "live")
    assert [f["seq"] for f in frames] == [1, 2, 3, 3]
    await comm.send_json_to({"type": "resume", "after": 0})
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    closed = await comm.receive_output()
    assert (closed["type"], closed["code"]) == ("websocket.close", 4429)
