"""Benchmark: what the performance middleware costs a request (monitoring/middleware.py).

    .venv/bin/python bench/middleware.py [--reps 5] [--seconds 5] [--connections 20]

Two daphne processes (`python -m inkwave.serve`) on the same PostgreSQL database: one with
MONITORING_ENABLED=true (every request timed and counted, its queries wrapped), one with
false (the middleware only gives the request its id). A client process (bench/http_client.py)
keeps `--connections` keep-alive connections busy on `GET /health/live`, a trivial async
view, on one server then the other in half-second slices (whatever else the machine does
meanwhile falls on both alike), round after round. Prints requests per second of each
and the median over rounds of (monitored / unmonitored); the target is at least 0.95. Also the
server's CPU per request of each, which what else runs on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    HOST,
    PYTHON,
    CpuMeter,
    ensure_database,
    exit_on_signals,
    migrate,
    raise_nofile_limit,
    wait_for_quiet,
)
from bench.server import Server, base_env, server_env  # noqa: E402

DATABASE = "inkwave_bench_middleware"
PATH = "/health/live"
TARGET = 0.95


def split_cpus() -> tuple[set[int], set[int]]:
    """The servers on one half of the cores and the client on the other: left to the
    scheduler, the client and the server's threads trade places on a small machine, and the
    rounds' ratios spread from 0.86 to 0.99 with nothing changed."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def pin(processes: list[psutil.Process], cpus: set[int]) -> None:
    """Every thread of the processes, those to come too (a new thread inherits its
    creator's cores)."""
    for process in processes:
        for thread in process.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, cpus)


def load(servers: dict[str, Server], args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """One round: the client loads the servers in alternating slices (bench/http_client.py),
    so what else the machine does falls on both alike. For each, requests per second and the
    server's CPU milliseconds per request."""
    names = list(servers)
    meter = CpuMeter({name: servers[name].processes for name in names})
    server_cpus, client_cpus = split_cpus()
    for name in names:
        pin(servers[name].processes, server_cpus)
    meter.start()
    ports = ",".join(str(servers[name].port) for name in names)
    out = subprocess.run(
        [PYTHON, "-m", "bench.http_client", HOST, ports, PATH,
         str(args.connections), str(args.seconds), str(args.slice)],
        cwd=ROOT, capture_output=True, text=True, timeout=4 * args.seconds + 60, check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, client_cpus),
    ).stdout  # fmt: skip
    meter.stop()
    figures = {}
    for name, result in zip(names, json.loads(out), strict=True):
        if result["errors"]:
            raise RuntimeError(f"{name}: {result['errors']} answers were not 200")
        # The meter also counts the client's warm-up second: the same for both servers.
        cpu_ms = meter.seconds[name] * 1000 / max(1, result["requests"])
        figures[name] = (float(result["requests"]) / float(result["seconds"]), cpu_ms)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--slice", type=float, default=0.5, help="seconds on one server")
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    args = parser.parse_args()
    exit_on_signals()
    raise_nofile_limit()
    work = Path(tempfile.mkdtemp(prefix="inkwave-middleware-"))
    (work / "var").mkdir()
    env = base_env(work / "var", ensure_database(DATABASE, fresh=True))
    migrate(env, timeout=180)
    servers = {
        "monitored": Server(server_env(env, monitoring=True, redis_prefix=None), work / "on.log"),
        "unmonitored": Server(
            server_env(env, monitoring=False, redis_prefix=None), work / "off.log"
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for rep in range(args.reps):
            wait_for_quiet(args.quiet_wait)
            line = f"  round {rep + 1}/{args.reps}"
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            figures = load({name: servers[name] for name in order}, args)
            for name in order:
                rate, cpu_ms = figures[name]
                rates[name].append(rate)
                cpu[name].append(cpu_ms)
                line += f"  {name} {rate:.0f}/s ({cpu_ms:.2f} ms CPU)"
            print(line, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    ratios = [m / u for m, u in zip(rates["monitored"], rates["unmonitored"], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"\nGET {PATH}, {args.connections} keep-alive connections, {args.seconds:g} s a round, "
        f"{args.reps} rounds; medians: monitored {statistics.median(rates['monitored']):.0f}/s, "
        f"unmonitored {statistics.median(rates['unmonitored']):.0f}/s, "
        f"ratio {ratio:.3f} ({'meets' if ratio >= TARGET else 'misses'} the target {TARGET})"
    )
    cpu_ratios = [u / m for m, u in zip(cpu["monitored"], cpu["unmonitored"], strict=True)]
    print(
        f"server CPU per request: monitored {statistics.median(cpu['monitored']):.2f} ms, "
        f"unmonitored {statistics.median(cpu['unmonitored']):.2f} ms; "
        f"unmonitored/monitored {statistics.median(cpu_ratios):.3f} "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f} by rate)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
