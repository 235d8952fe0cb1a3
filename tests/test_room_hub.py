"""The process's membership of the rooms' groups (orders/hub.py) through what goes wrong:
a leave cut short by cancellation, a group Redis lost, the layer lost during a handshake, a
connection whose inbox is full."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer

from inkwave.db import database_sync_to_async
from monitoring.monitor import WebSocketMonitor
from orders import entry, hub
from orders.broadcast import abroadcast_to_venue
from orders.consumers import INBOX_LIMIT, VenueRoomConsumer
from orders.groups import room_user_group_name, venue_group_name
from orders.hub import get_hub
from orders.models import Venue
from tests.conftest import session_cookie_for
from tests.test_venue_room import communicator, group_members, join

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]


async def members_of(group: str) -> int:
    layer = get_channel_layer()
    async with layer.connection(layer.consistent_hash(group)) as conn:
        return int(await conn.zcard(layer._group_key(group)))


async def test_a_consumer_cancelled_while_it_leaves_still_takes_the_process_out_of_both_groups(
    venue: Venue, staff_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """daphne cancels a consumer every second past its close timeout: a cancel in the
    middle of its leave (a slow Redis) must not keep the process in its user's group."""
    layer_class = type(get_channel_layer())
    real_discard = layer_class.group_discard

    async def slow_discard(self: Any, group: str, channel: str) -> None:
        await asyncio.sleep(1.0)
        await real_discard(self, group, channel)

    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    comm = await join(f"/ws/venues/{venue.pk}/", cookie=cookie)
    user_group = room_user_group_name(staff_user.pk)
    assert await members_of(user_group) == 1
    monkeypatch.setattr(layer_class, "group_discard", slow_discard)
    await comm.send_input({"type": "websocket.disconnect", "code": 1001})
    await asyncio.sleep(0.3)  # inside the first group's discard
    comm.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await comm.future
    assert get_hub().groups == {}
    await asyncio.gather(*get_hub().background)
    assert await members_of(user_group) == 0
    assert await group_members(venue.pk) == 0


async def test_a_group_redis_lost_is_heard_again_within_the_renewal(
    venue: Venue, venue_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis restarted without persistence has no groups; the layer watch only closes
    connections when it stays away. The process joins again at its next renewal."""
    monkeypatch.setattr(hub, "RENEW_SECONDS", 0.5)
    room = await join(f"/ws/venues/{venue.pk}/?token={venue_token}")
    layer = get_channel_layer()
    group = venue_group_name(venue.pk)
    async with layer.connection(layer.consistent_hash(group)) as conn:
        await conn.delete(layer._group_key(group))
    await asyncio.sleep(1.2)
    await abroadcast_to_venue(venue.pk, "order.created", {"number": 9})
    assert (await room.receive_json_from(timeout=3))["data"] == {"number": 9}
    await room.disconnect()


async def test_a_layer_lost_while_a_handshake_is_at_the_door_closes_it_with_1011_once(
    venue: Venue,
    venue_token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_monitor: WebSocketMonitor,
) -> None:
    real = entry.answer_all

    async def lose_the_layer_then_answer(asks: list[entry.Ask]) -> list[entry.Answer]:
        the_hub = get_hub()
        await the_hub._lost(the_hub.groups[venue_group_name(venue.pk)])
        return await real(asks)

    monkeypatch.setattr(entry, "answer_all", lose_the_layer_then_answer)
    comm = communicator(f"/ws/venues/{venue.pk}/?token={venue_token}")
    connected, _ = await comm.connect()
    assert connected
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 1011}
    # Nothing after the close: no second accept (daphne raises on it), no welcome.
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()
    assert not [r for r in caplog.records if "venue_room_failed" in str(r.msg)]
    assert get_hub().groups == {}
    assert fresh_monitor.errors_by_type == {"channel_layer_unavailable": 1}


def test_a_full_inbox_leaves_out_room_events_but_never_an_end_of_access(
    fresh_monitor: WebSocketMonitor,
) -> None:
    async def fill() -> VenueRoomConsumer:
        consumer = VenueRoomConsumer()
        consumer.monitor = fresh_monitor
        consumer.inbox = asyncio.Queue()
        for seq in range(INBOX_LIMIT + 1):
            consumer.deliver({"type": "venue.event", "seq": seq})
        consumer.deliver({"type": "access.recheck", "token": 3})
        return consumer

    consumer = asyncio.run(fill())
    assert consumer.inbox.qsize() == INBOX_LIMIT + 1
    assert consumer.inbox._queue[-1] == {"type": "access.recheck", "token": 3}  # type: ignore[attr-defined]
    assert fresh_monitor.errors_by_type == {"room_inbox_full": 1}


async def test_a_membership_ended_leaves_nothing_in_the_layers_buffers() -> None:
    """channels-redis buffers what another receive took off the process's list for a channel;
    an entry for a channel nobody reads any more would stay for good."""
    layer = get_channel_layer()
    joined = hub.Joined("venue.999999")
    joined.channel = await layer.new_channel()
    await layer.group_add(joined.group, joined.channel)
    # As if another room's receive had taken an event for this channel meanwhile:
    layer.receive_buffer[joined.channel].put_nowait({"type": "venue.event", "seq": 1})
    await get_hub()._part(joined)
    assert joined.channel not in layer.receive_buffer
    assert await members_of(joined.group) == 0


class Screen:
    def deliver(self, message: dict[str, Any]) -> None:
        pass

    async def layer_lost(self) -> None:
        pass


async def test_once_the_layer_fails_new_groups_are_tried_once_a_second_not_per_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every screen of a process that lost Redis comes back and asks to join, several times
    while it is down: one try a second finds out when Redis is back, the rest are refused
    at once (each try cost two connection attempts, and their handshakes took the event
    loop from /health)."""
    layer_class = type(get_channel_layer())
    real_add = layer_class.group_add
    tries: list[str] = []

    async def refused(self: Any, group: str, channel: str) -> None:
        tries.append(group)
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(hub, "JOIN_PROBE_SECONDS", 0.2)
    monkeypatch.setattr(layer_class, "group_add", refused)
    the_hub = get_hub()
    assert await the_hub.enter("venue.1", Screen()) is False
    assert await the_hub.enter("venue.2", Screen()) is False
    assert await the_hub.enter("venue.3", Screen()) is False
    assert tries == ["venue.1"]

    await asyncio.sleep(0.25)
    assert await the_hub.enter("venue.2", Screen()) is False  # this interval's try
    assert await the_hub.enter("venue.3", Screen()) is False
    assert tries == ["venue.1", "venue.2"]

    monkeypatch.setattr(layer_class, "group_add", real_add)  # Redis is back
    await asyncio.sleep(0.25)
    first, second = Screen(), Screen()
    assert await the_hub.enter("venue.3", first) is True
    assert await the_hub.enter("venue.4", second) is True  # at once: the layer works
    the_hub.leave("venue.3", first)
    the_hub.leave("venue.4", second)
    await asyncio.gather(*the_hub.background)
    await asyncio.gather(*([the_hub.leaving] if the_hub.leaving else []))
