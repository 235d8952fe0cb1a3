"""The screens of bench/reconnect.py: one process running many reference room clients
(orders/room_client.py), spoken to over pipes with JSON lines, as bench/client.py is:

1. the driver writes the spec on stdin: `screens`, a list of [room URLs (one per web process,
   as a balancer would pick), device token], and `heartbeat_seconds`;
2. every client connects; once all of them are live this prints {"event": "ready"};
3. on `stop` the clients stop, and this prints {"event": "result", "clients": [...]}: for each,
   its connects, the epoch time it was live again after its first reconnect, the close codes
   it saw, and the numbers of the events it received, in order.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.client import emit, read_line
from bench.common import raise_nofile_limit
from orders.room_client import RoomClient


class TimedClient(RoomClient):
    back_at: float | None = None

    async def _handle(self, frame: dict[str, Any]) -> None:
        await super()._handle(frame)
        if frame.get("type") == "live" and self.connects > 1 and self.back_at is None:
            self.back_at = time.time()


def summary(client: TimedClient) -> dict[str, Any]:
    return {
        "connects": client.connects,
        "back_at": client.back_at,
        "closes": client.closes,
        "resyncs": client.resyncs,
        "seqs": [frame.get("seq") for frame in client.events],
    }


async def main_async() -> None:
    spec = json.loads(await read_line())
    clients = [
        TimedClient(urls, token, heartbeat_seconds=spec["heartbeat_seconds"])
        for urls, token in spec["screens"]
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in clients)), 120)
    emit({"event": "ready", "seqs": [c.seq for c in clients]})
    command = await read_line()
    if command != "stop":
        raise SystemExit(f"storm client: expected 'stop', got {command!r}")
    for client in clients:
        client.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    emit({"event": "result", "clients": [summary(c) for c in clients]})


def main() -> None:
    raise_nofile_limit()
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
