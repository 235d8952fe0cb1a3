"""/health under load: concurrent probes while thousands of WebSocket clients are connected.

    .venv/bin/python bench/health.py            # 2,000 clients on two servers, 20 rounds
    .venv/bin/python bench/health.py --quick    # 200 clients, 4 rounds

Starts two daphne processes (bench.asgi_app, the project's application) on 127.0.0.1 ports
9100-9199, sharing PostgreSQL (database inkwave_bench_health, created if missing) and the
Redis channel layer (a random key prefix, deleted afterwards); opens the clients from two
bench/client.py processes (half on each server) and keeps them connected; then fires rounds of
concurrent GET /health probes, alternating between the servers, and prints the status counts
and latency percentiles. Every process started here is stopped when the run ends or fails.
See bench/README.md ("/health under load").
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HOST,
    ROOT,
    delete_redis_keys,
    ensure_database,
    percentile,
    redis_available,
)
from bench.rooms.clients import ClientGroup, split
from bench.server import (
    Server,
    base_env,
    new_redis_prefix,
    prepare_database,
    server_env,
)

MONITORING_TOKEN = "bench-health-monitoring-token"  # noqa: S105 (loopback benchmark only)
STATS_PATH = "/api/v1/monitoring/websocket/stats"
PROBE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Probe:
    status: int | None  # None: no answer (refused, reset, timed out)
    seconds: float
    channel_layer: str | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000, help="WebSocket clients in total")
    parser.add_argument("--probes", type=int, default=100, help="concurrent probes per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--interval", type=float, default=1.5, help="seconds between rounds (past the cache)"
    )
    parser.add_argument(
        "--cache-seconds", help="HEALTH_CACHE_SECONDS of the servers (default: the project's)"
    )
    parser.add_argument("--quick", action="store_true", help="200 clients, 4 rounds")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "health.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = min(args.clients, 200), min(args.rounds, 4)
    if not 0 <= args.clients <= 10_000 or not 1 <= args.probes <= 500:
        parser.error("--clients must be 0-10000 and --probes 1-500")
    if not 1 <= args.rounds <= 200 or not 0 <= args.interval <= 60:
        parser.error("--rounds must be 1-200 and --interval 0-60")
    return args


def get(server: Server, path: str, token: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=PROBE_TIMEOUT)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def probe_round(server: Server, count: int, path: str = "/health") -> list[Probe]:
    """`count` probes released together; each one's time runs from the release to its answer."""
    barrier = threading.Barrier(count)

    def one() -> Probe:
        barrier.wait(PROBE_TIMEOUT)
        started = time.perf_counter()
        try:
            status, body = get(server, path)
        except OSError:
            return Probe(None, time.perf_counter() - started, None)
        checks = body.get("checks", {}) if isinstance(body, dict) else {}
        return Probe(status, time.perf_counter() - started, checks.get("channel_layer"))

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: one(), range(count)))


def active_connections(server: Server) -> int:
    status, body = get(server, STATS_PATH, MONITORING_TOKEN)
    if status != 200:
        raise RuntimeError(f"{STATS_PATH} answered {status}: {body}")
    return int(body["activeConnections"])


def wait_for_connections(server: Server, expected: int, seconds: float = 30.0) -> int:
    """The deployment's activeConnections once the servers' flushes report all the clients."""
    deadline = time.monotonic() + seconds
    while True:
        seen = active_connections(server)
        if seen == expected or time.monotonic() >= deadline:
            return seen
        time.sleep(0.5)


def summary(probes: list[Probe]) -> dict[str, Any]:
    answered = [p.seconds for p in probes if p.status is not None]
    lost = len(probes) - len(answered)

    def ms(q: float) -> float | None:
        value = percentile(answered, q, lost=lost)
        return None if value is None else round(value * 1000, 1)

    return {
        "probes": len(probes),
        "status": dict(Counter(str(p.status or "no answer") for p in probes)),
        "channel_layer": dict(Counter(str(p.channel_layer) for p in probes)),
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
    }


def start_servers(env: dict[str, str], work: Path, stack: ExitStack) -> list[Server]:
    servers = []
    for name in ("a", "b"):
        server = Server(env, work / f"daphne-{name}.log")
        stack.callback(server.stop)
        server.start()
        servers.append(server)
    return servers


def start_clients(
    servers: list[Server], venue: int, token: str, total: int, log: Any, stack: ExitStack
) -> Callable[[], list[dict[str, Any]]]:
    """Client processes holding `total` connections (half per server) until the returned stop()."""
    specs = [
        {
            "url": f"{server.ws_base}/ws/venues/{venue}/?token={token}",
            "connections": count,
            "connect_concurrency": 50,
            # Listen only: no broadcast is sent, so every frame would be unexpected.
            "steps": [{"mode": "broadcast", "phases": [], "deadline": 3600}],
        }
        for server, count in zip(servers, split(total, len(servers)), strict=True)
    ]
    group = ClientGroup(specs, log)
    stack.push(group.__exit__)
    opened = sum(r["connections"] for r in group.ready(CONNECT_TIMEOUT))
    if opened != total:
        raise RuntimeError(f"only {opened} of {total} connections opened")
    group.go()

    def stop() -> list[dict[str, Any]]:
        group.send_all("stop")
        return group.results(30)

    return stop


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    database_url = ensure_database("inkwave_bench_health")
    base = base_env(work, database_url)
    base.update(METRICS_FLUSH_SECONDS="1", MONITORING_TOKEN=MONITORING_TOKEN)
    if args.cache_seconds is not None:
        base["HEALTH_CACHE_SECONDS"] = args.cache_seconds
    venue, token = prepare_database(base)
    prefix = new_redis_prefix()
    env = server_env(base, monitoring=True, redis_prefix=prefix)
    with ExitStack() as stack, (work / "clients.log").open("wb") as client_log:
        stack.callback(delete_redis_keys, prefix)
        servers = start_servers(env, work, stack)
        print(f"daphne on :{servers[0].port} and :{servers[1].port}; ", end="", flush=True)
        started = time.monotonic()
        stop_clients = start_clients(servers, venue, token, args.clients, client_log, stack)
        print(f"{args.clients} clients connected in {time.monotonic() - started:.0f}s", flush=True)
        before = wait_for_connections(servers[0], args.clients)
        rounds = probe_rounds(args, servers, "/health")
        floor = probe_rounds(args, servers, "/health/live")
        after = active_connections(servers[0])
        client_results = stop_clients()
        alive = all(server.alive() for server in servers)
    return {
        "clients": args.clients,
        "active_connections_before": before,
        "active_connections_after": after,
        "unexpected_client_frames": sum(r["unexpected"] for r in client_results),
        "servers_alive_at_end": alive,
        "all": summary([p for r in rounds for p in r.pop("_probes")]),
        "rounds": rounds,
        "liveness": summary([p for r in floor for p in r.pop("_probes")]),
    }


def probe_rounds(
    args: argparse.Namespace, servers: list[Server], path: str
) -> list[dict[str, Any]]:
    rounds = []
    for number in range(args.rounds):
        server = servers[number % len(servers)]
        probes = probe_round(server, args.probes, path)
        rounds.append({"server": server.port, **summary(probes), "_probes": probes})
        time.sleep(args.interval)
    return rounds


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    every = result["all"]
    print(
        f"\n/health: {args.rounds} rounds of {args.probes} concurrent probes, alternating between"
        f" two servers, {args.interval}s apart"
    )
    print(
        f"  clients connected (stats endpoint): {result['active_connections_before']} before,"
        f" {result['active_connections_after']} after; servers alive: "
        f"{result['servers_alive_at_end']}"
    )
    print(f"  status: {every['status']}   channel_layer: {every['channel_layer']}")
    print(
        f"  latency: p50 {every['p50_ms']} ms, p90 {every['p90_ms']} ms,"
        f" p99 {every['p99_ms']} ms, max {every['max_ms']} ms"
    )
    worst = max(result["rounds"], key=lambda r: r["p99_ms"] or float("inf"))
    print(f"  worst round: p99 {worst['p99_ms']} ms, status {worst['status']}")
    live = result["liveness"]
    print(
        f"  the floor, /health/live (no checks) probed the same way: status {live['status']},"
        f" p50 {live['p50_ms']} ms, p99 {live['p99_ms']} ms, max {live['max_ms']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not redis_available():
        print("Redis does not answer on 127.0.0.1:6379: nothing measured.", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="inkwave-bench-health-"))
    try:
        result = run(args, work)
    finally:
        if args.keep:
            print(f"Logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"output": str(args.output)}
    args.output.write_text(json.dumps({"args": settings, **result}, indent=2))
    print(f"Results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
