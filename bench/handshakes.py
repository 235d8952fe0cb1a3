"""Benchmark: how fast one web process lets WebSocket clients in (a reconnect storm).

    .venv/bin/python bench/handshakes.py [--connections 1000] [--reps 5] [--concurrency 50]

One daphne process (`python -m inkwave.serve bench.asgi_app:application`) on PostgreSQL and
the Redis channel layer, as deployed. Each round, a client process (bench/client.py) opens
`--connections` WebSockets, `--concurrency` handshakes at a time, and waits for each one's
first frame; handshakes per second = connections / the time until the last first frame.
Three kinds of handshake, interleaved round by round on the same server:

- bare: a channels consumer that accepts and sends one frame (bench/asgi_app.py), no
  middleware: what daphne and channels cost, the floor;
- token: a kitchen screen joining its venue's room with a device token (?token=);
- session: a signed-in member joining with a session cookie.

Each ratio is the median over rounds of (kind's rate / the bare rate of the same round); the
target is token and session at least 0.8 of bare. Server CPU per handshake is the daphne
process's CPU over the round divided by the connections.

Uses its own database, inkwave_bench_handshakes (dropped first), and a random Redis prefix
whose keys are deleted at the end. Bounded: fixed counts, a timeout on every wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    CpuMeter,
    delete_redis_keys,
    ensure_database,
    exit_on_signals,
    migrate,
    raise_nofile_limit,
    run_checked,
    wait_for_quiet,
)
from bench.rooms.clients import ClientProcess  # noqa: E402
from bench.server import Server, base_env, new_redis_prefix, server_env  # noqa: E402

DATABASE = "inkwave_bench_handshakes"
KINDS = ("bare", "token", "session")
TARGET = 0.8


def prepare(env: dict[str, str]) -> dict[str, Any]:
    migrate(env, timeout=180)
    out = run_checked([PYTHON, "-m", "bench.setup_db", "--session"], env, timeout=60)
    created: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return created


def spec(server: Server, kind: str, created: dict[str, Any], args: argparse.Namespace) -> dict:
    room = f"{server.ws_base}/ws/venues/{created['venue']}/"
    url, headers = {
        "bare": (f"{server.ws_base}/bench/ws/bare/", None),
        "token": (f"{room}?token={created['token']}", None),
        "session": (room, {"Cookie": created["cookie"]}),
    }[kind]
    return {
        "url": url,
        "headers": headers,
        "connections": args.connections,
        "connect_concurrency": args.concurrency,
        "steps": [],
    }


def one_round(
    server: Server, kind: str, created: dict[str, Any], args: argparse.Namespace, log: Any
) -> dict[str, float]:
    client = ClientProcess(spec(server, kind, created, args), log)
    try:
        meter = CpuMeter({"server": server.processes, "client": [client_ps(client)]})
        meter.start()
        ready = client.expect("ready", time.monotonic() + 300)
        meter.stop()
    finally:
        client.finish()
    # Let the server take the disconnects before the next round is measured.
    time.sleep(1.0)
    seconds = float(ready["connect_seconds"])
    return {
        "rate": args.connections / seconds,
        "seconds": seconds,
        "server_cpu_ms": meter.seconds["server"] * 1000 / args.connections,
        "server_cores": meter.cores["server"],
        "client_cores": meter.cores["client"],
        "other_cores": meter.cores["rest of machine"],
    }


def client_ps(client: ClientProcess) -> Any:
    import psutil

    return psutil.Process(client.process.pid)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    args = parser.parse_args()
    exit_on_signals()
    raise_nofile_limit()
    work = Path(tempfile.mkdtemp(prefix="inkwave-handshakes-"))
    (work / "var").mkdir()
    env = base_env(work / "var", ensure_database(DATABASE, fresh=True))
    print(f"Preparing {DATABASE} in {work} ...", flush=True)
    created = prepare(env)
    prefix = new_redis_prefix()
    server = Server(server_env(env, monitoring=True, redis_prefix=prefix), work / "daphne.log")
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    try:
        server.start()
        with (work / "clients.log").open("ab") as log:
            one_round(server, "token", created, args, log)  # warm-up, not counted
            for rep in range(args.reps):
                waited, busy = wait_for_quiet(args.quiet_wait)
                line = f"  round {rep + 1}/{args.reps}"
                if waited > 1:
                    line += f" (waited {waited:.0f}s for quiet: {busy:.2f} cores busy)"
                for kind in KINDS:
                    result = one_round(server, kind, created, args, log)
                    rounds[kind].append(result)
                    line += f"  {kind} {result['rate']:.0f}/s"
                print(line, flush=True)
                if not server.alive():
                    raise RuntimeError(f"daphne died:\n{server.log()}")
    finally:
        server.stop()
        delete_redis_keys(prefix)
    print_table(rounds, args)
    return 0


def print_table(rounds: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    bare = [r["rate"] for r in rounds["bare"]]
    print(
        f"\n{args.connections} handshakes per round, {args.concurrency} at a time, "
        f"{args.reps} rounds; medians:"
    )
    print(
        f"{'kind':<8} {'handshakes/s':>13} {'x bare':>7} {'server CPU/handshake':>21} "
        f"{'server cores':>13} {'client cores':>13} {'other cores':>12}"
    )
    verdicts = []
    for kind in KINDS:
        rs = rounds[kind]
        ratio = statistics.median(r["rate"] / b for r, b in zip(rs, bare, strict=True))
        if kind != "bare":
            verdicts.append(f"{kind} {ratio:.2f}x ({'meets' if ratio >= TARGET else 'misses'})")
        print(
            f"{kind:<8} {med(rs, 'rate'):>13.0f} {ratio:>7.2f} "
            f"{med(rs, 'server_cpu_ms'):>18.2f} ms {med(rs, 'server_cores'):>13.2f} "
            f"{med(rs, 'client_cores'):>13.2f} {med(rs, 'other_cores'):>12.2f}"
        )
    print(f"\ntarget: at least {TARGET}x bare: " + ", ".join(verdicts))


def med(rs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rs)


if __name__ == "__main__":
    sys.exit(main())
