"""Inkwave Ops venue-room benchmark: the monitored consumer against monitoring switched off.

    .venv/bin/python bench/run.py            # full run, 3 interleaved repetitions (~10 min)
    .venv/bin/python bench/run.py --quick    # smoke run, 1 repetition, short windows (~1.5 min)

Starts one daphne process per configuration on 127.0.0.1 (ports 9100-9199), drives it from
separate client processes (bench/client.py), prints a figures table and writes
bench/results/latest.json. See bench/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import (
    HOST,
    ROOT,
    Server,
    base_env,
    delete_redis_keys,
    ensure_postgres_database,
    new_redis_prefix,
    prepare_database,
    raise_nofile_limit,
    redis_available,
    server_env,
)

RESULTS_DIR = ROOT / "bench" / "results"
VARIANTS = ("monitored", "unmonitored")


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    reps: int
    clients: int
    warmup: float
    duration: float
    echo_connections: tuple[int, ...]
    open_connections: int
    open_rate: float
    members: int
    paced_broadcasts: int
    paced_interval: float
    burst_broadcasts: int
    layers: tuple[str, ...]
    scenarios: tuple[str, ...]
    database: str
    quiet_wait: float
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        return cls(
            reps=args.reps if args.reps is not None else (1 if quick else 3),
            clients=args.clients,
            warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
            duration=args.duration if args.duration is not None else (1.5 if quick else 5.0),
            echo_connections=(100, 1000),
            open_connections=1000,
            open_rate=2000.0,
            members=500,
            paced_broadcasts=4 if quick else 16,
            paced_interval=0.5,
            burst_broadcasts=12 if quick else 40,
            layers=tuple(args.layers.split(",")),
            scenarios=tuple(args.scenarios.split(",")),
            database=args.database,
            quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 10.0),
            quick=quick,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the venue rooms with monitoring on and off (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep, short windows")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument(
        "--clients", type=int, default=1, help="load-generator processes (default 1)"
    )
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 5)")
    parser.add_argument(
        "--layers", default="memory,redis", help="channel layers for the broadcast figures"
    )
    parser.add_argument(
        "--scenarios", default="echo,open,broadcast", help="subset of echo,open,broadcast"
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite in a temp dir (default) or postgres://postgres@127.0.0.1/inkwave_bench",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait for an idle machine before each server run (10; quick: 0)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.reps is not None and not 1 <= args.reps <= 20:
        parser.error("--reps must be between 1 and 20")
    if not 1 <= args.clients <= 4:
        parser.error("--clients must be between 1 and 4")
    if args.duration is not None and not 0.5 <= args.duration <= 60:
        parser.error("--duration must be between 0.5 and 60 seconds")
    if args.quiet_wait is not None and not 0 <= args.quiet_wait <= 120:
        parser.error("--quiet-wait must be between 0 and 120 seconds")
    if args.warmup is not None and not 0 <= args.warmup <= 30:
        parser.error("--warmup must be between 0 and 30 seconds")
    for layer in args.layers.split(","):
        if layer not in ("memory", "redis"):
            parser.error(f"unknown layer {layer!r}")
    for scenario in args.scenarios.split(","):
        if scenario not in ("echo", "open", "broadcast"):
            parser.error(f"unknown scenario {scenario!r}")
    return args


# --- client processes -----------------------------------------------------------------------


class ClientProcess:
    """One `python -m bench.client` process, spoken to with JSON lines over its pipes."""

    def __init__(self, spec: dict[str, Any], log: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.client"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=raise_nofile_limit,  # the parent has no threads of its own here
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(json.dumps(spec))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it exited; expect() reports why

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        """The next message of kind `event`; raises if the client dies or the deadline passes."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"bench client sent no {event!r} in time") from None
            if line is None:
                self.process.wait(5)
                raise RuntimeError(
                    f"bench client exited ({self.process.returncode}) before {event!r}"
                )
            message = json.loads(line)
            if message.get("event") == event:
                return message

    def finish(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class ClientGroup:
    """The client processes of one scenario, started together and released together."""

    def __init__(self, specs: list[dict[str, Any]], log: IO[bytes]) -> None:
        self.members = [ClientProcess(spec, log) for spec in specs]

    def __enter__(self) -> ClientGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for member in self.members:
            member.finish()

    def ready(self, timeout: float = 180.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [member.expect("ready", deadline) for member in self.members]

    def go(self, lead: float = 0.3) -> float:
        t0 = time.time() + lead
        for member in self.members:
            member.send(f"go {t0!r}")
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [member.expect("result", deadline) for member in self.members]

    def send_all(self, line: str) -> None:
        for member in self.members:
            member.send(line)


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


@dataclass
class CpuWindow:
    """Server CPU seconds and the machine's other CPU use between two instants."""

    server: Server
    server_start: float = 0.0
    busy_start: float = 0.0
    wall_start: float = 0.0
    server_seconds: float = 0.0
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    rss_bytes: int = 0

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self) -> None:
        self.server_start = self.server.cpu_seconds()
        self.busy_start = self._busy()
        self.wall_start = time.monotonic()

    def stop(self) -> None:
        self.server_seconds = self.server.cpu_seconds() - self.server_start
        self.busy_seconds = self._busy() - self.busy_start
        self.wall_seconds = time.monotonic() - self.wall_start

    def figures(self, client_cpu: float) -> dict[str, float]:
        wall = self.wall_seconds or 1.0
        other = max(0.0, self.busy_seconds - self.server_seconds - client_cpu)
        return {
            "server_cpu_seconds": self.server_seconds,
            "server_cores": self.server_seconds / wall,
            "client_cores": client_cpu / wall,
            "other_cores": other / wall,
        }


# --- statistics -----------------------------------------------------------------------------


def percentile(values: list[float], q: float, *, lost: int = 0) -> float | None:
    """Nearest-rank percentile; `lost` answers count as infinitely late (None if one is hit)."""
    n = len(values) + lost
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    if rank > len(values):
        return None
    return sorted(values)[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Context:
    plan: Plan
    venue: int
    token: str
    base_env: dict[str, str]
    work: Path
    client_log: IO[bytes]

    def url(self, server: Server) -> str:
        return f"{server.ws_base}/ws/venues/{self.venue}/?token={self.token}"


def client_specs(
    ctx: Context, server: Server, connections: int, steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One spec per client process; the connections are numbered across all of them."""
    specs = []
    base = 0
    for count in split(connections, ctx.plan.clients):
        specs.append(
            {
                "url": ctx.url(server),
                "connections": count,
                "connect_concurrency": 50,
                "index_base": base,
                "total_connections": connections,
                "steps": steps,
            }
        )
        base += count
    return specs


def start_clients(
    ctx: Context, server: Server, connections: int, steps: list[dict[str, Any]]
) -> tuple[ClientGroup, float]:
    """Client processes holding `connections` open connections, ready to run `steps`."""
    specs = client_specs(ctx, server, connections, steps)
    group = ClientGroup(specs, ctx.client_log)
    try:
        ready = group.ready()
        got = sum(r["connections"] for r in ready)
        if got != connections:
            raise RuntimeError(f"only {got} of {connections} connections opened")
    except BaseException:
        group.__exit__()
        raise
    return group, max(r["connect_seconds"] for r in ready)


def timed_step(
    ctx: Context, server: Server, group: ClientGroup
) -> tuple[list[dict[str, Any]], CpuWindow]:
    """Releases the clients on one timetable; reads the server's CPU over the measured part."""
    plan = ctx.plan
    t0 = group.go()
    cpu = CpuWindow(server)
    sleep_until(t0 + plan.warmup)
    cpu.start()
    sleep_until(t0 + plan.warmup + plan.duration)
    cpu.stop()
    cpu.rss_bytes = server.rss_bytes()
    return group.results(timeout=plan.duration + 60), cpu


def echo_step(ctx: Context) -> dict[str, Any]:
    return {"mode": "echo", "warmup": ctx.plan.warmup, "duration": ctx.plan.duration}


def open_step(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return {
        "mode": "open",
        "warmup": plan.warmup,
        "duration": plan.duration,
        "rate": plan.open_rate,
        "drain_seconds": 3.0,
    }


def measure_echo(
    ctx: Context, server: Server, group: ClientGroup, connections: int, connect_seconds: float
) -> dict[str, Any]:
    results, cpu = timed_step(ctx, server, group)
    completed = sum(r["completed"] for r in results)
    rtts = [x for r in results for x in r["rtts"]]
    client_cpu = sum(r["client_cpu_seconds"] or 0.0 for r in results)
    return {
        "connections": connections,
        "round_trips": completed,
        "throughput": completed / ctx.plan.duration,
        "server_cpu_us_per_msg": cpu.server_seconds / completed * 1e6 if completed else None,
        "rtt_p50_ms": ms(percentile(rtts, 0.50)),
        "rtt_p99_ms": ms(percentile(rtts, 0.99)),
        "unexpected_frames": sum(r["unexpected"] for r in results),
        "connect_seconds": connect_seconds,
        "server_rss_mb": cpu.rss_bytes / 2**20,
        **cpu.figures(client_cpu),
    }


def measure_open(ctx: Context, server: Server, group: ClientGroup) -> dict[str, Any]:
    plan = ctx.plan
    results, cpu = timed_step(ctx, server, group)
    sent = sum(r["sent_in_window"] for r in results)
    received = sum(r["received_in_window"] for r in results)
    lost = sent - received
    rtts = [x for r in results for x in r["rtts"]]
    lags = [x for r in results for x in r["send_lags"]]
    client_cpu = sum(r["client_cpu_seconds"] or 0.0 for r in results)
    return {
        "connections": plan.open_connections,
        "rate": plan.open_rate,
        "sent": sent,
        "received": received,
        "lost": lost,
        "achieved_rate": received / plan.duration,
        "rtt_p50_ms": ms(percentile(rtts, 0.50, lost=lost)),
        "rtt_p99_ms": ms(percentile(rtts, 0.99, lost=lost)),
        "rtt_p999_ms": ms(percentile(rtts, 0.999, lost=lost)),
        "rtt_max_ms": ms(max(rtts)) if rtts and not lost else None,
        "client_send_lag_p99_ms": ms(percentile(lags, 0.99)),
        "server_cpu_us_per_msg": cpu.server_seconds / received * 1e6 if received else None,
        "unexpected_frames": sum(r["unexpected"] for r in results),
        **cpu.figures(client_cpu),
    }


def run_echo_and_open(ctx: Context, server: Server, scenarios: Iterable[str]) -> dict[str, Any]:
    """The open loop first, on a server that has seen no load yet, then the echo sizes; each
    on its own fresh connections, so no scenario inherits another's backlog or garbage."""
    plan = ctx.plan
    out: dict[str, Any] = {}
    if "open" in scenarios:
        group, connect_seconds = start_clients(ctx, server, plan.open_connections, [open_step(ctx)])
        with group:
            out["open"] = measure_open(ctx, server, group)
        out["open"]["connect_seconds"] = connect_seconds
        time.sleep(0.3)
    if "echo" in scenarios:
        for n in plan.echo_connections:
            group, connect_seconds = start_clients(ctx, server, n, [echo_step(ctx)])
            with group:
                out[f"echo{n}"] = measure_echo(ctx, server, group, n, connect_seconds)
            time.sleep(0.3)
    return out


def trigger_broadcasts(
    server: Server, venue: int, count: int, interval: float, first: int
) -> dict[str, Any]:
    """POST /bench/broadcast: the server itself calls abroadcast_to_venue `count` times."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=count * interval + 60)
    try:
        conn.request(
            "POST", f"/bench/broadcast?venue={venue}&n={count}&interval={interval}&first={first}"
        )
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/bench/broadcast answered {response.status}: {body[:500]}")
    return json.loads(body)


def publish_from_process(
    env: dict[str, str], venue: int, count: int, interval: float, first: int
) -> dict[str, Any]:
    """A separate publisher process on the same (Redis) channel layer."""
    args = ["--venue", str(venue), "--n", str(count), "--interval", str(interval)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.broadcaster", *args, "--first", str(first)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=count * interval + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.broadcaster failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_phase(group: ClientGroup, name: str, timeout: float) -> float | None:
    """Waits until every client has every broadcast of the phase; returns their CPU seconds
    spent from the phase's first frame, or None if some deliveries never came."""
    deadline = time.monotonic() + timeout
    cpu = 0.0
    try:
        for member in group.members:
            message = member.expect("phase_done", deadline)
            while message["phase"] != name:  # a late earlier phase, already given up on
                message = member.expect("phase_done", deadline)
            cpu += message["cpu"]
    except TimeoutError:
        return None
    return cpu


def summarise_phase(
    per_broadcast: dict[int, list[float]], first: int, count: int, members: int
) -> dict[str, Any]:
    entries = [per_broadcast.get(i) for i in range(first, first + count)]
    seen = [e for e in entries if e is not None]
    deliveries = int(sum(e[0] for e in seen))
    expected = count * members
    # A broadcast that did not reach every member has no "time until all members have it".
    complete = [e for e in seen if e[0] == members]
    missing = count - len(complete)
    all_times = [e[1] for e in complete]
    span = (max(e[3] for e in seen) - min(e[2] for e in seen)) if seen else 0.0
    return {
        "broadcasts": count,
        "deliveries": deliveries,
        "lost_deliveries": expected - deliveries,
        "deliveries_per_s": deliveries / span if span > 0 else None,
        "all_members_p50_ms": ms(percentile(all_times, 0.50, lost=missing)),
        "all_members_p99_ms": ms(percentile(all_times, 0.99, lost=missing)),
        "all_members_max_ms": ms(max(all_times)) if all_times and not missing else None,
        # Per broadcast, in sending order (null: some member never got it).
        "all_members_ms": [
            None if e is None or e[0] != members else round(e[1] * 1000.0, 2) for e in entries
        ],
    }


def measure_broadcast(
    ctx: Context, server: Server, env: dict[str, str], *, external: bool
) -> dict[str, Any]:
    plan = ctx.plan
    paced = ("paced", 0, plan.paced_broadcasts)
    burst = ("burst", plan.paced_broadcasts, plan.burst_broadcasts)
    phases = [paced, burst]
    if external:
        phases.append(("external", paced[2] + burst[2], plan.paced_broadcasts))
    deadline = 60.0 + plan.paced_broadcasts * plan.paced_interval * 2 + plan.burst_broadcasts
    step = {
        "mode": "broadcast",
        "phases": [{"name": n, "first": f, "count": c} for n, f, c in phases],
        "deadline": deadline,
    }
    out: dict[str, Any] = {"members": plan.members}
    group, out["connect_seconds"] = start_clients(ctx, server, plan.members, [step])
    with group:
        sleep_until(group.go())
        # 1. paced: one broadcast every paced_interval, for the time until all members have it.
        trigger_broadcasts(server, ctx.venue, paced[2], plan.paced_interval, paced[1])
        out["paced_complete"] = wait_phase(group, "paced", 30) is not None
        time.sleep(0.3)
        # 2. burst: back to back, for deliveries per second and server CPU per delivery.
        cpu = CpuWindow(server)
        cpu.start()
        trigger_broadcasts(server, ctx.venue, burst[2], 0.0, burst[1])
        burst_client_cpu = wait_phase(group, "burst", 60)
        cpu.stop()
        out["burst_complete"] = burst_client_cpu is not None
        if external:
            time.sleep(0.3)
            publish_from_process(env, ctx.venue, phases[2][2], plan.paced_interval, phases[2][1])
            out["external_complete"] = wait_phase(group, "external", 30) is not None
        group.send_all("stop")
        results = group.results(timeout=60)
    per_broadcast: dict[int, list[float]] = {}
    for result in results:
        for key, (count, worst, sent_at, last) in result["per_broadcast"].items():
            entry = per_broadcast.setdefault(int(key), [0, 0.0, sent_at, 0.0])
            entry[0] += count
            entry[1] = max(entry[1], worst)
            entry[2] = min(entry[2], sent_at)
            entry[3] = max(entry[3], last)
    for name, first, count in phases:
        out[name] = summarise_phase(per_broadcast, first, count, plan.members)
    deliveries = out["burst"]["deliveries"]
    out["burst"]["server_cpu_us_per_delivery"] = (
        cpu.server_seconds / deliveries * 1e6 if deliveries else None
    )
    out["burst"].update(cpu.figures(burst_client_cpu or 0.0))
    out["unexpected_frames"] = sum(r["unexpected"] for r in results)
    return out


# --- sessions: one fresh server each --------------------------------------------------------


QUIET_CORES = 0.3


def machine_busy_cores(seconds: float = 0.5) -> float:
    """Cores in use on the whole machine over a short probe."""
    before = CpuWindow._busy()
    time.sleep(seconds)
    return (CpuWindow._busy() - before) / seconds


def wait_for_quiet(limit: float) -> tuple[float, float | None]:
    """Waits (at most `limit` s) until the machine is nearly idle; returns (waited, busy cores)."""
    if limit <= 0:
        return 0.0, None
    started = time.monotonic()
    busy = machine_busy_cores()
    while busy > QUIET_CORES and time.monotonic() - started < limit:
        busy = machine_busy_cores(1.0)
    return time.monotonic() - started, busy


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


# --- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    label: str
    path: tuple[str, ...]  # into a session: (scenario, metric)
    layer: str
    unit: str
    digits: int = 0
    # "ratio>=": monitored/unmonitored must be at least; "ratio<=": at most; "max": monitored below
    target_kind: str | None = None
    target: float | None = None

    def measured(self, session: dict[str, Any]) -> bool:
        node: Any = session
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    def value(self, session: dict[str, Any]) -> float | None:
        """The figure of one session; None when it could not be computed (lost replies)."""
        node: Any = session
        for key in self.path:
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    def target_text(self) -> str:
        if self.target_kind == "ratio>=":
            return f"ratio >= {self.target:.2f}"
        if self.target_kind == "ratio<=":
            return f"ratio <= {self.target:.2f}"
        if self.target_kind == "max":
            return f"< {self.target:g} {self.unit}"
        return ""


def figures_for(plan: Plan) -> list[Figure]:
    figures: list[Figure] = []
    if "echo" in plan.scenarios:
        for n in plan.echo_connections:
            figures.append(
                Figure(
                    f"echo closed loop, {n:,} conns: round trips/s",
                    (f"echo{n}", "throughput"),
                    "memory",
                    "/s",
                    target_kind="ratio>=",
                    target=0.95,
                )
            )
            figures.append(
                Figure(
                    f"echo closed loop, {n:,} conns: server CPU/msg",
                    (f"echo{n}", "server_cpu_us_per_msg"),
                    "memory",
                    "us",
                    1,
                )
            )
    if "open" in plan.scenarios:
        rate = f"{plan.open_connections:,} conns @ {plan.open_rate:,.0f}/s"
        figures += [
            Figure(f"open loop {rate}: RTT p50", ("open", "rtt_p50_ms"), "memory", "ms", 2),
            Figure(
                f"open loop {rate}: RTT p99",
                ("open", "rtt_p99_ms"),
                "memory",
                "ms",
                2,
                target_kind="max",
                target=5.0,
            ),
            Figure(
                f"open loop {rate}: server CPU/msg",
                ("open", "server_cpu_us_per_msg"),
                "memory",
                "us",
                1,
                target_kind="ratio<=",
                target=1.05,
            ),
            Figure(f"open loop {rate}: lost replies", ("open", "lost"), "memory", ""),
        ]
    if "broadcast" in plan.scenarios:
        for layer in plan.layers:
            head = f"broadcast {plan.members} members, {layer}"
            figures += [
                Figure(
                    f"{head}: deliveries/s (burst)",
                    ("broadcast", "burst", "deliveries_per_s"),
                    layer,
                    "/s",
                ),
                Figure(
                    f"{head}: server CPU/delivery (burst)",
                    ("broadcast", "burst", "server_cpu_us_per_delivery"),
                    layer,
                    "us",
                    1,
                ),
                Figure(
                    f"{head}: all members p50 (paced)",
                    ("broadcast", "paced", "all_members_p50_ms"),
                    layer,
                    "ms",
                    1,
                ),
                Figure(
                    f"{head}: all members p99 (paced)",
                    ("broadcast", "paced", "all_members_p99_ms"),
                    layer,
                    "ms",
                    1,
                ),
                Figure(
                    f"{head}: lost deliveries",
                    ("broadcast", "burst", "lost_deliveries"),
                    layer,
                    "",
                ),
            ]
            if layer == "redis":
                figures += [
                    Figure(
                        f"{head}: all members p50 (separate publisher)",
                        ("broadcast", "external", "all_members_p50_ms"),
                        layer,
                        "ms",
                        1,
                    ),
                    Figure(
                        f"{head}: all members p99 (separate publisher)",
                        ("broadcast", "external", "all_members_p99_ms"),
                        layer,
                        "ms",
                        1,
                    ),
                ]
    return figures


@dataclass
class Row:
    figure: Figure
    monitored: list[float | None] = field(default_factory=list)
    unmonitored: list[float | None] = field(default_factory=list)

    @staticmethod
    def median(values: list[float | None]) -> float | None:
        # A missing value (a percentile that fell on a lost reply) ranks as the worst.
        if not values:
            return None
        return statistics.median(math.inf if v is None else v for v in values)

    def ratio(self) -> float | None:
        """Median over repetitions of monitored / unmonitored, each pair run back to back."""
        pairs = [
            m / u
            for m, u in zip(self.monitored, self.unmonitored, strict=False)
            if m is not None and u is not None and u != 0
        ]
        return statistics.median(pairs) if pairs else None

    def verdict(self) -> str:
        kind, target = self.figure.target_kind, self.figure.target
        if kind is None or target is None:
            return ""
        if kind == "max":
            value = self.median(self.monitored)
            return "ok" if value is not None and value < target else "FAIL"
        ratio = self.ratio()
        if ratio is None:
            return "?"
        passed = ratio >= target if kind == "ratio>=" else ratio <= target
        return "ok" if passed else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.figure.label,
            "layer": self.figure.layer,
            "unit": self.figure.unit,
            "monitored": self.monitored,
            "unmonitored": self.unmonitored,
            "monitored_median": self.median(self.monitored),
            "unmonitored_median": self.median(self.unmonitored),
            "ratio": self.ratio(),
            "target": self.figure.target_text() or None,
            "verdict": self.verdict() or None,
        }


def build_rows(plan: Plan, sessions: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for figure in figures_for(plan):
        row = Row(figure)
        for rep in range(plan.reps):
            for variant in VARIANTS:
                match = [
                    s
                    for s in sessions
                    if s["rep"] == rep and s["variant"] == variant and s["layer"] == figure.layer
                ]
                if match and figure.measured(match[0]):
                    values = row.monitored if variant == "monitored" else row.unmonitored
                    values.append(figure.value(match[0]))
        if row.monitored or row.unmonitored:
            rows.append(row)
    return rows


def fmt(value: float | None, digits: int, unit: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "lost"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit not in ("", "/s") else text


def render_table(rows: list[Row]) -> str:
    header = ("figure (median of reps)", "monitored", "unmonitored", "ratio", "target", "")
    lines = [header]
    for row in rows:
        f = row.figure
        ratio = row.ratio()
        lines.append(
            (
                f.label + (f" [{f.unit}]" if f.unit == "/s" else ""),
                fmt(row.median(row.monitored), f.digits, f.unit),
                fmt(row.median(row.unmonitored), f.digits, f.unit),
                "-" if ratio is None else f"{ratio:.3f}",
                f.target_text(),
                row.verdict(),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:4], widths[1:4], strict=True)
        ]
        cells += [line[4].ljust(widths[4]), line[5]]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


NOISY_OTHER_CORES = 0.25


def render_context(plan: Plan, sessions: list[dict[str, Any]]) -> str:
    """Who used the cores during each measured window (median over repetitions)."""
    windows: list[tuple[str, str, tuple[str, ...]]] = [
        (f"echo{n}", "memory", (f"echo{n}",)) for n in plan.echo_connections
    ]
    windows.append(("open", "memory", ("open",)))
    windows += [(f"burst {x}", x, ("broadcast", "burst")) for x in plan.layers]
    lines = [
        "cores used in each measured window (median of reps): the daphne process, the client",
        "process(es), and everything else on the machine (other people's work shows up there)",
    ]
    noisy = False
    for label, layer, path in windows:
        for variant in VARIANTS:
            found = []
            for session in sessions:
                node: Any = session if session["layer"] == layer else None
                for key in path:
                    node = node.get(key) if isinstance(node, dict) else None
                if session["variant"] == variant and isinstance(node, dict):
                    found.append(node)
            if not found:
                continue

            def med(name: str, found: list[dict[str, Any]] = found) -> float:
                return statistics.median(x.get(name) or 0.0 for x in found)

            noisy = noisy or max(x.get("other_cores", 0.0) for x in found) > NOISY_OTHER_CORES
            rss = (
                f"  server RSS {med('server_rss_mb'):.0f} MB" if "server_rss_mb" in found[0] else ""
            )
            lines.append(
                f"  {label:<13} {variant:<11} server {med('server_cores'):.2f}  clients "
                f"{med('client_cores'):.2f}  other {med('other_cores'):.2f}{rss}"
            )
    if noisy:
        lines.append(
            f"  note: something else used more than {NOISY_OTHER_CORES} cores in at least one"
            " window; those figures are noisier (see sessions[] in the JSON)."
        )
    return "\n".join(lines)


def session_plan(plan: Plan) -> list[tuple[str, list[str]]]:
    """(layer, scenarios) of each server run of one repetition: echo and open loop on the
    in-memory layer (the embedded default), the broadcast on every layer asked for."""
    memory = [s for s in plan.scenarios if s != "broadcast" or "memory" in plan.layers]
    sessions = [("memory", memory)] if memory else []
    if "broadcast" in plan.scenarios and "redis" in plan.layers:
        sessions.append(("redis", ["broadcast"]))
    return sessions


def git_state() -> dict[str, Any]:
    """Which code was measured: HEAD and the files that differ from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {"head": git("rev-parse", "HEAD"), "changed": git("status", "--short").splitlines()}


def finite(node: Any) -> Any:
    """JSON has no infinity: a percentile that fell on a lost reply is written as null."""
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [finite(v) for v in node]
    return node


# --- main -----------------------------------------------------------------------------------


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
    database_url = (
        ensure_postgres_database("inkwave_bench") if plan.database == "postgres" else None
    )
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
