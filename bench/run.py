"""Inkwave Ops venue-room benchmark: the monitored consumer against monitoring switched off.

    .venv/bin/python bench/run.py            # full run, 3 interleaved repetitions (~10 min)
    .venv/bin/python bench/run.py --quick    # smoke run, 1 repetition, short windows (~1.5 min)

Starts one daphne process per configuration on 127.0.0.1 (ports 9100-9199), drives it from
separate client processes (bench/client.py), prints a figures table and writes
bench/results/latest.json. See bench/README.md for what every figure means.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    delete_redis_keys,
    ensure_database,
    git_state,
    raise_nofile_limit,
    redis_available,
    wait_for_quiet,
)
from bench.rooms.broadcast import measure_broadcast
from bench.rooms.clients import Context
from bench.rooms.echo import run_echo_and_open
from bench.rooms.figures import build_rows, render_context, render_table
from bench.rooms.plan import VARIANTS, Plan, parse_args
from bench.server import (
    Server,
    base_env,
    new_redis_prefix,
    prepare_database,
    server_env,
)


def session_plan(plan: Plan) -> list[tuple[str, list[str]]]:
    """(layer, scenarios) of each server run of one repetition: echo and open loop on the
    in-memory layer (the embedded default), the broadcast on every layer asked for."""
    memory = [s for s in plan.scenarios if s != "broadcast" or "memory" in plan.layers]
    sessions = [("memory", memory)] if memory else []
    if "broadcast" in plan.scenarios and "redis" in plan.layers:
        sessions.append(("redis", ["broadcast"]))
    return sessions


LOG_EVENT = re.compile(r"^\S+ \[(warning|error|critical)\s*\] (\S+(?: [^\s<=]+){0,3})")
LOG_EXCEPTION = re.compile(r"^[\w.]+(Error|Exception): ")


def server_log_problems(server: Server) -> dict[str, int]:
    """Warnings, errors and exception lines of the server's log, counted."""
    counts: Counter[str] = Counter()
    for line in server.log(20_000_000).splitlines():
        event = LOG_EVENT.match(line)
        if event:
            counts[f"{event[1]} {event[2]}"] += 1
        elif LOG_EXCEPTION.match(line):
            counts[line[:200]] += 1
    return dict(counts)


def run_session(
    ctx: Context, rep: int, variant: str, layer: str, scenarios: Iterable[str]
) -> dict[str, Any]:
    monitoring = variant == "monitored"
    prefix = new_redis_prefix() if layer == "redis" else None
    env = server_env(ctx.base_env, monitoring=monitoring, redis_prefix=prefix)
    log_path = ctx.work / f"daphne-{rep}-{variant}-{layer}.log"
    server = Server(env, log_path)
    session: dict[str, Any] = {"rep": rep, "variant": variant, "layer": layer, "port": server.port}
    label = f"rep {rep + 1}/{ctx.plan.reps} {variant:<11} {layer:<6}"
    print(f"  {label}", end="", flush=True)
    waited, busy = wait_for_quiet(ctx.plan.quiet_wait)
    session.update(quiet_wait_seconds=waited, background_cores=busy)
    if waited > 1:
        print(f"  (waited {waited:.0f}s for a quiet machine: {busy:.2f} cores busy)", end="")
    print(f"  daphne on :{server.port}", end="", flush=True)
    started = time.monotonic()
    server.start()
    try:
        direct = [s for s in ("open", "echo") if s in scenarios]
        parts: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if direct:
            parts.append(("+".join(direct), lambda: run_echo_and_open(ctx, server, direct)))
        if "broadcast" in scenarios:
            external = layer == "redis" and not ctx.plan.quick
            parts.append(
                (
                    "broadcast",
                    lambda: {"broadcast": measure_broadcast(ctx, server, env, external=external)},
                )
            )
        for name, measure in parts:
            step = time.monotonic()
            session.update(measure())
            if not server.alive():
                raise RuntimeError(f"daphne died during {name}:\n{server.log()}")
            print(f"  {name} {time.monotonic() - step:.0f}s", end="", flush=True)
            time.sleep(0.3)
    finally:
        server.stop()
        if prefix is not None:
            delete_redis_keys(prefix)
    session["server_log_problems"] = server_log_problems(server)
    print(f"  ({time.monotonic() - started:.0f}s)", flush=True)
    return session


def finite(node: Any) -> Any:
    """JSON has no infinity: a percentile that fell on a lost reply is written as null."""
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [finite(v) for v in node]
    return node


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.from_args(args)
    if "redis" in plan.layers and "broadcast" in plan.scenarios and not redis_available():
        print("Redis is not answering on 127.0.0.1:6379; leaving out the Redis layer.")
        layers = tuple(layer for layer in plan.layers if layer != "redis")
        plan = Plan(**{**asdict(plan), "layers": layers})
    raise_nofile_limit()
    cores = os.cpu_count() or 1
    print(
        f"Inkwave venue-room benchmark ({'quick' if plan.quick else 'full'}): {plan.reps} rep(s), "
        f"{plan.warmup:g}s warm-up + {plan.duration:g}s measured, database {plan.database}."
    )
    print(
        f"Machine: {cores} cores, {platform.python_implementation()} {platform.python_version()}; "
        f"1 daphne process and {plan.clients} client process(es) share them, so client CPU is "
        "taken from the same cores as the server's (see the cores table)."
    )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="inkwave-bench-"))
    var_dir = work / "var"
    var_dir.mkdir()
    database_url = ensure_database("inkwave_bench") if plan.database == "postgres" else None
    env = base_env(var_dir, database_url)
    print(f"Preparing the database in {work} ...", flush=True)
    venue, token = prepare_database(env)
    sessions: list[dict[str, Any]] = []
    try:
        with (work / "clients.log").open("ab") as client_log:
            ctx = Context(plan, venue, token, env, work, client_log)
            # Interleaved: monitored, unmonitored, monitored, unmonitored, ... per layer.
            for rep in range(plan.reps):
                for layer, scenarios in session_plan(plan):
                    for variant in VARIANTS:
                        sessions.append(run_session(ctx, rep, variant, layer, scenarios))
    except BaseException:
        print(f"\nFailed; logs are in {work}", file=sys.stderr)
        raise
    rows = build_rows(plan, sessions)
    table = render_table(rows)
    context = render_context(plan, sessions)
    elapsed = time.monotonic() - started
    print()
    print(table)
    print()
    print(context)
    problems: Counter[str] = Counter()
    for session in sessions:
        problems.update(session["server_log_problems"])
    if problems:
        print("\nwarnings and errors in the server logs (all runs; per run in the JSON):")
        for line, count in problems.most_common(10):
            print(f"  {count:>6} x {line}")
    waited = sum(s["quiet_wait_seconds"] for s in sessions)
    print(
        f"\n{len(sessions)} server runs in {elapsed:.0f}s ({waited:.0f}s of it waiting for quiet)."
    )
    report = {
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_seconds": elapsed,
        "machine": {"cores": cores, "python": platform.python_version()},
        "git": git_state(),
        "plan": asdict(plan),
        "figures": [row.as_json() for row in rows],
        "sessions": sessions,
        "table": table,
        "context": context,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(finite(report), indent=2, allow_nan=False, default=str))
    print(f"Results written to {args.output}")
    if args.keep:
        print(f"Logs and database kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
