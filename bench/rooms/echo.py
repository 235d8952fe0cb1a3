"""Echo (closed loop) and open-loop scenarios: round trips and the server's CPU per message."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from bench.common import CpuMeter, ms, percentile, sleep_until
from bench.rooms.clients import ClientGroup, Context, start_clients
from bench.server import Server


class CpuWindow:
    """Server CPU seconds and the machine's other CPU use between two instants."""

    def __init__(self, server: Server) -> None:
        self.meter = CpuMeter({"server": server.processes})
        self.rss_bytes = 0

    def start(self) -> None:
        self.meter.start()

    def stop(self) -> None:
        self.meter.stop()

    @property
    def server_seconds(self) -> float:
        return self.meter.seconds.get("server", 0.0)

    def figures(self, client_cpu: float) -> dict[str, float]:
        wall = self.meter.wall or 1.0
        other = max(0.0, self.meter.machine_seconds - self.server_seconds - client_cpu)
        return {
            "server_cpu_seconds": self.server_seconds,
            "server_cores": self.server_seconds / wall,
            "client_cores": client_cpu / wall,
            "other_cores": other / wall,
        }


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
