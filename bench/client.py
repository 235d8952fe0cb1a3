"""The load generator: one process holding many WebSocket connections to the server.

bench/run.py starts it as `python -m bench.client` and talks to it over pipes, one JSON object
a line:

1. run.py writes the spec (url, connections, and the steps to run on them; optionally the
   headers of every handshake, such as a session cookie) on stdin;
2. the client opens every connection, reads and discards each welcome frame, and prints
   {"event": "ready", ...};
3. for each step, run.py writes `go <epoch seconds>` once every client process is ready, so all
   of them share one timetable; the client runs the step's mode and prints
   {"event": "result", ...}; in the broadcast mode run.py writes `stop` when it has sent
   everything;
4. after the last step the client closes its connections and exits.

Modes:
- echo: closed loop; each connection sends the next ping as soon as its pong arrives. Counts the
  round trips completed inside [t0 + warmup, t0 + warmup + duration).
- open: open loop; the k-th of N connections (numbered across all client processes) sends at
  t0 + k / rate + j * N / rate, whether or not earlier pongs have come back. The ping carries its
  *scheduled* send time, so a late send (client or server backlog) counts against the round trip
  instead of hiding it: no coordinated omission.
- broadcast: every connection only listens; for each event frame it records receive time minus
  the frame's sentAt, folded per broadcast index into (count, max, sentAt, last receive), and
  prints {"event": "phase_done", ...} when all its members have every broadcast of a phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.common import raise_nofile_limit

PONG_PREFIX = '{"type":"pong"'
CONNECT_ATTEMPTS = 3


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("bench client: stdin closed")
    return line.strip()


# --- connecting ---------------------------------------------------------------------------


async def open_one(
    url: str, semaphore: asyncio.Semaphore, headers: dict[str, str] | None = None
) -> ClientConnection:
    last_error: Exception | None = None
    for attempt in range(CONNECT_ATTEMPTS):
        async with semaphore:
            try:
                ws = await connect(
                    url,
                    additional_headers=headers,
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    open_timeout=30,
                    close_timeout=2,
                    max_queue=1024,
                )
                welcome = await asyncio.wait_for(ws.recv(), 30)
            except Exception as exc:  # refused, reset, timed out: retried below
                last_error = exc
            else:
                if isinstance(welcome, str) and welcome.startswith('{"type":"welcome"'):
                    return ws
                await ws.close()
                raise RuntimeError(f"expected a welcome frame, got {str(welcome)[:200]!r}")
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not connect to {url}: {last_error!r}")


async def open_all(
    url: str, count: int, concurrency: int, headers: dict[str, str] | None = None
) -> list[ClientConnection]:
    # Bounded concurrency: daphne listens with Twisted's default backlog of 50.
    semaphore = asyncio.Semaphore(concurrency)
    return list(await asyncio.gather(*(open_one(url, semaphore, headers) for _ in range(count))))


async def close_all(connections: list[ClientConnection]) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True), 15
    )


# --- timing helpers -------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """The timetable shared by all client processes, in this process's loop.time()."""

    t0: float
    start: float
    end: float

    @classmethod
    def from_epoch(cls, t0_epoch: float, warmup: float, duration: float) -> Window:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (t0_epoch - time.time())
        return cls(t0, t0 + warmup, t0 + warmup + duration)


@dataclass(slots=True)
class CpuMeter:
    """This process's CPU seconds between two loop timestamps (scheduled on the loop)."""

    started: float | None = None
    stopped: float | None = None

    def arm(self, start: float, end: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_at(start, self._start)
        loop.call_at(end, self._stop)

    def _start(self) -> None:
        self.started = time.process_time()

    def _stop(self) -> None:
        self.stopped = time.process_time()

    def seconds(self) -> float | None:
        if self.started is None:
            return None
        stopped = self.stopped if self.stopped is not None else time.process_time()
        return stopped - self.started


def ping(ts: float) -> str:
    return f'{{"type":"ping","ts":{ts!r}}}'


# --- echo (closed loop) ---------------------------------------------------------------------


@dataclass(slots=True)
class EchoStats:
    completed: int = 0
    unexpected: int = 0
    rtts: list[float] = field(default_factory=list)


async def echo_connection(ws: ClientConnection, window: Window, stats: EchoStats) -> None:
    loop = asyncio.get_running_loop()
    delay = window.t0 - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    while True:
        sent = loop.time()
        if sent >= window.end:
            return
        await ws.send(ping(sent))
        reply = await ws.recv()
        received = loop.time()
        if not (isinstance(reply, str) and reply.startswith(PONG_PREFIX)):
            stats.unexpected += 1
            continue
        if window.start <= received < window.end:
            stats.completed += 1
            stats.rtts.append(received - sent)


async def run_echo(
    connections: list[ClientConnection], spec: dict[str, Any], t0_epoch: float
) -> dict[str, Any]:
    window = Window.from_epoch(t0_epoch, spec["warmup"], spec["duration"])
    cpu = CpuMeter()
    cpu.arm(window.start, window.end)
    stats = EchoStats()
    await asyncio.wait_for(
        asyncio.gather(*(echo_connection(ws, window, stats) for ws in connections)),
        window.end - asyncio.get_running_loop().time() + 30,
    )
    return {
        "completed": stats.completed,
        "unexpected": stats.unexpected,
        "rtts": sample(stats.rtts, 20_000),
        "client_cpu_seconds": cpu.seconds(),
    }


# --- open loop ------------------------------------------------------------------------------


@dataclass(slots=True)
class OpenStats:
    sent_in_window: int = 0
    received_in_window: int = 0
    unexpected: int = 0
    rtts: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    outstanding: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)


async def open_sender(
    ws: ClientConnection, first: float, period: float, window: Window, stats: OpenStats
) -> None:
    loop = asyncio.get_running_loop()
    scheduled = first
    while scheduled < window.end:
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stats.outstanding += 1
        await ws.send(ping(scheduled))
        if scheduled >= window.start:
            stats.sent_in_window += 1
            stats.send_lags.append(loop.time() - scheduled)
        scheduled += period


async def open_receiver(ws: ClientConnection, window: Window, stats: OpenStats) -> None:
    loop = asyncio.get_running_loop()
    async for reply in ws:
        received = loop.time()
        if not (isinstance(reply, str) and reply.startswith(PONG_PREFIX)):
            stats.unexpected += 1
            continue
        scheduled = json.loads(reply)["ts"]
        stats.outstanding -= 1
        if window.start <= scheduled < window.end:
            stats.received_in_window += 1
            # From the scheduled send time, not the actual one: see the module docstring.
            stats.rtts.append(received - scheduled)
        if stats.outstanding == 0:
            stats.drained.set()


async def run_open(
    connections: list[ClientConnection], spec: dict[str, Any], t0_epoch: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window = Window.from_epoch(t0_epoch, spec["warmup"], spec["duration"])
    cpu = CpuMeter()
    cpu.arm(window.start, window.end)
    rate: float = spec["rate"]  # aggregate over every client process
    total: int = spec["total_connections"]
    period = total / rate
    stats = OpenStats()
    receivers = [asyncio.create_task(open_receiver(ws, window, stats)) for ws in connections]
    senders = [
        open_sender(ws, window.t0 + (spec["index_base"] + k) / rate, period, window, stats)
        for k, ws in enumerate(connections)
    ]
    await asyncio.wait_for(asyncio.gather(*senders), window.end - loop.time() + 30)
    # Every ping is sent now, so `outstanding` only goes down: wait for the last pongs.
    stats.drained.clear()
    if stats.outstanding > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stats.drained.wait(), spec.get("drain_seconds", 3.0))
    for task in receivers:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    return {
        "sent_in_window": stats.sent_in_window,
        "received_in_window": stats.received_in_window,
        "unexpected": stats.unexpected,
        "rtts": stats.rtts,
        "send_lags": sample(stats.send_lags, 20_000),
        "client_cpu_seconds": cpu.seconds(),
    }


# --- broadcast ------------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    """Broadcasts first .. first + count - 1, sent by run.py as one step (paced, burst, ...)."""

    name: str
    first: int
    count: int
    complete_connections: int = 0
    cpu_at_first_frame: float | None = None


@dataclass(slots=True)
class BroadcastStats:
    phases: list[Phase]
    members: int
    # broadcast index -> [deliveries, max latency s, sentAt, last receive epoch]
    per_broadcast: dict[int, list[float]] = field(default_factory=dict)
    unexpected: int = 0
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def phase_of(self, index: int) -> int | None:
        for number, phase in enumerate(self.phases):
            if phase.first <= index < phase.first + phase.count:
                return number
        return None


async def broadcast_receiver(ws: ClientConnection, stats: BroadcastStats) -> None:
    per_broadcast = stats.per_broadcast
    received = [0] * len(stats.phases)
    async for frame in ws:
        now = time.time()
        message = json.loads(frame)
        if message.get("type") != "event":
            stats.unexpected += 1
            continue
        index = message["data"]["i"]
        sent_at = message["sentAt"]
        latency = now - sent_at
        entry = per_broadcast.get(index)
        if entry is None:
            per_broadcast[index] = [1, latency, sent_at, now]
        else:
            entry[0] += 1
            if latency > entry[1]:
                entry[1] = latency
            if now > entry[3]:
                entry[3] = now
        number = stats.phase_of(index)
        if number is None:
            stats.unexpected += 1
            continue
        phase = stats.phases[number]
        if phase.cpu_at_first_frame is None:
            phase.cpu_at_first_frame = time.process_time()
        received[number] += 1
        if received[number] == phase.count:
            phase.complete_connections += 1
            if phase.complete_connections == stats.members:
                # Every member of this process has every broadcast of the phase.
                cpu = time.process_time() - phase.cpu_at_first_frame
                emit({"event": "phase_done", "phase": phase.name, "at": now, "cpu": cpu})
                if all(p.complete_connections == stats.members for p in stats.phases):
                    stats.all_done.set()


async def run_broadcast(
    connections: list[ClientConnection], spec: dict[str, Any], t0_epoch: float
) -> dict[str, Any]:
    phases = [Phase(p["name"], p["first"], p["count"]) for p in spec["phases"]]
    stats = BroadcastStats(phases, len(connections))
    started = time.process_time()
    receivers = [asyncio.create_task(broadcast_receiver(ws, stats)) for ws in connections]
    # Done when every member has every broadcast, when run.py says stop, or at the deadline.
    stop = asyncio.ensure_future(read_line())
    done = asyncio.ensure_future(stats.all_done.wait())
    await asyncio.wait({stop, done}, timeout=spec["deadline"], return_when="FIRST_COMPLETED")
    stop.cancel()
    done.cancel()
    for task in receivers:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    return {
        "per_broadcast": {str(i): v for i, v in stats.per_broadcast.items()},
        "complete_connections": {p.name: p.complete_connections for p in phases},
        "unexpected": stats.unexpected,
        "client_cpu_seconds": time.process_time() - started,
    }


# --- main -----------------------------------------------------------------------------------


def sample(values: list[float], limit: int) -> list[float]:
    if len(values) <= limit:
        return values
    step = len(values) / limit
    return [values[int(k * step)] for k in range(limit)]


MODES = {"echo": run_echo, "open": run_open, "broadcast": run_broadcast}


async def main_async() -> None:
    spec = json.loads(await read_line())
    connect_started = time.perf_counter()
    connections = await open_all(
        spec["url"], spec["connections"], spec["connect_concurrency"], spec.get("headers")
    )
    emit(
        {
            "event": "ready",
            "connections": len(connections),
            "connect_seconds": time.perf_counter() - connect_started,
        }
    )
    try:
        # The same connections run every step; each step waits for its own "go".
        for step in spec["steps"]:
            command = await read_line()
            if not command.startswith("go "):
                raise SystemExit(f"bench client: expected 'go <t0>', got {command!r}")
            result = await MODES[step["mode"]](connections, {**spec, **step}, float(command[3:]))
            emit({"event": "result", **result})
    finally:
        with contextlib.suppress(TimeoutError):
            await close_all(connections)


def main() -> None:
    raise_nofile_limit()
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
