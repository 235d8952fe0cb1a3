"""The whole thing: 500 screens on two web processes, orders placed steadily, one process
killed and replaced meanwhile; every screen ends with every order's event exactly once, in
order (the reference client, orders/room_client.py, as a kitchen screen would run)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve

from orders.models import Venue
from orders.room_client import Backoff, RoomClient
from tests.servers import DaphneServer, ServerGroup, place_order, poll_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

SCREENS = 500
ORDERS_PER_SECOND = 10


def place(server: DaphneServer, venue: Venue, token: str) -> int:
    return int(place_order(server.base_url, venue.pk, token)[0]["number"])


async def all_true(check: Callable[[], bool], seconds: float) -> bool:
    async def fetch() -> bool:
        return check()

    return await poll_until(fetch, bool, seconds, 0.1)


async def test_screens_of_a_killed_process_resume_and_miss_nothing(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    a, b = servers.start(), servers.start()
    room = f"/ws/venues/{venue.pk}/"
    urls = [a.ws_url(room), b.ws_url(room)]  # shared: the replacement is added to it
    # Half on each process; each comes back to the other one first.
    screens = [
        RoomClient(urls, venue_token, heartbeat_seconds=5, server_index=i % 2)
        for i in range(SCREENS)
    ]
    tasks = [asyncio.create_task(screen.run()) for screen in screens]
    try:
        assert await all_true(lambda: all(s.connects for s in screens), 60), "screens joining"
        stop = threading.Event()
        placed: list[int] = []

        def keep_ordering() -> None:
            while not stop.is_set():
                placed.append(place(a, venue, venue_token))
                time.sleep(1 / ORDERS_PER_SECOND)

        ordering = threading.Thread(target=keep_ordering)
        ordering.start()
        try:
            await asyncio.sleep(2)
            b.process.kill()  # SIGKILL: no goodbye, its screens find their sockets dead
            await asyncio.to_thread(b.process.wait)
            c = await asyncio.to_thread(servers.start)
            urls[1] = c.ws_url(room)  # the balancer now sends them to the replacement
            await asyncio.sleep(4)
        finally:
            stop.set()
            await asyncio.to_thread(ordering.join)
        last = len(placed)
        assert last >= 20  # a steady stream across the kill and the restart
        assert await all_true(lambda: all(s.seq == last for s in screens), 60), (
            "screens catching up: "
            + str(sorted({s.seq for s in screens if s.seq != last}, key=lambda x: x or -1)[:10])
        )
    finally:
        for screen in screens:
            screen.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    moved = [s for s in screens if s.connects > 1]
    assert len(moved) >= SCREENS // 2 - 10  # those on the killed process came back
    for screen in screens:
        seqs = [event["seq"] for event in screen.events]
        assert seqs == list(range(1, last + 1)), (screen.connects, seqs[:5], len(seqs))
        assert [event["data"]["number"] for event in screen.events] == list(range(1, last + 1))
        assert screen.resyncs == 0


def test_the_reference_clients_backoff_doubles_with_jitter_up_to_ten_seconds() -> None:
    """A screen refused for a long while (Redis down for minutes) still comes back within
    10 s of the service: the soak saw screens back 45 s after Redis with a 30 s cap."""
    backoff = Backoff()
    delays = [backoff.next() for _ in range(12)]
    assert 1.0 <= delays[0] <= 2.0
    assert 2.0 <= delays[1] <= 4.0
    assert all(5.0 <= d <= 10.0 for d in delays[3:])
    backoff.reset()
    assert backoff.next() <= 2.0


def test_a_refused_screen_waits_half_the_cap_to_all_of_it_and_a_cut_one_the_whole_cap() -> None:
    """Refused (1011 before the welcome: Redis down), a retry sooner than 5 s cannot succeed
    sooner, and a thousand screens retrying at 1-2 s took the process's event loop from
    /health in the soak; cut from a live room (1011), they come back over the whole cap."""
    backoff = Backoff()
    refused = [backoff.refused() for _ in range(200)]
    assert all(5.0 <= d <= 10.0 for d in refused)
    assert min(refused) < 6.0
    assert max(refused) > 9.0
    cut = [backoff.after_outage() for _ in range(200)]
    assert all(0.0 <= d <= 10.0 for d in cut)
    assert min(cut) < 1.0
    assert max(cut) > 9.0
    assert backoff.attempt == 0


@dataclass
class NotedBackoff(Backoff):
    """The reference backoff, noting which delay each reconnect drew (and drawing none)."""

    drawn: list[str] = field(default_factory=list)

    def after_restart(self) -> float:
        self.drawn.append("spread")
        super().after_restart()
        return 0.0

    def after_outage(self) -> float:
        self.drawn.append("outage")
        super().after_outage()
        return 0.0

    def refused(self) -> float:
        self.drawn.append("refused")
        super().refused()
        return 0.0

    def next(self) -> float:
        self.drawn.append("backoff")
        super().next()
        return 0.0


async def test_a_live_screen_told_1011_spreads_its_return_and_a_refused_one_backs_off() -> None:
    """Losing Redis closes every screen of a process with 1011 at once: their first return is
    spread over the cap, or they all came back within half a second, again and again, and the
    process's event loop went to their handshakes. A connection refused with 1011 before its
    welcome waits half the cap or more; a dropped one backs off."""
    closes = [(True, 1011), (False, 1011), (False, 1011), (True, 1012), (True, 1006)]

    async def room(ws: ServerConnection) -> None:
        if not closes:
            await ws.wait_closed()  # stays
            return
        welcome, code = closes.pop(0)
        if welcome:
            await ws.send(json.dumps({"type": "welcome", "seq": 0}))
        if code == 1006:
            ws.transport.abort()  # a dropped connection: no close frame
            return
        await ws.close(code)

    backoff = NotedBackoff()
    async with serve(room, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = RoomClient([f"ws://127.0.0.1:{port}/ws/venues/1/"], "t", backoff=backoff)
        task = asyncio.create_task(client.run())
        assert await all_true(lambda: not closes and client.connects == 6, 10), backoff.drawn
        client.stop()
        await task
    assert backoff.drawn == ["outage", "refused", "refused", "spread", "backoff"]
    assert client.closes[:5] == [1011, 1011, 1011, 1012, None]
