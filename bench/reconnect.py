"""Benchmark: a web process restarts under its screens; how long until all are back, resumed.

    .venv/bin/python bench/reconnect.py [--clients 1000] [--venues 100] [--orders-per-second 5]

Two web processes (`python -m inkwave.serve bench.asgi_app:application`) on PostgreSQL and the
Redis channel layer. `--clients` kitchen screens over `--venues` venues, each with its venue's
device token, run by the reference client (orders/room_client.py) in a process of their own
(bench/storm_client.py), all on process A; orders are placed steadily, round robin over the
venues, through process B's API the whole time. Then A is stopped (SIGTERM: it closes every
screen with 1012) and started again on the same port, as a deploy does. Every screen comes
back to A after its random delay (up to 5 s after a 1012, then backing off while A is not
listening yet) and resumes after the last event it had.

Prints: A's restart (SIGTERM to listening again), when the screens were back and live again
(from the SIGTERM and from A listening: median, 99th percentile, last), and the check that
matters most: every screen received every event of its venue exactly once, in order, across
the restart (waiting up to 30 s after the last order for the last deliveries).

Uses its own database, inkwave_bench_reconnect (dropped first), and a random Redis prefix
whose keys are deleted at the end. Bounded: fixed counts, a timeout on every wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    HOST,
    PYTHON,
    delete_redis_keys,
    ensure_database,
    exit_on_signals,
    migrate,
    percentile,
    raise_nofile_limit,
    run_checked,
)
from bench.rooms.clients import ClientProcess  # noqa: E402
from bench.server import Server, base_env, new_redis_prefix, server_env  # noqa: E402

DATABASE = "inkwave_bench_reconnect"
ORDER = {"table": "7", "items": [{"name": "Soup", "quantity": 1, "unitPrice": "6.00"}]}
RESTART_SETTLE_SECONDS = 20  # the 1012 spread is 5 s, the backoff while A starts a few more


class Orders(threading.Thread):
    """Places orders through one web process at a steady rate, round robin over the venues."""

    def __init__(self, server: Server, venues: list[tuple[int, str]], per_second: float) -> None:
        super().__init__(daemon=True)
        self.url = f"http://{HOST}:{server.port}/api/v1/orders"
        self.venues = venues
        self.interval = 1.0 / per_second
        self.placed = 0
        self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.halt.is_set():
            venue, token = self.venues[(self.placed + self.failed) % len(self.venues)]
            request = urllib.request.Request(  # noqa: S310 -- loopback, http
                self.url,
                data=json.dumps({**ORDER, "venue": venue}).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    self.placed += answer.status == 201
            except OSError:
                self.failed += 1
            next_at += self.interval
            self.halt.wait(max(0.0, next_at - time.monotonic()))


def room_seq(server: Server, venue: int, token: str) -> int:
    request = urllib.request.Request(
        f"http://{HOST}:{server.port}/api/v1/venues/{venue}/orders",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 -- loopback
        return int(json.loads(answer.read())["seq"])


def check_events(clients: list[dict[str, Any]], expected: list[list[int]]) -> list[str]:
    """Each screen must have had exactly the events of its venue after it joined, in order."""
    problems = []
    for i, (client, wanted) in enumerate(zip(clients, expected, strict=True)):
        got = client["seqs"]
        if got != wanted:
            missing = sorted(set(wanted) - set(got))
            shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
            doubled = len(got) - len(set(got))
            problems.append(f"screen {i}: {len(missing)} missing ({shown}), {doubled} twice")
    return problems


def prepare(env: dict[str, str], venues: int) -> list[tuple[int, str]]:
    migrate(env, timeout=180)
    out = run_checked([PYTHON, "-m", "bench.setup_db", str(venues)], env, timeout=120)
    rows = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    return [(int(row["venue"]), str(row["token"])) for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--venues", type=int, default=100)
    parser.add_argument("--orders-per-second", type=float, default=5.0)
    args = parser.parse_args()
    exit_on_signals()
    raise_nofile_limit()
    work = Path(tempfile.mkdtemp(prefix="inkwave-reconnect-"))
    (work / "var").mkdir()
    env = base_env(work / "var", ensure_database(DATABASE, fresh=True))
    print(f"Preparing {DATABASE} with {args.venues} venues in {work} ...", flush=True)
    venues = prepare(env, args.venues)
    prefix = new_redis_prefix()
    web_env = server_env(env, monitoring=True, redis_prefix=prefix)
    a = Server(web_env, work / "web-a.log")
    b = Server(web_env, work / "web-b.log")
    servers = [a, b]
    screens_of = [venues[i % len(venues)] for i in range(args.clients)]
    try:
        a.start()
        b.start()
        with (work / "clients.log").open("ab") as log:
            spec = {
                "screens": [[[f"{a.ws_base}/ws/venues/{v}/"], t] for v, t in screens_of],
                "heartbeat_seconds": 15,
            }
            screens = ClientProcess(spec, log, module="bench.storm_client")
            try:
                started = time.monotonic()
                ready = screens.expect("ready", time.monotonic() + 180)
                print(f"{args.clients} screens live on A in {time.monotonic() - started:.1f} s")
                orders = Orders(b, venues, args.orders_per_second)
                orders.start()
                time.sleep(3)
                stopped_at = time.time()
                a.stop()
                a = Server(web_env, work / "web-a2.log", port=a.port)
                servers.append(a)
                a.start()
                listening_at = time.time()
                time.sleep(RESTART_SETTLE_SECONDS)
                orders.halt.set()
                orders.join(15)
                last = {v: room_seq(b, v, t) for v, t in venues}
                time.sleep(3)  # the last orders' broadcasts
                screens.send("stop")
                result = screens.expect("result", time.monotonic() + 120)
            finally:
                screens.finish()
    finally:
        for server in servers:
            server.stop()
        delete_redis_keys(prefix)
    expected = [
        list(range(seq + 1, last[v] + 1))
        for seq, (v, _) in zip(ready["seqs"], screens_of, strict=True)
    ]
    report(result["clients"], stopped_at, listening_at, orders, expected)
    return 0


def report(
    clients: list[dict[str, Any]],
    stopped_at: float,
    listening_at: float,
    orders: Orders,
    expected: list[list[int]],
) -> None:
    back = sorted(c["back_at"] for c in clients if c["back_at"] is not None)
    print(f"A restarted (SIGTERM to listening): {listening_at - stopped_at:.2f} s")
    print(f"screens back and live again: {len(back)} of {len(clients)}")
    if back:
        for label, origin in (
            ("after the SIGTERM", stopped_at),
            ("after A listened", listening_at),
        ):
            p50 = statistics.median(t - origin for t in back)
            p99 = percentile([t - origin for t in back], 0.99) or 0.0
            latest = back[-1] - origin
            print(f"  {label:>17}: median {p50:.2f} s, p99 {p99:.2f} s, last {latest:.2f} s")
    connects = [c["connects"] for c in clients]
    print(f"connects per screen: median {statistics.median(connects):.0f}, max {max(connects)}")
    resyncs = sum(c["resyncs"] for c in clients)
    events = sum(len(e) for e in expected)
    print(
        f"orders placed through B: {orders.placed} ({orders.failed} failed); "
        f"events due to the screens: {events}; resyncs: {resyncs}"
    )
    problems = check_events(clients, expected)
    if problems:
        print(f"EVENTS LOST OR DOUBLED on {len(problems)} screens: " + "; ".join(problems[:5]))
    else:
        print("every screen had each event of its venue exactly once, in order")


if __name__ == "__main__":
    sys.exit(main())
