"""What the fault bench watches while it runs: /health on each web process, the outbox read
straight from PostgreSQL (not through the proxy), and processes that exit on their own."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import HOST, database_url, host_of
from bench.deployment import Topology

DATABASE = "inkwave_faults"
DIRECT_URL = database_url(DATABASE)


@dataclass
class Probe:
    at: float
    port: int
    status: int | None
    checks: dict[str, str]
    seconds: float


class Observer:
    """Probes /health, reads the database directly (not through the proxy), supervises."""

    def __init__(
        self,
        topology: Topology,
        ports: list[int],
        database: str = DATABASE,
        url: str | None = None,
        interval: float = 0.5,
        hosts: dict[int, str] | None = None,
    ) -> None:
        self.topology = topology
        self.ports = ports
        self.hosts = hosts or {}  # port -> address, where not loopback
        self.url = url or database_url(database)  # read directly, not through the proxy
        self.interval = interval
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
                self.probes.append(probe_health(port, host_of(self.hosts, port)))
            self.stop.wait(self.interval)

    def _database(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psycopg.Error):
                self.outbox.append((time.time(), *outbox_state(self.url)))
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


def probe_health(port: int, host: str = HOST) -> Probe:
    started = time.time()
    conn = http.client.HTTPConnection(host, port, timeout=5)
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


def healthy(probe: Probe, slack_too: bool) -> bool:
    if probe.status != 200 or "unhealthy" in probe.checks.values():
        return False
    return not slack_too or probe.checks.get("slack") != "degraded"


def connect(url: str = DIRECT_URL) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def outbox_state(url: str = DIRECT_URL) -> tuple[int, float | None]:
    """Open notification rows and the age of the oldest one that is due."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(created_at)) "
            "FROM notifications_notification WHERE status IN ('pending', 'sending')"
        ).fetchone()
    assert row is not None
    return int(row[0]), None if row[1] is None else float(row[1])


def query(sql: str, *params: Any, url: str = DIRECT_URL) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def wait_drained(observer: Observer, limit: float) -> float | None:
    started = time.time()
    while time.time() - started < limit:
        with contextlib.suppress(psycopg.Error):
            if outbox_state(observer.url)[0] == 0:
                return time.time() - started
        time.sleep(1)
    return None


def wait_listening(ports: list[int], limit: float, hosts: dict[int, str] | None = None) -> None:
    deadline = time.time() + limit
    for port in ports:
        host = host_of(hosts or {}, port)
        while probe_health(port, host).status is None:
            if time.time() > deadline:
                raise RuntimeError(f"web process on {host}:{port} did not answer /health")
            time.sleep(0.5)
