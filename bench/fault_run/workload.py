"""The fault bench's workload: orders at a fixed rate through the API, and WebSocket clients
that reconnect with backoff as devices do."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.common import HOST, host_of

# The clients count every close themselves (close codes in the report); the library's own
# "keepalive ping failed" traceback for a connection the server closed with 1011 is noise.
logging.getLogger("websockets").setLevel(logging.CRITICAL)


@dataclass
class OrderResult:
    tag: str  # the order's table: unique, so it can be found in the database and on Slack
    venue: int
    port: int
    sent: float
    answered: float
    status: int | None  # None: no answer (refused, reset, timed out)
    order_id: int | None = None
    retried_elsewhere: bool = False
    # Sends after the first that got no answer: the same Idempotency-Key, the other process.
    unanswered_sends: int = 0
    replayed: bool = False  # the 201 was a retry's, naming the order an earlier send made


def api_request(
    port: int,
    method: str,
    path: str,
    body: str,
    token: str,
    headers: dict[str, str] | None = None,
    *,
    host: str = HOST,
) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one JSON request with a device token to the web process at
    `host`:`port`; status -1 when the connection was refused, -2 for no answer."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(
            method,
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                **(headers or {}),
            },
        )
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    except ConnectionRefusedError:
        return -1, b"", {}
    except (OSError, http.client.HTTPException):
        return -2, b"", {}
    finally:
        conn.close()


class Orders:
    """Orders at a fixed rate (open loop: slow answers do not slow the schedule). `hosts`:
    the address of each port's web process, where it is not on loopback."""

    def __init__(
        self,
        ports: list[int],
        venues: list[dict[str, Any]],
        rate: float,
        hosts: Mapping[int, str] | None = None,
    ) -> None:
        self.ports = ports
        self.hosts = dict(hosts or {})
        self.venues = venues
        self.rate = rate
        self.results: list[OrderResult] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=24, thread_name_prefix="order")
        self.thread = threading.Thread(target=self._schedule, daemon=True)
        self.seq = 0

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True)

    def _schedule(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.seq += 1
            self.pool.submit(self._one, self.seq)
            self.stop.wait(max(0.0, start + self.seq / self.rate - time.monotonic()))

    def _one(self, seq: int) -> OrderResult:
        venue = self.venues[seq % len(self.venues)]
        tag = f"F{seq:07d}"
        body = json.dumps(
            {
                "venue": venue["venue"],
                "table": tag,
                "currency": "USD",
                "items": [{"name": "Margherita", "quantity": 1, "unitPrice": "12.50"}],
            }
        )
        port = self.ports[seq % len(self.ports)]
        sent = time.time()
        # What a guest's app does: one key per order, and a retry after no answer (the process
        # may have died with the request, or stored it and died before answering) sends the
        # same key to the other process, as a balancer would. 201 then names the one order.
        key = {"Idempotency-Key": f"soak-{tag}"}
        status, order_id, replayed = self._post(port, body, venue["token"], key)
        retried = False
        if status == -1:  # refused: a load balancer would send it to the other process
            retried = True
            port = next(p for p in self.ports if p != port)
            status, order_id, replayed = self._post(port, body, venue["token"], key)
        unanswered_sends = 0
        while status == -2 and unanswered_sends < 3:
            unanswered_sends += 1
            time.sleep(1.0)
            port = next(p for p in self.ports if p != port)
            status, order_id, replayed = self._post(port, body, venue["token"], key)
        result = OrderResult(
            tag=tag,
            venue=venue["venue"],
            port=port,
            sent=sent,
            answered=time.time(),
            status=None if status < 0 else status,
            order_id=order_id,
            retried_elsewhere=retried,
            unanswered_sends=unanswered_sends,
            replayed=replayed,
        )
        with self.lock:
            self.results.append(result)
        return result

    def _post(
        self, port: int, body: str, token: str, headers: dict[str, str]
    ) -> tuple[int, int | None, bool]:
        """(status, order id, replayed); -1 when the connection was refused, -2 for no answer."""
        status, raw, answer = api_request(
            port, "POST", "/api/v1/orders", body, token, headers, host=host_of(self.hosts, port)
        )
        order_id = None
        if status == 201:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                order_id = int(json.loads(raw)["id"])
        return status, order_id, answer.get("Idempotent-Replayed") == "true"

    def snapshot(self) -> list[OrderResult]:
        with self.lock:
            return list(self.results)


@dataclass
class ClientEvent:
    at: float
    kind: str  # "open", "close:<code>", "http:<status>", "refused", "timeout", "error:<type>"


class OnItsOwnLoop:
    """A load of its own asyncio loop, on a thread: `start()`, then `finish()`."""

    stop: threading.Event
    thread: threading.Thread | None

    def start(self) -> None:
        self.stop.clear()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            self.thread = None

    async def _main(self) -> None:
        raise NotImplementedError


@dataclass
class Clients(OnItsOwnLoop):
    """WebSocket clients on one asyncio loop in a thread; each reconnects with backoff."""

    ports: list[int]  # the web processes, at `hosts[port]` (loopback if not there)
    venues: list[dict[str, Any]]
    count: int
    events: list[ClientEvent] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)  # order tag -> frames received
    open_now: int = 0
    # Devices that come and go: each leaves (a normal close) after a stay drawn from this
    # range of seconds, and comes back after half as long. None: each stays while it can.
    stay: tuple[float, float] | None = None
    hosts: dict[int, str] = field(default_factory=dict)
    opens: int = 0  # connections welcomed
    handshakes: int = 0  # WebSocket handshakes completed (welcomed or not)
    frames_in: int = 0  # frames received, the welcome included
    stop: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None

    def wait_connected(self, limit: float) -> int:
        """Waits (at most `limit` s) until every client is connected; how many are."""
        deadline = time.time() + limit
        while self.open_now < self.count and time.time() < deadline:
            time.sleep(0.5)
        return self.open_now

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(20)  # daphne listens with a backlog of 50
        tasks = [asyncio.create_task(self._client(i, gate)) for i in range(self.count)]
        await asyncio.to_thread(self.stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _note(self, kind: str) -> None:
        self.events.append(ClientEvent(time.time(), kind))

    async def _client(self, index: int, gate: asyncio.Semaphore) -> None:
        venue = self.venues[index % len(self.venues)]
        server = index % len(self.ports)
        failures = 0
        while not self.stop.is_set():
            port = self.ports[server]
            url = (
                f"ws://{host_of(self.hosts, port)}:{port}/ws/venues/{venue['venue']}/"
                f"?token={venue['token']}"
            )
            opened = False
            try:
                async with gate:
                    ws = await websockets.connect(url, open_timeout=10, close_timeout=2)
                self.handshakes += 1
                left = False
                try:
                    first = await asyncio.wait_for(ws.recv(), 10)
                    self._take(first)
                    welcome = json.loads(first)
                    if welcome.get("type") != "welcome":
                        raise ValueError(welcome.get("type"))
                    opened, failures = True, 0
                    self.open_now += 1
                    self._note("open")
                    left = await self._listen(ws)
                finally:
                    await self._close(ws)
                self._note("left" if left else f"close:{ws.close_code}")
            except InvalidStatus as exc:
                self._note(f"http:{exc.response.status_code}")
            except ConnectionRefusedError:
                self._note("refused")
                server = (server + 1) % len(self.ports)  # as a load balancer would
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                self._note(f"close:{code}")
            except TimeoutError:
                self._note("timeout")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note(f"error:{type(exc).__name__}")
            finally:
                if opened:
                    self.open_now -= 1
            failures += 1
            delay = min(8.0, 0.5 * 2 ** min(failures, 4)) if not opened else 0.5
            if opened and self.stay is not None:
                delay = random.uniform(*self.stay) / 2
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))

    def _take(self, frame: str | bytes) -> None:
        """Count a frame the server sent: its statistics count every one."""
        self.frames_in += 1
        message = json.loads(frame)
        if message.get("type") == "welcome":
            self.opens += 1
        elif message.get("event") == "order.placed":
            self.received[str(message["data"].get("table"))] += 1

    async def _close(self, ws: Any) -> None:
        """Close, and read what the server sent before it read the close (a device that
        leaves while a broadcast is on its way): none of it goes uncounted."""
        await ws.close()
        with contextlib.suppress(ConnectionClosed):
            while True:
                self._take(await ws.recv())

    async def _listen(self, ws: Any) -> bool:
        """Receives until the server closes (False) or the stay is over (True: it left)."""
        deadline = None
        if self.stay is not None:
            deadline = asyncio.get_running_loop().time() + random.uniform(*self.stay)
        try:
            async with asyncio.timeout_at(deadline):
                async for frame in ws:
                    self._take(frame)
        except TimeoutError:
            if deadline is None:
                raise
            return True
        return False


@dataclass
class BadFrames(OnItsOwnLoop):
    """A misbehaving client: `connections` WebSockets spread over the web processes, each
    sending a malformed frame (not JSON) `per_second` times a second, under the per-connection
    rate limit, so that every frame is a client error and none closes the connection."""

    ports: list[int]
    venues: list[dict[str, Any]]
    connections: int = 40
    per_second: float = 4.0
    hosts: dict[int, str] = field(default_factory=dict)
    sent: int = 0
    errors_back: int = 0  # error frames the server answered with
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._one(i)) for i in range(self.connections)]
        await asyncio.to_thread(self.stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, index: int) -> None:
        venue = self.venues[index % len(self.venues)]
        port = self.ports[index % len(self.ports)]
        host = host_of(self.hosts, port)
        url = f"ws://{host}:{port}/ws/venues/{venue['venue']}/?token={venue['token']}"
        while not self.stop.is_set():
            try:
                async with websockets.connect(url, open_timeout=10, close_timeout=2) as ws:
                    await asyncio.wait_for(ws.recv(), 10)  # the welcome
                    reader = asyncio.create_task(self._count_errors(ws))
                    try:
                        while not self.stop.is_set():
                            await ws.send("{not json")
                            self.sent += 1
                            await asyncio.sleep(1 / self.per_second)
                    finally:
                        reader.cancel()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1)

    async def _count_errors(self, ws: Any) -> None:
        async for frame in ws:
            if '"type":"error"' in str(frame).replace(" ", ""):
                self.errors_back += 1
