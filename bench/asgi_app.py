"""The project's ASGI application plus one bench-only HTTP path, for the benchmark's server.

    POST /bench/broadcast?venue=<id>&n=<count>&interval=<seconds>&first=<index>

calls orders.broadcast.abroadcast_to_venue `n` times inside the server process, one call every
`interval` seconds on a fixed timetable (0: back to back), with data {"i": first + k}. The
in-memory channel layer only reaches consumers of its own process, so this is the only honest
way to broadcast on it; the benchmark uses the same path on Redis so that both are comparable.

    ws://.../bench/ws/bare/

is a bare channels consumer on the same channel layer: it accepts and sends one small welcome
frame, and nothing else (no origin check, no authentication, no group). bench/handshakes.py
measures the venue room's handshakes against it, on the same server in the same run.
Everything else goes to inkwave.asgi.application unchanged. Never deploy this module.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from bench.broadcaster import broadcast_on_timetable
from inkwave.asgi import application as inkwave_application

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BROADCAST_PATH = "/bench/broadcast"
BARE_PATH = "/bench/ws/bare/"
MAX_BROADCASTS = 100_000


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _broadcast(scope: Scope, receive: Receive, send: Send) -> None:
    # Drain the request body (there is none that matters).
    while (await receive()).get("more_body"):
        pass
    if scope["method"] != "POST":
        await _respond(send, 405, {"error": "POST only"})
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    try:
        venue = int(query["venue"][0])
        count = int(query.get("n", ["1"])[0])
        interval = float(query.get("interval", ["0"])[0])
        first = int(query.get("first", ["0"])[0])
    except (KeyError, ValueError):
        await _respond(send, 400, {"error": "venue (int), n (int), interval (float) expected"})
        return
    if not 0 < count <= MAX_BROADCASTS or not 0 <= interval <= 10:
        await _respond(send, 400, {"error": "n or interval out of range"})
        return
    await _respond(send, 200, await broadcast_on_timetable(venue, count, interval, first))


class BareConsumer(AsyncWebsocketConsumer):
    """The least a channels consumer does: accept, and say so in a frame."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data='{"type":"welcome"}')


bare_consumer = BareConsumer.as_asgi()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == BROADCAST_PATH:
        await _broadcast(scope, receive, send)
        return
    if scope["type"] == "websocket" and scope["path"] == BARE_PATH:
        await bare_consumer(scope, receive, send)
        return
    await inkwave_application(scope, receive, send)
