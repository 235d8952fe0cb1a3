"""The whole thing: 500 screens on two web processes, orders placed steadily, one process
killed and replaced meanwhile; every screen ends with every order's event exactly once, in
order (the reference client, orders/room_client.py, as a kitchen screen would run)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

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
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(5.0 <= d <= 10.0 for d in delays[6:])
    backoff.reset()
    assert backoff.next() <= 0.5
