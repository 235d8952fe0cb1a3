"""Faults against the production topology: what each one cost, how soon it was seen and left.

    .venv/bin/python bench/faults.py            # the issue's sequence, about 8 minutes
    .venv/bin/python bench/faults.py --quick    # shorter faults, about 5 minutes

Starts bench/deployment.py's topology (two web processes, a Celery worker, beat, a PostgreSQL
database of its own behind a TCP proxy, a Redis of its own on a spare port, the local Slack
server), puts a workload on it (WebSocket clients spread over the venues and both web
processes, reconnecting with backoff as devices do; orders at a fixed rate through the API with
the venues' tokens, on the web process a load balancer would pick), then injects, one after the
other: Redis down, Redis hung (SIGSTOP), the database refusing connections, a web process
SIGKILLed (then restarted), the worker SIGKILLed (then restarted), Slack answering 500. After
each it waits (bounded) for recovery and prints the time to detect, the time to recover and
what was lost or doubled; a summary table ends the run. Nothing is contacted beyond loopback;
the shared Redis and PostgreSQL are never stopped. See bench/README.md ("Faults").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import websockets  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from bench.deployment import Topology, drop_database  # noqa: E402
from bench.deployment import parse_args as deployment_args  # noqa: E402
from bench.faultkit import spare_port  # noqa: E402
from notifications.local_slack import Reply, SlackServer  # noqa: E402

DATABASE = "inkwave_faults"
DIRECT_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
# The system's settings, except where a figure needs otherwise (bench/README.md says why).
SETTINGS = {
    "ALERT_EVALUATION_SECONDS": "10",  # the default 60 s would hide detection in its period
    "ORDER_NOTIFY_LIMIT": "0",  # one message per order, so each can be checked once
    "SLACK_MIN_INTERVAL_SECONDS": "0.2",  # 2 orders/s must fit a channel's rate
    "LOG_LEVEL": "info",
}


@dataclass(frozen=True)
class FaultPlan:
    name: str
    hold: float  # seconds the fault lasts (for kills: until the restart)


FULL = [
    FaultPlan("redis-down", 30),
    FaultPlan("redis-hung", 20),
    FaultPlan("db-refusing", 30),
    FaultPlan("web-killed", 10),
    FaultPlan("worker-killed", 10),
    FaultPlan("slack-500", 60),
]
QUICK = [
    FaultPlan("redis-down", 15),
    FaultPlan("redis-hung", 10),
    FaultPlan("db-refusing", 15),
    FaultPlan("web-killed", 5),
    FaultPlan("worker-killed", 5),
    FaultPlan("slack-500", 40),  # past SLACK_OUTAGE_SECONDS (30), or it is no outage
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter faults, about 5 minutes")
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients")
    parser.add_argument("--venues", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2.0, help="orders per second")
    parser.add_argument("--only", default="", help="comma-separated fault names to run")
    parser.add_argument("--dir", type=Path, default=None, help="logs and state (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    args = parser.parse_args(argv)
    if not 0 <= args.clients <= 1000 or not 0 < args.rate <= 20 or not 1 <= args.venues <= 50:
        parser.error("--clients 0-1000, --rate up to 20, --venues 1-50")
    plan = QUICK if args.quick else FULL
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {f.name for f in plan}
        if unknown:
            parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
        plan = [f for f in plan if f.name in wanted]
    args.plan = plan
    args.settle = 10.0 if args.quick else 20.0  # observed after recovery (late incidents)
    args.recovery_limit = 90.0 if args.quick else 180.0
    return args


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# --- the workload -----------------------------------------------------------------------


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


class Orders:
    """Orders at a fixed rate (open loop: slow answers do not slow the schedule)."""

    def __init__(self, ports: list[int], venues: list[dict[str, Any]], rate: float) -> None:
        self.ports = ports
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

    def _one(self, seq: int) -> None:
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
        status, order_id = self._post(port, body, venue["token"])
        retried = False
        if status == -1:  # refused: a load balancer would send it to the other process
            retried = True
            port = next(p for p in self.ports if p != port)
            status, order_id = self._post(port, body, venue["token"])
        result = OrderResult(
            tag=tag,
            venue=venue["venue"],
            port=port,
            sent=sent,
            answered=time.time(),
            status=None if status < 0 else status,
            order_id=order_id,
            retried_elsewhere=retried,
        )
        with self.lock:
            self.results.append(result)

    @staticmethod
    def _post(port: int, body: str, token: str) -> tuple[int, int | None]:
        """(status, order id); -1 when the connection was refused, -2 for no answer."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(
                "POST",
                "/api/v1/orders",
                body=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            raw = response.read()
        except ConnectionRefusedError:
            return -1, None
        except (OSError, http.client.HTTPException):
            return -2, None
        finally:
            conn.close()
        order_id = None
        if response.status == 201:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                order_id = int(json.loads(raw)["id"])
        return response.status, order_id

    def snapshot(self) -> list[OrderResult]:
        with self.lock:
            return list(self.results)


@dataclass
class ClientEvent:
    at: float
    kind: str  # "open", "close:<code>", "http:<status>", "refused", "timeout", "error:<type>"


@dataclass
class Clients:
    """WebSocket clients on one asyncio loop in a thread; each reconnects with backoff."""

    ports: list[int]
    venues: list[dict[str, Any]]
    count: int
    events: list[ClientEvent] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)  # order tag -> frames received
    open_now: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)

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
            url = (
                f"ws://127.0.0.1:{self.ports[server]}/ws/venues/{venue['venue']}/"
                f"?token={venue['token']}"
            )
            opened = False
            try:
                async with gate:
                    ws = await websockets.connect(url, open_timeout=10, close_timeout=2)
                try:
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if welcome.get("type") != "welcome":
                        raise ValueError(welcome.get("type"))
                    opened, failures = True, 0
                    self.open_now += 1
                    self._note("open")
                    async for frame in ws:
                        message = json.loads(frame)
                        if message.get("event") == "order.placed":
                            self.received[str(message["data"].get("table"))] += 1
                finally:
                    await ws.close()
                self._note(f"close:{ws.close_code}")
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
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))


# --- what the bench watches ---------------------------------------------------------------


@dataclass
class Probe:
    at: float
    port: int
    status: int | None
    checks: dict[str, str]
    seconds: float


class Observer:
    """Probes /health, reads the database directly (not through the proxy), supervises."""

    def __init__(self, topology: Topology, ports: list[int]) -> None:
        self.topology = topology
        self.ports = ports
        self.probes: list[Probe] = []
        self.outbox: list[tuple[float, int, float | None]] = []  # at, open rows, oldest age
        self.exits: list[tuple[float, str, int]] = []  # at, process, return code
        self.expected_down: set[str] = set()  # killed by the bench, restarted by it
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._health, daemon=True),
            threading.Thread(target=self._database, daemon=True),
            threading.Thread(target=self._supervise, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _health(self) -> None:
        while not self.stop.is_set():
            for port in self.ports:
                self.probes.append(probe_health(port))
            self.stop.wait(0.5)

    def _database(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psycopg.Error):
                self.outbox.append((time.time(), *outbox_state()))
            self.stop.wait(1.0)

    def _supervise(self) -> None:
        """Restarts what dies on its own, as compose's restart policy would, and notes it."""
        while not self.stop.is_set():
            for name, process in list(self.topology.processes.items()):
                code = process.poll()
                if code is not None and name not in self.expected_down:
                    self.exits.append((time.time(), name, code))
                    print(f"  ! {name} exited on its own (code {code}); restarting it", flush=True)
                    self.stop.wait(2)
                    self.topology.start_process(name)
            self.stop.wait(0.5)


def probe_health(port: int) -> Probe:
    started = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
        checks = {
            k: str(v.get("status", v)) if isinstance(v, dict) else str(v)
            for k, v in (body.get("checks") or {}).items()
        }
        return Probe(started, port, response.status, checks, time.time() - started)
    except (OSError, http.client.HTTPException, ValueError):
        return Probe(started, port, None, {}, time.time() - started)
    finally:
        conn.close()


def connect() -> psycopg.Connection[Any]:
    return psycopg.connect(DIRECT_URL, autocommit=True, connect_timeout=5)


def outbox_state() -> tuple[int, float | None]:
    """Open notification rows and the age of the oldest one that is due."""
    with connect() as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(created_at)) "
            "FROM notifications_notification WHERE status IN ('pending', 'sending')"
        ).fetchone()
    assert row is not None
    return int(row[0]), None if row[1] is None else float(row[1])


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect() as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


# --- the faults ---------------------------------------------------------------------------


@dataclass
class FaultRun:
    plan: FaultPlan
    start: float
    restored: float = 0.0
    end: float = 0.0  # when the next fault began, or the run's end
    recovered: dict[str, float | None] = field(default_factory=dict)  # after `restored`


class Faults:
    def __init__(
        self, topology: Topology, slack: SlackServer, observer: Observer, orders: Orders
    ) -> None:
        self.topology = topology
        self.slack = slack
        self.observer = observer
        self.orders = orders

    def inject(self, name: str) -> None:
        redis, proxy = self.topology.redis, self.topology.proxy
        assert redis is not None
        assert proxy is not None
        if name == "redis-down":
            redis.stop()
        elif name == "redis-hung":
            redis.pause()
        elif name == "db-refusing":
            proxy.close()
        elif name in ("web-killed", "worker-killed"):
            process = "web-2" if name == "web-killed" else "worker"
            self.observer.expected_down.add(process)
            self.topology.kill(process)
        elif name == "slack-500":
            self.slack.fail_next(*[Reply.status(500)] * 100_000)

    def restore(self, name: str) -> None:
        redis, proxy = self.topology.redis, self.topology.proxy
        assert redis is not None
        assert proxy is not None
        if name == "redis-down":
            redis.start()
        elif name == "redis-hung":
            redis.resume()
        elif name == "db-refusing":
            proxy.open()
        elif name in ("web-killed", "worker-killed"):
            process = "web-2" if name == "web-killed" else "worker"
            self.topology.start_process(process)
            self.observer.expected_down.discard(process)
        elif name == "slack-500":
            with self.slack.state.lock:
                self.slack.state.script.clear()

    def run(self, plan: FaultPlan, limit: float, settle: float) -> FaultRun:
        run = FaultRun(plan, time.time())
        print(f"- {plan.name}: injected, held {plan.hold:.0f} s", flush=True)
        self.inject(plan.name)
        time.sleep(plan.hold)
        self.restore(plan.name)
        run.restored = time.time()
        run.recovered = self.wait_recovery(run.restored, limit, plan.name == "slack-500")
        shown = ", ".join(
            f"{k} {'—' if v is None else f'+{v:.1f} s'}" for k, v in run.recovered.items()
        )
        print(f"  restored; recovered after the restore: {shown}", flush=True)
        time.sleep(settle)
        return run

    def wait_recovery(self, since: float, limit: float, slack: bool) -> dict[str, float | None]:
        found: dict[str, float | None] = {"health": None, "orders": None, "backlog": None}
        deadline = time.time() + limit
        while time.time() < deadline and None in found.values():
            if found["health"] is None:
                found["health"] = self._health_ok_since(since, slack)
            if found["orders"] is None:
                ok = [
                    r.answered
                    for r in self.orders.snapshot()
                    if r.sent >= since and r.status == 201
                ]
                found["orders"] = min(ok) - since if ok else None
            if found["backlog"] is None:
                drained = [
                    at
                    for at, _, age in list(self.observer.outbox)
                    if at >= since and (age or 0) < 5
                ]
                found["backlog"] = min(drained) - since if drained else None
            time.sleep(0.5)
        return found

    def _health_ok_since(self, since: float, slack: bool) -> float | None:
        """When every web process's latest probe says 200 with every check healthy."""
        latest: dict[int, Probe] = {}
        for probe in list(self.observer.probes):
            if probe.at >= since:
                latest[probe.port] = probe
        if set(latest) != set(self.observer.ports):
            return None
        for probe in latest.values():
            if not healthy(probe, slack):
                return None
        return max(p.at for p in latest.values()) - since


def healthy(probe: Probe, slack_too: bool) -> bool:
    if probe.status != 200 or "unhealthy" in probe.checks.values():
        return False
    return not slack_too or probe.checks.get("slack") != "degraded"


# --- what it cost -------------------------------------------------------------------------


@dataclass
class Evidence:
    """Everything read once at the end: the database, the Slack server's posts, the clients."""

    stored: Counter[str]  # order tag -> rows
    refusals_recorded: set[str]  # tags of creation_failed events (refused, recorded later)
    incidents: list[tuple[int, str, str, float, float | None]]  # id, title, status, opened, res.
    dead: list[tuple[str, float]]  # role, declared dead at
    rows: list[tuple[int, str, str, str, float]]  # id, status, kind, slack_ts, created
    posts: list[tuple[float, str, str, str]]  # at, path, ts, text


def gather(slack: SlackServer) -> Evidence:
    stored = Counter(
        {
            tag: n
            for tag, n in query(
                'SELECT "table", count(*) FROM orders_order WHERE "table" LIKE %s GROUP BY 1', "F%"
            )
        }
    )
    refused = {
        str(row[0])
        for row in query(
            "SELECT payload->>'table' FROM orders_orderevent WHERE kind = %s",
            "order.creation_failed",
        )
    }
    incidents = [
        (i, title, status, opened.timestamp(), epoch(resolved))
        for i, title, status, opened, resolved in query(
            "SELECT id, title, status, opened_at, resolved_at FROM monitoring_incident ORDER BY id"
        )
    ]
    dead = [
        (role, at.timestamp())
        for role, at in query(
            "SELECT role, declared_dead_at FROM monitoring_worker "
            "WHERE declared_dead_at IS NOT NULL"
        )
    ]
    rows = [
        (i, status, kind, ts or "", created.timestamp())
        for i, status, kind, ts, created in query(
            "SELECT id, status, kind, slack_ts, created_at FROM notifications_notification "
            "WHERE update_target_id IS NULL"
        )
    ]
    posts = [(p.at, p.path, p.ts, str(p.body.get("text", ""))) for p in slack.posts]
    return Evidence(stored, refused, incidents, dead, rows, posts)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:60] if text.strip() else "(no text)"


def rel(at: float | None, since: float) -> str:
    return "—" if at is None else f"+{at - since:.1f} s"


@dataclass
class Verdict:
    name: str
    held: float
    lines: list[str]
    row: dict[str, str]


def judge(
    run: FaultRun,
    evidence: Evidence,
    orders: list[OrderResult],
    observer: Observer,
    clients: Clients,
    order_posts: Counter[str],
    members: float,
) -> Verdict:
    t0, t1 = run.start, run.end
    mine = [o for o in orders if t0 <= o.sent < t1]
    status = Counter("none" if o.status is None else str(o.status) for o in mine)
    created = [o for o in mine if o.status == 201]
    not_stored_once = [o.tag for o in created if evidence.stored[o.tag] != 1]
    not_posted_once = [o.tag for o in created if order_posts[o.tag] != 1]
    doubled_posts = [o.tag for o in created if order_posts[o.tag] > 1]
    stored_unanswered = [o.tag for o in mine if o.status != 201 and evidence.stored[o.tag]]
    refused = [o for o in mine if o.status == 503]
    unrecorded = [o.tag for o in refused if o.tag not in evidence.refusals_recorded]
    unheard = [o.tag for o in created if clients.received[o.tag] == 0]
    partly = [o.tag for o in created if 0 < clients.received[o.tag] < members]
    others = len(mine) - len(created) - len(refused)
    waits = sorted(o.answered - o.sent for o in created)
    p50 = waits[len(waits) // 2] if waits else 0.0
    slowest = max((o.answered - o.sent for o in mine if o.status is not None), default=0.0)

    probes = [p for p in observer.probes if t0 <= p.at < t1]
    bad = next((p for p in probes if not healthy(p, False)), None)
    degraded = next((p for p in probes if p.checks.get("slack") == "degraded"), None)
    slowest_probe = max((p.seconds for p in probes if p.status is not None), default=0.0)
    operations = [
        (at, text)
        for at, path, _, text in evidence.posts
        if t0 <= at < t1 and path.endswith("chat.postMessage") and "New Order" not in text
    ]
    incidents = [i for i in evidence.incidents if t0 <= i[3] < t1]
    dead = [d for d in evidence.dead if t0 <= d[1] < t1]
    ws = Counter(e.kind for e in clients.events if t0 <= e.at < t1 and e.kind != "open")
    exits = [e for e in observer.exits if t0 <= e[0] < t1]
    rows = [r for r in evidence.rows if t0 <= r[4] < t1]
    rows_lost = [r for r in rows if r[1] in ("failed", "pending", "sending")]

    lines = [
        f"  detect: /health {describe_probe(bad, t0)}"
        + (f"; slack degraded {rel(degraded.at, t0)}" if degraded else "")
        + f"; first Slack message {rel(operations[0][0], t0) if operations else '—'}"
        + (f" ({first_line(operations[0][1])})" if operations else "")
        + (f"; declared dead: {', '.join(f'{r} {rel(a, t0)}' for r, a in dead)}" if dead else ""),
        f"  incidents opened: {len(incidents)}"
        + "".join(
            f"\n    #{i} {title} {rel(opened, t0)} ({status}"
            + (f", resolved {rel(resolved, t0)}" if resolved else "")
            + ")"
            for i, title, status, opened, resolved in incidents
        ),
        f"  recover (after restore at {rel(run.restored, t0)}): "
        + ", ".join(
            f"{k} {'not within limit' if v is None else f'+{v:.1f} s'}"
            for k, v in run.recovered.items()
        ),
        f"  orders: {len(mine)} sent, {dict(status)}; 201 answered in p50 {p50:.2f} s, "
        f"slowest answer {slowest:.2f} s ({sum(w > 2 for w in waits)} 201s over 2 s); "
        f"{sum(o.retried_elsewhere for o in mine)} refused and sent to the other web process",
        f"  lost/doubled: 201 not stored once {len(not_stored_once)}, 201 not on Slack once "
        f"{len(not_posted_once)} (twice or more: {len(doubled_posts)}), stored without a 201 "
        f"{len(stored_unanswered)}, 503 never recorded {len(unrecorded)}/{len(refused)}, "
        f"notifications lost {len(rows_lost)}/{len(rows)}",
        f"  broadcasts: 201 orders heard by no client {len(unheard)}, by only some "
        f"{len(partly)}; WebSocket closes and refusals: {dict(ws) or 'none'}; "
        f"slowest /health {slowest_probe:.2f} s",
    ]
    if operations:
        lines.append(
            f"  Slack, not orders ({len(operations)}): "
            + "; ".join(f"{rel(at, t0)} {first_line(text)}" for at, text in operations[:8])
        )
    if exits:
        lines.append(
            "  process exits: "
            + ", ".join(f"{name} (code {code}) {rel(at, t0)}" for at, name, code in exits)
        )
    if not_stored_once or not_posted_once or unrecorded or stored_unanswered:
        lines.append(
            f"  tags: not stored once {not_stored_once[:5]}, not posted once "
            f"{not_posted_once[:5]}, unrecorded 503 {unrecorded[:5]}, stored without 201 "
            f"{stored_unanswered[:5]}"
        )
    detect = min(
        [
            x
            for x in (
                bad.at if bad else None,
                degraded.at if degraded else None,
                operations[0][0] if operations else None,
                *(i[3] for i in incidents),
                *(d[1] for d in dead),
            )
            if x is not None
        ],
        default=None,
    )

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    row = {
        "fault": run.plan.name,
        "held s": f"{run.plan.hold:.0f}",
        "detect s": fmt(None if detect is None else detect - t0),
        "incidents": str(len(incidents)),
        "/health ok s": fmt(run.recovered.get("health")),
        "201 again s": fmt(run.recovered.get("orders")),
        "drained s": fmt(run.recovered.get("backlog")),
        "orders 201/503/other": f"{len(created)}/{len(refused)}/{others}",
        "lost": str(
            len(not_stored_once)
            + len(set(not_posted_once) - set(doubled_posts))
            + len(unrecorded)
            + len(rows_lost)
        ),
        "doubled": str(len(doubled_posts) + sum(evidence.stored[t] > 1 for t in not_stored_once)),
        "exits": str(len(exits)),
    }
    return Verdict(run.plan.name, run.plan.hold, lines, row)


def describe_probe(probe: Probe | None, since: float) -> str:
    if probe is None:
        return "stayed 200"
    what = "no answer" if probe.status is None else str(probe.status)
    failing = [k for k, v in probe.checks.items() if v == "unhealthy"]
    return f"{what} {rel(probe.at, since)} on :{probe.port}" + (
        f" ({', '.join(failing)})" if failing else ""
    )


def table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    heads = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in heads]
    out = [" | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(r[h].ljust(w) for h, w in zip(heads, widths, strict=True)) for r in rows]
    return "\n".join(out)


TAG = re.compile(r"F\d{7}")


def order_posts(evidence: Evidence, slack: SlackServer) -> Counter[str]:
    """How many messages on Slack name each order (by its unique table)."""
    counts: Counter[str] = Counter()
    for post in slack.posts:
        if post.path.endswith("chat.postMessage") and "New Order" in json.dumps(post.body):
            counts.update(set(TAG.findall(json.dumps(post.body))))
    return counts


def outbox_against_slack(evidence: Evidence) -> list[str]:
    """Every row marked sent was posted once; every post is a row's (or a direct alert)."""
    posted = Counter(ts for _, path, ts, _ in evidence.posts if path.endswith("chat.postMessage"))
    sent = {r[3] for r in evidence.rows if r[1] == "sent" and r[3]}
    unsent_posts = [
        (at, text)
        for at, path, ts, text in evidence.posts
        if path.endswith("chat.postMessage") and ts not in sent
    ]
    direct = [p for p in unsent_posts if p[1].startswith("🔴")]
    status = Counter(r[1] for r in evidence.rows)
    return [
        f"outbox rows (not in-place updates): {dict(status)}",
        f"rows marked sent that Slack never got: {sum(1 for ts in sent if not posted[ts])}",
        f"Slack posts of no row: {len(unsent_posts)} ({len(direct)} direct 🔴 alerts"
        + (
            f"; others: {[first_line(t) for _, t in unsent_posts if not t.startswith('🔴')][:5]}"
            if len(unsent_posts) > len(direct)
            else ""
        )
        + ")",
    ]


def connection_figures(port: int, token: str, clients: Clients, limit: float) -> str:
    """totalConnections - totalDisconnections against activeConnections and the clients."""
    deadline = time.time() + limit
    text = "stats did not answer"
    while time.time() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "GET",
                "/api/v1/monitoring/websocket/stats",
                headers={"Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            stats = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(1)
            continue
        finally:
            conn.close()
        if response.status == 200:
            net = stats["totalConnections"] - stats["totalDisconnections"]
            active, live = stats["activeConnections"], clients.open_now
            text = (
                f"totalConnections {stats['totalConnections']} - totalDisconnections "
                f"{stats['totalDisconnections']} = {net}; activeConnections {active}; "
                f"clients connected {live}: {'equal' if net == active == live else 'NOT equal'}"
            )
            if net == active == live:
                return text
        time.sleep(1)
    return text


def wait_drained(observer: Observer, limit: float) -> float | None:
    started = time.time()
    while time.time() - started < limit:
        with contextlib.suppress(psycopg.Error):
            if outbox_state()[0] == 0:
                return time.time() - started
        time.sleep(1)
    return None


def wait_listening(ports: list[int], limit: float) -> None:
    deadline = time.time() + limit
    for port in ports:
        while probe_health(port).status is None:
            if time.time() > deadline:
                raise RuntimeError(f"web process on :{port} did not answer /health")
            time.sleep(0.5)


def deployment_argv(work: Path, ports: list[int], venues: int) -> list[str]:
    argv = [
        "--dir",
        str(work),
        "--database",
        DATABASE,
        "--ports",
        ",".join(map(str, ports)),
        "--venues",
        str(venues),
        "--own-redis",
        "--database-proxy",
        "--drop-database",
    ]
    for name, value in SETTINGS.items():
        argv += ["--set", f"{name}={value}"]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = (args.dir or Path(tempfile.mkdtemp(prefix="inkwave-faults-"))).resolve()
    ports = [spare_port(), spare_port()]
    drop_database(DATABASE)  # each run starts empty: the checks read the whole database
    began = time.time()
    with SlackServer() as slack:
        topology = Topology(deployment_args(deployment_argv(work, ports, args.venues)))
        observer = Observer(topology, ports)
        clients = Clients(ports, [], args.clients)
        orders = Orders(ports, [], args.rate)
        try:
            state = topology.start(slack)
            print(f"topology up in {work} (web :{ports[0]} :{ports[1]})", flush=True)
            wait_listening(ports, 120)
            clients.venues = orders.venues = state["venues"]
            observer.start()
            clients.start()
            deadline = time.time() + 90
            while clients.open_now < args.clients and time.time() < deadline:
                time.sleep(0.5)
            orders.start()
            print(f"{clients.open_now} clients connected; orders at {args.rate}/s", flush=True)
            time.sleep(15 if args.quick else 30)
            runs = [
                Faults(topology, slack, observer, orders).run(
                    plan, args.recovery_limit, args.settle
                )
                for plan in args.plan
            ]
            orders.finish()
            for run, following in zip(runs, [*runs[1:], None], strict=True):
                run.end = following.start if following else time.time()
            drained = wait_drained(observer, 90)
            print(f"orders stopped; outbox empty after {drained}", flush=True)
            figures = connection_figures(ports[0], state["monitoring_token"], clients, 30)
            clients.finish()
            observer.finish()
            report(args, runs, observer, clients, orders, slack, figures, began)
        finally:
            orders.stop.set()
            clients.finish()
            observer.finish()
            topology.close()
    if not args.keep and args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}")
    return 0


def report(
    args: argparse.Namespace,
    runs: list[FaultRun],
    observer: Observer,
    clients: Clients,
    orders: Orders,
    slack: SlackServer,
    figures: str,
    began: float,
) -> None:
    evidence = gather(slack)
    posts = order_posts(evidence, slack)
    results = orders.snapshot()
    members = args.clients / args.venues
    verdicts = [judge(r, evidence, results, observer, clients, posts, members) for r in runs]
    print()
    for verdict in verdicts:
        print(f"{verdict.name} (held {verdict.held:.0f} s)")
        print("\n".join(verdict.lines))
    print()
    print(table([v.row for v in verdicts]))
    print()
    created = [o for o in results if o.status == 201]
    print(
        f"whole run ({time.time() - began:.0f} s): {len(results)} orders, {len(created)} got 201; "
        f"stored once {sum(evidence.stored[o.tag] == 1 for o in created)}, on Slack once "
        f"{sum(posts[o.tag] == 1 for o in created)}"
    )
    for line in outbox_against_slack(evidence):
        print(line)
    print(figures)
    if observer.exits:
        print("processes that exited on their own:", [(n, c) for _, n, c in observer.exits])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"faults": [v.row | {"lines": v.lines} for v in verdicts], "connections": figures},
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
