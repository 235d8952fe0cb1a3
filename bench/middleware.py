"""Benchmark: what the performance middleware costs a request (monitoring/middleware.py).

    .venv/bin/python bench/middleware.py [--reps 5] [--seconds 5] [--connections 20]

Two daphne processes (`python -m inkwave.serve`) on the same PostgreSQL database: one with
MONITORING_ENABLED=true (every request timed and counted, its queries wrapped), one with
false (the middleware only gives the request its id). A client process (bench/http_client.py)
keeps `--connections` keep-alive connections busy on `GET /health/live`, a trivial async
view, on one server then the other, round after round. Prints requests per second of each
and the median over rounds of (monitored / unmonitored); the target is at least 0.95. Also the
server's CPU per request of each, which what else runs on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

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


def load(server: Server, args: argparse.Namespace) -> tuple[float, float]:
    """Requests per second, and the server's CPU milliseconds per request (less sensitive to
    what else the machine runs than the rate)."""
    meter = CpuMeter({"server": server.processes})
    meter.start()
    out = subprocess.run(
        [PYTHON, "-m", "bench.http_client", HOST, str(server.port), PATH,
         str(args.connections), str(args.seconds)],
        cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 60, check=True,
    ).stdout  # fmt: skip
    meter.stop()
    result = json.loads(out)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} answers were not 200")
    # The meter also counts the client's warm-up second: the same for both servers.
    cpu_ms = meter.seconds["server"] * 1000 / max(1, result["requests"])
    return float(result["requests"]) / float(result["seconds"]), cpu_ms


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=20)
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
            for name in order:
                rate, cpu_ms = load(servers[name], args)
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
