"""The venue room consumer, driven through the real middleware stack and the Redis layer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone

from inkwave.db import database_sync_to_async
from inkwave.routing import build_websocket_application
from monitoring.monitor import WebSocketMonitor
from orders.broadcast import abroadcast_to_venue
from orders.groups import venue_group_name
from orders.models import Venue, VenueAccessToken
from tests.conftest import PatientCommunicator, session_cookie_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]


def communicator(
    path: str, *, origin: bytes | None = None, cookie: bytes | None = None
) -> WebsocketCommunicator:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return PatientCommunicator(build_websocket_application(), path, headers=headers)


async def join(path: str, **kwargs: Any) -> WebsocketCommunicator:
    comm = communicator(path, **kwargs)
    connected, code = await comm.connect()
    assert connected, code
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome"
    return comm


async def refused_with(path: str, **kwargs: Any) -> int:
    comm = communicator(path, **kwargs)
    connected, _ = await comm.connect()
    assert connected  # accepted so that the browser sees the close code
    output = await comm.receive_output()
    assert output["type"] == "websocket.close"
    await comm.disconnect()  # the client's side of the close: the consumer ends
    return int(output["code"])


async def group_members(venue_id: int) -> int:
    layer = get_channel_layer()
    async with layer.connection(layer.consistent_hash(venue_group_name(venue_id))) as conn:
        return int(await conn.zcard(layer._group_key(venue_group_name(venue_id))))


@pytest.fixture
async def room(venue: Venue, venue_token: str) -> AsyncIterator[WebsocketCommunicator]:
    comm = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    yield comm
    await comm.disconnect()


async def test_a_device_token_joins_its_venue_room_and_receives_broadcasts(
    venue: Venue, room: WebsocketCommunicator, fresh_monitor: WebSocketMonitor
) -> None:
    await abroadcast_to_venue(venue.pk, "order.created", {"number": 1234})
    frame = await room.receive_json_from()
    assert frame["type"] == "event"
    assert frame["event"] == "order.created"
    assert frame["data"] == {"number": 1234}
    assert fresh_monitor.delivery.count == 1
    assert fresh_monitor.rooms == {venue_group_name(venue.pk): 1}
    assert fresh_monitor.messages_sent == 2  # welcome + event


async def test_broadcasts_stay_in_their_venue(
    venue: Venue, other_venue: Venue, room: WebsocketCommunicator
) -> None:
    await abroadcast_to_venue(other_venue.pk, "order.created", {"number": 1})
    assert await room.receive_nothing(timeout=0.3)


async def test_a_staff_session_sees_every_venue(
    venue: Venue, other_venue: Venue, staff_user: Any
) -> None:
    third = await Venue.objects.acreate(name="Riverside", slug="riverside")
    venues = [venue, other_venue, third]
    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    # A member of none of them, the staff user joins every room and hears each one's events.
    assert not await Venue.objects.filter(members=staff_user).aexists()
    rooms = [await join(f"/ws/venues/{v.pk}/", cookie=cookie) for v in venues]
    for v in venues:
        assert await group_members(v.pk) == 1
        await abroadcast_to_venue(v.pk, "order.created", {"venue": v.pk})
    for v, comm in zip(venues, rooms, strict=True):
        frame = await comm.receive_json_from()
        assert (frame["event"], frame["data"]) == ("order.created", {"venue": v.pk})
        assert await comm.receive_nothing(timeout=0.1)  # and no other room's
        await comm.disconnect()


async def test_a_member_joins_but_a_non_member_is_forbidden(venue: Venue, plain_user: Any) -> None:
    cookie = await database_sync_to_async(session_cookie_for)(plain_user)
    assert await refused_with(f"/ws/venues/{venue.pk}/", cookie=cookie) == 4403
    await database_sync_to_async(venue.members.add)(plain_user)
    comm = await join(f"/ws/venues/{venue.pk}/", cookie=cookie)
    await comm.disconnect()


async def test_refusals_use_documented_close_codes_and_never_join_the_group(
    venue: Venue, other_venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor
) -> None:
    assert await refused_with(f"/ws/venues/{venue.pk}/") == 4401
    assert await refused_with(f"/ws/venues/{venue.pk}/?token=iwv_wrong") == 4401
    assert await refused_with(f"/ws/venues/999999/?token={venue_token}") == 4404
    assert await refused_with(f"/ws/venues/{other_venue.pk}/?token={venue_token}") == 4403
    assert await refused_with("/ws/somewhere/else/") == 4404
    assert await group_members(venue.pk) == 0
    assert await group_members(other_venue.pk) == 0
    assert fresh_monitor.rejected_connections == 5
    assert fresh_monitor.connections == 0
    assert fresh_monitor.errors_by_type == {"unauthenticated": 2, "not_found": 2, "forbidden": 1}


async def test_a_revoked_token_or_inactive_venue_is_refused(
    venue: Venue, other_venue: Venue, venue_token: str
) -> None:
    await VenueAccessToken.objects.filter(venue=venue).aupdate(revoked_at=timezone.now())
    assert await refused_with(f"/ws/venues/{venue.pk}/?token={venue_token}") == 4401
    _, fresh = await database_sync_to_async(VenueAccessToken.issue)(venue, "Tablet")
    await Venue.objects.filter(pk=venue.pk).aupdate(is_active=False)
    # As documented: the token is valid, its venue is not there (any more).
    assert await refused_with(f"/ws/venues/{venue.pk}/?token={fresh}") == 4404
    # It still opens no other venue's room.
    assert await refused_with(f"/ws/venues/{other_venue.pk}/?token={fresh}") == 4403


async def test_a_token_records_when_it_was_last_used(venue: Venue, venue_token: str) -> None:
    comm = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    await comm.disconnect()
    token = await VenueAccessToken.objects.aget(venue=venue)
    assert token.last_used_at is not None


async def test_origins_outside_allowed_hosts_are_refused_at_the_handshake(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor
) -> None:
    path = f"/ws/venues/{venue.pk}/?token={venue_token}"
    comm = communicator(path, origin=b"https://evil.example")
    connected, _ = await comm.connect()
    assert not connected  # closed before accept: the server answers the handshake with 403
    assert fresh_monitor.errors_by_type == {"origin_rejected": 1}
    ok = await join(path, origin=b"http://localhost:8000")
    await ok.disconnect()
    # Kitchen screens and native apps send no Origin at all.
    ok = await join(path)
    await ok.disconnect()


async def test_ping_is_answered_with_pong_echoing_the_timestamp(
    room: WebsocketCommunicator, fresh_monitor: WebSocketMonitor
) -> None:
    await room.send_json_to({"type": "ping", "ts": 1700000000123, "rttMs": 12.5})
    pong = await room.receive_json_from()
    assert pong["type"] == "pong"
    assert pong["ts"] == 1700000000123
    assert isinstance(pong["serverTime"], float)
    assert fresh_monitor.round_trip.count == 1
    assert fresh_monitor.round_trip.total == 12.5


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"kind": "ping"}', "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "ping", "rttMs": "fast"}', "invalid_message"),
        ('{"type": "ping", "rttMs": -5}', "invalid_message"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_lives_on(
    room: WebsocketCommunicator, fresh_monitor: WebSocketMonitor, frame: str, code: str
) -> None:
    await room.send_to(text_data=frame)
    error = await room.receive_json_from()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    assert fresh_monitor.errors_by_type == {code: 1}
    await room.send_json_to({"type": "ping", "ts": 1})
    assert (await room.receive_json_from())["type"] == "pong"


async def test_binary_and_oversized_frames_are_errors(
    room: WebsocketCommunicator, fresh_monitor: WebSocketMonitor
) -> None:
    await room.send_to(bytes_data=b"\x00\x01")
    assert (await room.receive_json_from())["code"] == "binary_not_supported"
    await room.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 70_000}))
    assert (await room.receive_json_from())["code"] == "frame_too_large"
    # Multi-byte characters count as bytes, not characters.
    await room.send_to(text_data=json.dumps({"type": "ping", "pad": "€" * 30_000}))
    assert (await room.receive_json_from())["code"] == "frame_too_large"
    assert (fresh_monitor.client_errors, fresh_monitor.errors) == (3, 0)


@override_settings(WS_RATE_LIMIT_PER_SECOND=1.0, WS_RATE_LIMIT_BURST=5)
async def test_a_client_over_its_message_rate_is_closed_with_4429(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor
) -> None:
    comm = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    for _ in range(5):
        await comm.send_json_to({"type": "ping"})
        assert (await comm.receive_json_from())["type"] == "pong"
    await comm.send_json_to({"type": "ping"})
    error = await comm.receive_json_from()
    assert error["code"] == "rate_limited"
    closing = await comm.receive_output()
    assert closing == {"type": "websocket.close", "code": 4429}
    assert fresh_monitor.errors_by_type == {"rate_limited": 1}
    await comm.disconnect()
    assert await group_members(venue.pk) == 0


async def test_a_process_is_in_a_rooms_group_once_while_any_of_its_connections_is(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor
) -> None:
    """One membership per process (orders/hub.py), however many of its screens are in."""
    first = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    second = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    assert await group_members(venue.pk) == 1
    await first.disconnect()
    assert await group_members(venue.pk) == 1
    assert fresh_monitor.rooms == {venue_group_name(venue.pk): 1}
    await abroadcast_to_venue(venue.pk, "order.created", {"number": 7})
    assert (await second.receive_json_from())["data"] == {"number": 7}
    await second.disconnect()
    assert await group_members(venue.pk) == 0
    assert fresh_monitor.rooms == {}
    assert (fresh_monitor.connections, fresh_monitor.disconnections) == (2, 2)
    assert fresh_monitor.active_connections == 0


async def test_a_screen_connected_longer_than_the_group_expiry_still_hears_its_room(
    venue: Venue, venue_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """channels-redis leaves out of group_send a member whose join is older than the group
    expiry (a day when deployed): the process renews its membership well before."""
    import asyncio

    monkeypatch.setattr(get_channel_layer(), "group_expiry", 2)
    room = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    await asyncio.sleep(3)  # past the expiry of the first join
    await abroadcast_to_venue(venue.pk, "order.created", {"number": 8})
    assert (await room.receive_json_from(timeout=3))["data"] == {"number": 8}
    await room.disconnect()


async def test_revoking_a_token_closes_its_open_connections(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor
) -> None:
    _, other = await database_sync_to_async(VenueAccessToken.issue)(venue, "Bar tablet")
    revoked = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    kept = await join(f"/ws/venues/{venue.pk}/?token={other}")

    def revoke() -> None:
        token = VenueAccessToken.objects.get(name="Kitchen screen")
        token.revoked_at = timezone.now()
        token.save()

    await database_sync_to_async(revoke)()
    assert await revoked.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}
    assert await kept.receive_nothing(timeout=0.3)
    assert fresh_monitor.errors_by_type == {"access_revoked": 1}
    await revoked.disconnect()
    await kept.disconnect()


async def test_a_person_removed_from_a_venue_is_disconnected(venue: Venue, plain_user: Any) -> None:
    await database_sync_to_async(venue.members.add)(plain_user)
    cookie = await database_sync_to_async(session_cookie_for)(plain_user)
    comm = await join(f"/ws/venues/{venue.pk}/", cookie=cookie)
    await database_sync_to_async(venue.members.remove)(plain_user)
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()


async def test_a_consumer_cancelled_while_joining_leaves_no_member_in_the_group(
    venue: Venue, venue_token: str, fresh_monitor: WebSocketMonitor, monkeypatch: Any
) -> None:
    """Daphne cancels a consumer whose handshake it gave up on (a burst of reconnects): if
    Redis had already added it to the room, it must still leave, or every broadcast is queued
    for a ghost until the group expires."""
    import asyncio

    layer_class = type(get_channel_layer())
    joined = asyncio.Event()
    real_group_add = layer_class.group_add

    async def add_then_stall(self: Any, group: str, channel: str) -> None:
        await real_group_add(self, group, channel)
        joined.set()
        await asyncio.sleep(30)  # the reply from Redis "never comes back" before the cancel

    monkeypatch.setattr(layer_class, "group_add", add_then_stall)
    comm = communicator(f"/ws/venues/{venue.pk}/?token={venue_token}")
    await comm.send_input({"type": "websocket.connect"})
    await asyncio.wait_for(joined.wait(), 10)
    assert await group_members(venue.pk) == 1
    comm.future.cancel()  # what daphne's application checker does
    with pytest.raises(asyncio.CancelledError):
        await comm.future
    monkeypatch.undo()
    assert await group_members(venue.pk) == 0
    # It was never accepted, so it was never counted: nothing to count as its end either.
    assert (fresh_monitor.connections, fresh_monitor.disconnections) == (0, 0)
    assert fresh_monitor.active_connections == 0


async def test_a_handler_that_fails_answers_an_error_frame_and_its_line_names_the_connection(
    venue: Venue,
    venue_token: str,
    fresh_monitor: WebSocketMonitor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from orders.consumers import VenueRoomConsumer

    async def broken(self: VenueRoomConsumer, message: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(VenueRoomConsumer, "on_ping", broken)
    comm = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    await comm.send_json_to({"type": "ping"})
    frame = await comm.receive_json_from()
    assert (frame["type"], frame["code"]) == ("error", "internal_error")
    await comm.send_json_to({"type": "resume", "after": 0})  # the connection lives on
    assert (await comm.receive_json_from())["type"] == "live"
    await comm.disconnect()
    (line,) = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg["event"] == "venue_room_frame_failed"
    ]
    assert line["venue"] == venue.pk
    assert len(line["connection"]) == 12
    assert fresh_monitor.errors_by_type == {"internal_error": 1}
