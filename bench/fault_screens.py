"""The screens of bench/room_faults.py: many reference room clients (orders/room_client.py) in
one process, each writing down what happened to it, spoken to over pipes with JSON lines as
bench/client.py is:

1. the driver writes the spec on stdin: `screens`, a list of [room URLs (one per web process),
   device token, venue id], and `heartbeat_seconds`;
2. every client connects; once all of them are live this prints {"event": "ready"};
3. `status` prints {"event": "status", ...}: per client, whether it is live, its last `seq`, the
   web process (port) it is connected to;
4. `burst <venue>` cuts every connection of that venue's clients at once (the TCP connection
   aborted, no close frame) and each comes back at once: a room emptied and filled again;
5. `stop` stops the clients and prints {"event": "result", "clients": [...]}: for each, every
   event it received (seq, receive time, the frame's sentAt, how it came: live, replayed after a
   resume, or filled in by the server), its closes, its resyncs and its times down and live.

A balancer picks one of the URLs at random for each connection (the reference client takes the
next one in turn; at random, the screens stay spread over both processes however many faults
moved them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.client import emit, read_line
from bench.common import raise_nofile_limit
from orders.room_client import Backoff, RoomClient


@dataclass
class BurstBackoff(Backoff):
    """The reference backoff, except that the delay after a burst's cut is none."""

    now: bool = False

    def next(self) -> float:
        if self.now:
            self.now = False
            return 0.0
        return super().next()


class RecordingClient(RoomClient):
    """The reference client, noting when and how each event, close and resync came."""

    def __init__(self, urls: list[str], token: str, venue: int, heartbeat: float) -> None:
        super().__init__(urls, token, heartbeat_seconds=heartbeat, backoff=BurstBackoff())
        self.venue = venue
        self.received: list[tuple[int | None, float, float, str]] = []
        self.close_log: list[tuple[float, int | None]] = []
        self.resync_log: list[tuple[float, str, int | None, int]] = []
        self.down_at: float | None = None  # since when it is not live (None: live)
        self.outages: list[tuple[float, float]] = []  # (went down, live again)
        self.replaying = False  # between a resume's welcome and its `live`
        self.port: int | None = None
        self.socket: ClientConnection | None = None
        self.welcomes = 0  # connections the server let into the room
        self.frames_in = 0  # every frame received (welcome, events, pongs, errors)
        self.frames_out = 0  # every frame sent (the heartbeat's pings)

    def url(self) -> str:
        self.server_index = random.randrange(len(self.urls))
        url = super().url()
        self.port = int(url.split("/")[2].split(":")[1])
        return url

    async def _session(self) -> int | None:
        code = await super()._session()
        self.socket = None
        now = time.time()
        self.close_log.append((now, code))
        if self.down_at is None:
            self.down_at = now
        self.replaying = False
        return code

    async def _heartbeat(self, ws: ClientConnection) -> None:
        self.socket = ws  # started as soon as the connection is open
        send = ws.send

        async def counted(message: Any) -> None:
            await send(message)
            self.frames_out += 1

        ws.send = counted  # type: ignore[method-assign,assignment]
        await super()._heartbeat(ws)

    def cut(self) -> None:
        """Lose the connection as a Wi-Fi drop does (no close frame), and come back at once."""
        assert isinstance(self.backoff, BurstBackoff)
        self.backoff.now = True
        if self.socket is not None:
            self.socket.transport.abort()

    async def _handle(self, frame: dict[str, Any]) -> None:
        self.frames_in += 1
        kind = frame.get("type")
        now = time.time()
        if kind == "welcome":
            self.welcomes += 1
            # A reconnect resumes: what comes before its `live` (or `resync`) is replayed.
            self.replaying = self.seq is not None
            if not self.replaying:
                self._up(now)
        elif kind == "event":
            how = "replayed" if self.replaying else "live"
            if self.seq is not None and frame.get("seq", 0) > self.seq + 1 and not self.replaying:
                how = "gap"  # a jump: the client would see a hole (never expected)
            self.received.append((frame.get("seq"), now, float(frame.get("sentAt", 0)), how))
        elif kind == "live":
            self.replaying = False
            self._up(now)
        elif kind == "resync":
            self.resync_log.append((now, str(frame.get("reason")), self.seq, int(frame["seq"])))
            self.replaying = False
            self._up(now)
        before = self.seq
        await super()._handle(frame)
        if kind == "event" and self.seq == before:
            # The reference client leaves out what it had already: counted as a double.
            self.received[-1] = (*self.received[-1][:3], "dropped")

    def _up(self, now: float) -> None:
        if self.down_at is not None:
            self.outages.append((self.down_at, now))
            self.down_at = None

    def status(self) -> list[Any]:
        return [self.live.is_set(), self.seq, self.port if self.socket is not None else None]

    def summary(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "connects": self.connects,
            "welcomes": self.welcomes,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "open_timeouts": self.open_timeouts,
            "received": self.received,
            "closes": self.close_log,
            "resyncs": self.resync_log,
            "outages": self.outages,
            "down_since": self.down_at,
        }


async def main_async() -> None:
    spec = json.loads(await read_line())
    clients = [
        RecordingClient(urls, token, venue, spec["heartbeat_seconds"])
        for urls, token, venue in spec["screens"]
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in clients)), 180)
    for client in clients:
        client.down_at = None
    emit({"event": "ready", "seqs": [c.seq for c in clients], "at": time.time()})
    while True:
        command = (await read_line()).split()
        if command[0] == "status":
            emit({"event": "status", "clients": [c.status() for c in clients], "at": time.time()})
        elif command[0] == "burst":
            venue = int(command[1])
            cut = [c for c in clients if c.venue == venue]
            for client in cut:
                client.cut()
            emit({"event": "burst", "cut": len(cut), "at": time.time()})
        elif command[0] == "stop":
            break
    for client in clients:
        client.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    emit({"event": "result", "clients": [c.summary() for c in clients], "at": time.time()})


def main() -> None:
    raise_nofile_limit()
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
