"""The faults, one after the other: injected, held, undone, and the wait for recovery."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.deployment import Topology
from bench.fault_run.observer import Observer, Probe, healthy
from bench.fault_run.workload import Orders
from notifications.local_slack import Reply, SlackServer


@dataclass(frozen=True)
class FaultPlan:
    name: str
    hold: float  # seconds the fault lasts (for kills: until the restart)


FULL = [
    FaultPlan("redis-down", 30),
    FaultPlan("redis-hung", 20),
    FaultPlan("db-refusing", 30),
    FaultPlan("web-killed", 10),
    FaultPlan("worker-killed", 10),
    FaultPlan("slack-500", 60),
]


QUICK = [
    FaultPlan("redis-down", 15),
    FaultPlan("redis-hung", 10),
    FaultPlan("db-refusing", 15),
    FaultPlan("web-killed", 5),
    FaultPlan("worker-killed", 5),
    FaultPlan("slack-500", 40),  # past SLACK_OUTAGE_SECONDS (30), or it is no outage
]


@dataclass
class FaultRun:
    plan: FaultPlan
    start: float
    restored: float = 0.0
    end: float = 0.0  # when the next fault began, or the run's end
    recovered: dict[str, float | None] = field(default_factory=dict)  # after `restored`


def ended(runs: list[FaultRun], at: float) -> None:
    """Each run's window ends where the next one begins; the last one's at `at`."""
    for run, following in zip(runs, [*runs[1:], None], strict=True):
        run.end = following.start if following else at


class Faults:
    def __init__(
        self, topology: Topology, slack: SlackServer, observer: Observer, orders: Orders
    ) -> None:
        self.topology = topology
        self.slack = slack
        self.observer = observer
        self.orders = orders

    def inject(self, name: str) -> None:
        redis, proxy = self.topology.redis, self.topology.proxy
        assert redis is not None
        assert proxy is not None
        if name == "redis-down":
            redis.stop()
        elif name == "redis-hung":
            redis.pause()
        elif name == "db-refusing":
            proxy.close()
        elif name in ("web-killed", "worker-killed"):
            process = "web-2" if name == "web-killed" else "worker"
            self.observer.expected_down.add(process)
            self.topology.kill(process)
        elif name == "slack-500":
            self.slack.fail_next(*[Reply.status(500)] * 100_000)

    def restore(self, name: str) -> None:
        redis, proxy = self.topology.redis, self.topology.proxy
        assert redis is not None
        assert proxy is not None
        if name == "redis-down":
            redis.start()
        elif name == "redis-hung":
            redis.resume()
        elif name == "db-refusing":
            proxy.open()
        elif name in ("web-killed", "worker-killed"):
            process = "web-2" if name == "web-killed" else "worker"
            self.topology.start_process(process)
            self.observer.expected_down.discard(process)
        elif name == "slack-500":
            with self.slack.state.lock:
                self.slack.state.script.clear()

    def run(self, plan: FaultPlan, limit: float, settle: float) -> FaultRun:
        run = FaultRun(plan, time.time())
        print(f"- {plan.name}: injected, held {plan.hold:.0f} s", flush=True)
        self.inject(plan.name)
        time.sleep(plan.hold)
        self.restore(plan.name)
        run.restored = time.time()
        run.recovered = self.wait_recovery(run.restored, limit, plan.name == "slack-500")
        shown = ", ".join(
            f"{k} {'—' if v is None else f'+{v:.1f} s'}" for k, v in run.recovered.items()
        )
        print(f"  restored; recovered after the restore: {shown}", flush=True)
        time.sleep(settle)
        return run

    def wait_recovery(self, since: float, limit: float, slack: bool) -> dict[str, float | None]:
        found: dict[str, float | None] = {"health": None, "orders": None, "backlog": None}
        deadline = time.time() + limit
        while time.time() < deadline and None in found.values():
            if found["health"] is None:
                found["health"] = self._health_ok_since(since, slack)
            if found["orders"] is None:
                ok = [
                    r.answered
                    for r in self.orders.snapshot()
                    if r.sent >= since and r.status == 201
                ]
                found["orders"] = min(ok) - since if ok else None
            if found["backlog"] is None:
                drained = [
                    at
                    for at, _, age in list(self.observer.outbox)
                    if at >= since and (age or 0) < 5
                ]
                found["backlog"] = min(drained) - since if drained else None
            time.sleep(0.5)
        return found

    def _health_ok_since(self, since: float, slack: bool) -> float | None:
        """When every web process's latest probe says 200 with every check healthy."""
        latest: dict[int, Probe] = {}
        for probe in list(self.observer.probes):
            if probe.at >= since:
                latest[probe.port] = probe
        if set(latest) != set(self.observer.ports):
            return None
        for probe in latest.values():
            if not healthy(probe, slack):
                return None
        return max(p.at for p in latest.values()) - since
