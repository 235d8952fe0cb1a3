"""A reference client of the venue room (docs/protocol.md), for tests, benchmarks and anyone
writing a kitchen screen: it resumes after every reconnect, waits a random delay before
coming back when the server closed it (1012, 1011) and backs off while refused, and sends
heartbeats.

    client = RoomClient(["ws://web-1/ws/venues/12/", "ws://web-2/ws/venues/12/"], token)
    task = asyncio.create_task(client.run())
    ...  # client.events: every event, once, in order; client.seq: the last one's number

Production code does not import it (an import contract says so); it needs the `websockets`
package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# The server's codes after which coming back is pointless (access ended, no such venue).
FINAL_CLOSE_CODES = frozenset({4401, 4403, 4404})
SERVICE_RESTART = 1012
# "Try again later": a live connection closed with it lost the channel layer (Redis), and so
# did every other connection of its process, at the same moment.
SERVER_ERROR = 1011


@dataclass
class Backoff:
    """Random delays: `restart_spread` wide after a restart (1012) and `cap` wide after the
    server lost Redis under a live connection (1011): every screen of the process comes back
    at once otherwise. A refusal (1011 before the welcome) waits half the cap to all of it.
    Anything else (a dropped connection, a process that does not answer) doubles from `base`
    to `cap`, each delay drawn at random between half and all of it ("equal jitter").

    Without the spread after 1011, the 1,000 screens of a process that lost Redis came back
    within half a second of each other, again and again: the process spent its event loop
    on their handshakes, and /health took 2.4 s to answer (the soak)."""

    # The first retry after a dropped connection waits 1-2 s: a killed process's screens are
    # back within seconds of its restart (bench/reconnect.py).
    base: float = 2.0
    # A screen is back within this long of the service: 2,000 of them retrying every 5-10 s
    # is about 300 handshakes a second, a fifth of what one web process takes
    # (bench/README.md, "Handshakes"); at 30 s, the soak saw screens back 45 s after Redis.
    cap: float = 10.0
    restart_spread: float = 5.0
    attempt: int = 0

    def after_restart(self) -> float:
        self.attempt = 0
        return random.uniform(0, self.restart_spread)  # noqa: S311 -- jitter, not security

    def after_outage(self) -> float:
        """1011 on a live connection: Redis is gone for every screen of the process, and none
        can be served until it is back, so they come back over the whole cap."""
        self.attempt = 0
        return random.uniform(0, self.cap)  # noqa: S311

    def refused(self) -> float:
        """1011 before the welcome: the process is up and cannot serve the room (Redis is
        down). Retrying sooner cannot succeed sooner than Redis comes back, and the refused
        handshakes of a thousand screens retrying at 1-2 s, then 2-4 s, took the process's
        event loop from /health for 3 s in the soak's first seconds of an outage (on a busy
        two-core machine)."""
        return random.uniform(self.cap / 2, self.cap)  # noqa: S311

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class RoomClient:
    urls: Sequence[str]  # the room's URL on each web process (a load balancer's choice)
    token: str
    # Called on `resync`: reload the venue's state (GET /api/v1/venues/<id>/orders) and
    # return the `seq` it is as of; None means start from the live stream.
    reload: Callable[[], Awaitable[int]] | None = None
    heartbeat_seconds: float = 15.0
    backoff: Backoff = field(default_factory=Backoff)
    seq: int | None = None  # the number of the last event had (None: nothing yet)
    events: list[dict[str, Any]] = field(default_factory=list)
    rtt_ms: float | None = None  # the last round trip a ping measured
    connects: int = 0
    connects_live: int = 0  # connections the server welcomed into the room
    open_timeouts: int = 0  # handshakes not answered within the open timeout
    resyncs: int = 0
    closes: list[int | None] = field(default_factory=list)
    live: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Which of `urls` to try next; each reconnect moves on to the next one.
    server_index: int = 0

    def stop(self) -> None:
        self._stop.set()

    def url(self) -> str:
        base = self.urls[self.server_index % len(self.urls)]
        after = "" if self.seq is None else f"&after={self.seq}"
        return f"{base}?token={self.token}{after}"

    async def run(self) -> None:
        """Stay connected until stop(): resume after every reconnect."""
        while not self._stop.is_set():
            welcomes = self.connects_live
            code = await self._session()
            self.closes.append(code)
            if code in FINAL_CLOSE_CODES or self._stop.is_set():
                return
            was_live = self.connects_live > welcomes
            if code == SERVICE_RESTART:
                delay = self.backoff.after_restart()
            elif code == SERVER_ERROR:
                delay = self.backoff.after_outage() if was_live else self.backoff.refused()
            else:
                delay = self.backoff.next()
            self.server_index += 1  # another process, as a balancer would pick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self) -> int | None:
        try:
            ws = await connect(self.url(), open_timeout=10, ping_interval=None, close_timeout=2)
        except TimeoutError:
            # The server may have taken the handshake and sent its welcome after all; that
            # connection is closed unread (its statistics count it and what it sent).
            self.open_timeouts += 1
            return None
        except (OSError, InvalidHandshake):
            return None
        self.connects += 1
        heartbeat = asyncio.create_task(self._heartbeat(ws))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while True:
                receiving = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiving in done:
                    await self._handle(json.loads(receiving.result()))
                if stopping in done:
                    await self._close(ws, None if receiving in done else receiving)
                    return 1000
        except ConnectionClosed as closed:
            self.live.clear()
            return closed.rcvd.code if closed.rcvd is not None else None
        finally:
            heartbeat.cancel()
            stopping.cancel()

    async def _close(self, ws: ClientConnection, receiving: asyncio.Task[Any] | None) -> None:
        """Close, and take what the server sent before it read the close: nothing it sent
        is left unread (its statistics count every frame it sent as sent)."""
        if receiving is not None:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                # A frame that arrived as it was cancelled is not lost.
                await self._handle(json.loads(await receiving))
        await ws.close()
        with contextlib.suppress(ConnectionClosed):
            while True:  # the frames buffered before the close, then ConnectionClosed
                await self._handle(json.loads(await ws.recv()))

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "welcome":
            self.connects_live += 1
            if self.seq is None:
                self.seq = frame["seq"]
                self.live.set()  # a first connect is live at once
            self.backoff.reset()
        elif kind == "event":
            seq = frame.get("seq")
            if seq is not None and self.seq is not None and seq <= self.seq:
                return  # never happens with this server; a client must not trust that
            self.events.append(frame)
            if seq is not None:
                self.seq = seq
        elif kind == "live":
            self.live.set()
        elif kind == "pong" and isinstance(frame.get("ts"), float):
            self.rtt_ms = max(0.0, (time.monotonic() - frame["ts"]) * 1000)
        elif kind == "resync":
            self.resyncs += 1
            self.seq = await self.reload() if self.reload is not None else frame["seq"]
            self.live.set()

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            ping: dict[str, Any] = {"type": "ping", "ts": time.monotonic()}
            if self.rtt_ms is not None:
                ping["rttMs"] = round(min(self.rtt_ms, 60_000.0), 3)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(ping))
