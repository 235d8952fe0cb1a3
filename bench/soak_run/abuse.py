"""The soak's attackers: bad API requests by the thousand, and a WebSocket client that sends
garbage, oversized frames and floods. Each writes down every answer, so the report can say
that every bad request got a 4xx with a clear error and none a 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import websockets

from bench.common import host_of

HUGE = 3 * 1024 * 1024  # over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
HUGE_EVERY = 100  # one request in so many is a huge body (3 MB each is a lot of loopback)

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


def _order(venue: int, **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "venue": venue,
        "table": "T1",
        "items": [{"name": "Margherita", "quantity": 1, "unitPrice": "12.50"}],
    }
    body.update(changes)
    return json.dumps(body).encode()


def bad_requests(venue: int, token: str) -> list[tuple[str, Callable[[], Request]]]:
    """(kind, a function making one such request): each kind must be answered with a 4xx."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    item = {"name": "X", "quantity": 1, "unitPrice": "1.00"}
    return [
        ("malformed JSON", lambda: ("POST", "/api/v1/orders", b'{"venue": 1, "items": [', auth)),
        ("not an object", lambda: ("POST", "/api/v1/orders", b"[1, 2, 3]", auth)),
        ("quantity a string", lambda: ("POST", "/api/v1/orders", _order(venue, items=[
            {"name": "X", "quantity": "two", "unitPrice": "1.00"}]), auth)),
        ("negative price", lambda: ("POST", "/api/v1/orders", _order(venue, items=[
            {"name": "X", "quantity": 1, "unitPrice": "-5"}]), auth)),
        ("items not a list", lambda: ("POST", "/api/v1/orders", _order(venue, items="pizza"),
                                      auth)),
        ("too many items", lambda: ("POST", "/api/v1/orders", _order(venue, items=[item] * 101),
                                    auth)),
        ("unknown field", lambda: ("POST", "/api/v1/orders", _order(venue, admin=True), auth)),
        ("unknown venue", lambda: ("POST", "/api/v1/orders", _order(987654321), auth)),
        ("venue a string", lambda: ("POST", "/api/v1/orders", _order("12; DROP TABLE"), auth)),  # type: ignore[arg-type]
        ("no token", lambda: ("POST", "/api/v1/orders", _order(venue),
                              {"Content-Type": "application/json"})),
        ("wrong token", lambda: ("POST", "/api/v1/orders", _order(venue),
                                 dict(auth, Authorization="Bearer not-a-token"))),
        ("wrong content type", lambda: ("POST", "/api/v1/orders", b"venue=1",
                                        dict(auth, **{"Content-Type": "text/plain"}))),
        ("control characters", lambda: ("POST", "/api/v1/orders", _order(venue, table="a\x00b"),
                                        auth)),
        ("unknown order", lambda: ("GET", "/api/v1/orders/999999999", b"", auth)),
        ("bad status", lambda: ("PATCH", "/api/v1/orders/999999999",
                                b'{"status": "eaten"}', auth)),
        ("huge body", lambda: ("POST", "/api/v1/orders",
                               b'{"venue": 1, "table": "' + b"x" * HUGE + b'"}', auth)),
        ("unknown path", lambda: ("GET", "/api/v1/../../etc/passwd", b"", auth)),
        ("stats without a token", lambda: ("GET", "/api/v1/monitoring/websocket/stats", b"",
                                           {})),
    ]  # fmt: skip


@dataclass
class Answer:
    kind: str
    status: int | None  # None: no answer
    clear: bool  # a JSON {"error": {"code", "message"}} (or a plain 413 before Django reads)
    seconds: float


@dataclass
class BadRequests:
    """`total` bad requests over both web processes, `threads` at a time, keep-alive."""

    ports: list[int]
    venue: int
    token: str
    total: int = 20_000
    threads: int = 8
    hosts: dict[int, str] = field(default_factory=dict)  # port -> address, where not loopback
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = 0.0
    ended: float = 0.0

    def run(self) -> None:
        """Sends them all (blocking; bounded by `total` and a 10 s timeout a request)."""
        kinds = bad_requests(self.venue, self.token)
        self.started = time.time()
        per_thread = self.total // self.threads
        with ThreadPoolExecutor(self.threads, thread_name_prefix="bad") as pool:
            for t in range(self.threads):
                pool.submit(self._worker, t, per_thread, kinds)
        self.ended = time.time()

    def _worker(
        self, index: int, count: int, kinds: list[tuple[str, Callable[[], Request]]]
    ) -> None:
        port = self.ports[index % len(self.ports)]
        conn: http.client.HTTPConnection | None = None
        [huge] = [k for k in kinds if k[0] == "huge body"]
        others = [k for k in kinds if k[0] != "huge body"]
        for n in range(count):
            if self.stop.is_set():
                return
            if n % HUGE_EVERY == HUGE_EVERY - 1:
                kind, make = huge
            else:
                kind, make = others[(index + n * self.threads) % len(others)]
            method, path, body, headers = make()
            if conn is None:
                conn = http.client.HTTPConnection(host_of(self.hosts, port), port, timeout=10)
            began = time.monotonic()
            status, clear = None, False
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                status, clear = response.status, _clear(response.status, raw)
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                port = self.ports[(self.ports.index(port) + 1) % len(self.ports)]
            with self.lock:
                self.answers.append(Answer(kind, status, clear, time.monotonic() - began))
        if conn is not None:
            conn.close()

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, Counter[str]] = {}
        for a in self.answers:
            by_kind.setdefault(a.kind, Counter())[str(a.status)] += 1
        statuses = Counter(a.status for a in self.answers)
        server = sum(n for s, n in statuses.items() if s is not None and s >= 500)
        return {
            "sent": len(self.answers),
            "seconds": round(self.ended - self.started, 1),
            "4xx": sum(n for s, n in statuses.items() if s is not None and 400 <= s < 500),
            "5xx": server,
            "other": sum(n for s, n in statuses.items() if s is None or s < 400),
            "unclear": sum(
                1 for a in self.answers if a.status and 400 <= a.status < 500 and not a.clear
            ),
            "slowest": round(max((a.seconds for a in self.answers), default=0.0), 2),
            "by kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        }


def _clear(status: int, raw: bytes) -> bool:
    if status == 413 and not raw:
        return True  # refused on its length before a view runs: the status says it
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(raw)["error"]
        return bool(error["code"]) and bool(error["message"])
    return False


@dataclass
class AbusiveClient:
    """One connection per misdeed, on each web process in turn: garbage (not JSON, binary,
    wrong shapes), a frame of `oversized` bytes, and a flood past the rate limit. Each is
    answered with an error frame or closed with a documented code; the report lists them."""

    ports: list[int]
    venue: int
    token: str
    rounds: int = 5
    hosts: dict[int, str] = field(default_factory=dict)  # port -> address, where not loopback
    oversized: int = 2 * 1024 * 1024
    flood: int = 2_000
    outcomes: Counter[str] = field(default_factory=Counter)  # "<misdeed>: <what came back>"
    connections: int = 0  # welcomed
    frames_sent: int = 0
    frames_received: int = 0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        for n in range(self.rounds):
            port = self.ports[n % len(self.ports)]
            host = host_of(self.hosts, port)
            url = f"ws://{host}:{port}/ws/venues/{self.venue}/?token={self.token}"
            for misdeed in ("garbage", "oversized", "flood"):
                self.outcomes[f"{misdeed}: {await self._one(url, misdeed)}"] += 1

    async def _one(self, url: str, misdeed: str) -> str:
        errors = 0
        try:
            async with websockets.connect(url, open_timeout=10, max_size=None) as ws:
                await asyncio.wait_for(ws.recv(), 10)  # the welcome
                self.connections += 1
                self.frames_received += 1
                if misdeed == "garbage":
                    frames: list[str | bytes] = [
                        "{not json", b"\x00\xff binary", '"a string"', "[1,2]",
                        '{"type": "nonsense"}', '{"type": "ping", "ts": {"x": 1}}',
                    ]  # fmt: skip
                elif misdeed == "oversized":
                    frames = ["x" * self.oversized]
                else:
                    frames = ['{"type": "ping"}'] * self.flood
                for frame in frames:
                    await ws.send(frame)
                    self.frames_sent += 1
                # The answers, for 3 s (the room's order events keep coming meanwhile); a flood's
                # close may come later, once the server has read its way to the rate limit.
                wait = 10 if misdeed == "flood" else 3
                deadline = asyncio.get_running_loop().time() + wait
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        while True:
                            answer = await ws.recv()
                            self.frames_received += 1
                            errors += '"error"' in str(answer) or '"rate_limited"' in str(answer)
                return f"open after, {errors} error frames"
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            return f"closed {code}, {errors} error frames"
        except (OSError, TimeoutError, websockets.InvalidStatus) as exc:
            return f"failed: {type(exc).__name__}"
