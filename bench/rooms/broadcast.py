"""Broadcast scenario: one venue room's members, broadcasts paced, in a burst, and (Redis) from
a separate publisher process."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

from bench.common import HOST, ROOT, ms, percentile, sleep_until
from bench.rooms.clients import ClientGroup, Context, start_clients
from bench.rooms.echo import CpuWindow
from bench.server import Server


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
