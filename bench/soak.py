"""The soak: the whole deployment under 2,000 kitchen screens and a stream of orders, broken on
purpose one dependency after another, and a report of what it cost.

    .venv/bin/python bench/soak.py            # 2,000 screens over 50 venues, about 15 minutes
    .venv/bin/python bench/soak.py --short    # 120 screens over 6 venues, short faults, ~4 min

Starts bench/deployment.py's topology with a PostgreSQL cluster and a Redis of their own (to
restart and stop; the shared ones are never touched): two web processes, a Celery worker, beat
and the local Slack server. The web processes run as two hosts (deployment's --netns: each in a
network namespace of its own, with its own address on a private bridge, hostname and var/
directory) where this machine allows it (root, iproute2); else, or with --no-netns, on loopback,
and the report says which and why at its top. The clients reach each web process at its
address, as they would across a network; the namespaces and the bridge are deleted at the end,
also on an error, Ctrl-C or SIGTERM (as are the run's own PostgreSQL and Redis). Then:

- `--screens` kitchen screens (the reference room client, bench/fault_screens.py, in two
  processes) spread over `--venues` venues and, at random at every connect, both web processes;
  they ping every 15 s and resume after every reconnect;
- `--churn` devices that come and go (a stay of 1-5 minutes, back after half as long);
- orders through `POST /api/v1/orders` at `--rate` a second, with a burst of five times that
  for 10 s of every minute, alternating between the web processes; each taken by its venue's
  kitchen (`PATCH` accepted) 2-8 s after its 201, as staff do;
- /health probed on both web processes every 0.5 s, the outbox read straight from PostgreSQL.

After a quiet minute, one after the other (bench/soak_run/plan.py): an attack (20,000 bad API
requests, a WebSocket client sending garbage, oversized frames and floods), Redis stopped,
PostgreSQL stopped and started again, web-2 SIGKILLed, the worker SIGKILLed while a message is
in flight to Slack, and Slack answering 429 (Retry-After) for a minute, 500 for a minute, then
down for five. Each is followed by a bounded wait for recovery. Then the orders stop, the outbox
drains, the screens stop, and bench/soak_run/report.py judges everything from the database, the
clients, the Slack server and the probes. Exit status 1 if any check failed.

Bounded in count and time: fixed client counts, every wait with a timeout, the whole run
stopped after `--limit` minutes whatever happens.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import netns  # noqa: E402
from bench.common import exit_on_signals, host_of, spare_port  # noqa: E402
from bench.deployment import Topology  # noqa: E402
from bench.deployment import parse_args as deployment_args  # noqa: E402
from bench.fault_run.observer import Observer, query, wait_drained, wait_listening  # noqa: E402
from bench.fault_run.workload import Clients, OrderResult, Orders, api_request  # noqa: E402
from bench.rooms.clients import ClientProcess  # noqa: E402
from bench.soak_run.abuse import AbusiveClient, BadRequests  # noqa: E402
from bench.soak_run.plan import Fault, plan  # noqa: E402
from bench.soak_run.report import Run, Window, report  # noqa: E402
from notifications.local_slack import Reply, SlackServer  # noqa: E402

DATABASE = "inkwave_soak"

# The system's settings, except where a figure needs otherwise (bench/README.md says why).
SETTINGS = {
    "ALERT_EVALUATION_SECONDS": "10",  # the default 60 s would hide detection in its period
    "ORDER_NOTIFY_LIMIT": "0",  # one message per order, so each can be checked once
    "SLACK_MIN_INTERVAL_SECONDS": "0.1",  # the orders' rate must fit a channel's
    "LOG_LEVEL": "warning",
}
# --ci sees each fault sooner (its faults are seconds long): rules evaluated every 5 s.
# ... and Slack failing 10 s is an outage (the shipped line is 30 s), for the rule and for
# the summary a channel gets once its backlog is out.
CI_SETTINGS = {"ALERT_EVALUATION_SECONDS": "5", "SLACK_OUTAGE_SECONDS": "10"}
CI_SLACK_OUTAGE_SECONDS = 10
# The longest a run waits past the last fault's undo for an open incident to resolve (its
# rule's window, pending and clear time; the shipped rules' are 7 to 8 minutes).
RESOLVE_CAP = 900


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="few clients, short faults")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="the test suite's: fewer still, each fault just long enough to be seen, and the "
        "incidents' resolution not waited for",
    )
    parser.add_argument("--screens", type=int, default=None, help="kitchen screens")
    parser.add_argument("--venues", type=int, default=None)
    parser.add_argument("--churn", type=int, default=None, help="devices that come and go")
    parser.add_argument("--rate", type=float, default=None, help="orders per second")
    parser.add_argument("--bad-requests", type=int, default=None)
    parser.add_argument("--only", default="", help="comma-separated faults to run, in order")
    parser.add_argument("--limit", type=float, default=40.0, help="minutes, at most")
    parser.add_argument("--dir", type=Path, default=None, help="logs (default: temp, removed)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/soak.json")
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="the web processes on loopback, not as hosts of their own in network namespaces",
    )
    args = parser.parse_args(argv)
    profile = "ci" if args.ci else "short" if args.short else "full"
    short = profile != "full"
    defaults = {
        "screens": {"full": 2000, "short": 120, "ci": 60}[profile],
        "venues": {"full": 50, "short": 6, "ci": 3}[profile],
        "churn": {"full": 100, "short": 20, "ci": 10}[profile],
        "rate": 2.0,
        "bad_requests": {"full": 20_000, "short": 2000, "ci": 600}[profile],
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.screens <= 4000 or not 1 <= args.venues <= 100 or not 0 < args.rate <= 10:
        parser.error("--screens 1-4000, --venues 1-100, --rate up to 10")
    if not 0 <= args.bad_requests <= 50_000 or not 0 <= args.churn <= 500:
        parser.error("--bad-requests up to 50,000, --churn up to 500")
    faults = plan(profile)
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {f.name for f in faults}
        if unknown:
            parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
        faults = [f for f in faults if f.name in wanted]
    args.faults = faults
    args.quiet = {"full": 60.0, "short": 20.0, "ci": 5.0}[profile]  # before the first fault
    args.settle = {"full": 20.0, "short": 10.0, "ci": 8.0}[profile]  # after each recovery
    args.recovery_limit = 60.0 if short else 180.0
    # After the last fault: "Slack delivery failing" looks back 60 s and clears after 120 s.
    args.resolve_limit = 0.0 if args.ci else 300.0
    return args


class OrdersWithBursts(Orders):
    """Orders at `rate`, and at five times that for 10 s of every minute; the venue's kitchen
    takes each (PATCH status accepted) a few seconds after it got a 201, as staff do."""

    def __init__(
        self, ports: list[int], venues: list[dict[str, Any]], rate: float, hosts: dict[int, str]
    ) -> None:
        super().__init__(ports, venues, rate, hosts)
        self.kitchen = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kitchen")
        self.tokens = {v["venue"]: v["token"] for v in venues}
        self.taken: Counter[str] = Counter()  # PATCH answers by status
        self.aborted = threading.Event()  # the run is ending early: nothing more is taken

    def _one(self, seq: int) -> OrderResult:
        result = super()._one(seq)
        if result.status == 201 and result.order_id is not None:
            self.kitchen.submit(self._take, result.order_id, result.venue, result.port)
        return result

    def _take(self, order: int, venue: int, port: int) -> None:
        if self.aborted.wait(random.uniform(2.0, 8.0)):
            return
        for _ in range(3):
            body = json.dumps({"status": "accepted"})
            status, _, _ = api_request(port, "PATCH", f"/api/v1/orders/{order}", body,
                                    self.tokens[venue], host=host_of(self.hosts, port))  # fmt: skip
            with self.lock:
                self.taken[str(status)] += 1
            if status == 200 or self.stop.is_set():
                return
            port = next(p for p in self.ports if p != port)
            if self.aborted.wait(5):
                return

    def _schedule(self) -> None:
        start = time.monotonic()
        due = start
        while not self.stop.is_set():
            self.seq += 1
            self.pool.submit(self._one, self.seq)
            burst = (time.monotonic() - start) % 60 < 10
            due += 1 / (self.rate * (5 if burst else 1))
            self.stop.wait(max(0.0, due - time.monotonic()))

    def finish(self) -> None:
        super().finish()
        self.kitchen.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """End at once (a signal, an error): the kitchen's waits and retries end too, so that
        the interpreter's exit, which joins its threads, does not wait minutes for them."""
        self.stop.set()
        self.aborted.set()
        self.kitchen.shutdown(wait=False, cancel_futures=True)


class Soak:
    """`netns_off`: why the web processes run on loopback (None: each a host of its own)."""

    def __init__(self, args: argparse.Namespace, work: Path, netns_off: str | None) -> None:
        self.args = args
        self.work = work
        self.netns_off = netns_off
        self.slack: SlackServer  # the one listening where the topology says (start())
        self.ports = [spare_port(), spare_port()]
        self.hosts: dict[int, str] = {}  # port -> the web process's address
        argv = [
            *("--dir", str(work), "--database", DATABASE, "--ports"),
            ",".join(map(str, self.ports)),
            *("--venues", str(args.venues), "--own-redis", "--own-postgres"),
            *(() if netns_off else ("--netns",)),
        ]
        settings = SETTINGS | (CI_SETTINGS if args.ci else {})
        for name, value in settings.items():
            argv += ["--set", f"{name}={value}"]
        self.topology = Topology(deployment_args(argv))
        self.state: dict[str, Any] = {}
        self.screens: list[ClientProcess] = []
        self.observer: Observer | None = None
        self.churn: Clients | None = None
        self.orders: OrdersWithBursts | None = None
        self.abuse: tuple[BadRequests, AbusiveClient] | None = None
        self.memory: dict[str, dict[str, int]] = {}
        self.deadline = time.monotonic() + args.limit * 60

    # --- the run ----------------------------------------------------------------------------

    def start(self, slack: SlackServer) -> None:
        self.slack = slack
        self.state = self.topology.start(self.slack)
        self.hosts = dict(zip(self.ports, self.state["hosts"], strict=True))
        if self.args.ci:
            query(
                "UPDATE monitoring_alertrule SET threshold = %s WHERE metric = %s RETURNING id",
                CI_SLACK_OUTAGE_SECONDS, "notifications.slack_failing_seconds",
                url=self.state["database_url"],
            )  # fmt: skip
        wait_listening(self.ports, 120, self.hosts)
        print(f"topology up in {self.work}:", flush=True)
        for line in self.placement():
            print(f"  {line}", flush=True)
        self.observer = Observer(
            self.topology, self.ports, url=self.state["database_url"], hosts=self.hosts
        )
        self.observer.start()
        venues = self.state["venues"]
        began = time.time()
        half = (self.args.screens + 1) // 2
        for part in range(2):
            numbers = range(part * half, min(self.args.screens, (part + 1) * half))
            spec = {
                "screens": [
                    [
                        [f"ws://{self.hosts[p]}:{p}/ws/venues/{venues[i % len(venues)]['venue']}/"
                         for p in self.ports],
                        venues[i % len(venues)]["token"],
                        venues[i % len(venues)]["venue"],
                    ]
                    for i in numbers
                ],
                "heartbeat_seconds": 15,
            }  # fmt: skip
            log = (self.work / f"screens-{part + 1}.log").open("ab")
            self.screens.append(ClientProcess(spec, log, module="bench.fault_screens"))
        self.ready = [s.expect("ready", time.monotonic() + 300) for s in self.screens]
        print(f"{self.args.screens} screens live in {time.time() - began:.0f} s", flush=True)
        # Guests' phones and the odd tablet: a few minutes each, then gone for a while.
        self.churn = Clients(
            self.ports, venues, self.args.churn, stay=(60.0, 300.0), hosts=self.hosts
        )
        self.churn.start()
        self.orders = OrdersWithBursts(self.ports, venues, self.args.rate, self.hosts)
        self.orders.start()

    def placement(self) -> list[str]:
        """Where the web processes run, and why on loopback if they do."""
        lines = self.topology.placement()
        if self.netns_off:
            lines.insert(
                0, f"NOT as separate hosts: {self.netns_off}; both on this host's loopback"
            )
        return lines

    def measure_memory(self, when: str) -> None:
        for name, process in self.topology.processes.items():
            try:
                rss = psutil.Process(process.pid).memory_info().rss
            except psutil.Error:
                continue
            self.memory.setdefault(name, {})[when] = rss
            self.memory[name][f"{when} pid"] = process.pid

    def faults(self) -> list[Window]:
        windows: list[Window] = []
        for fault in self.args.faults:
            if time.monotonic() > self.deadline:
                print(f"- {fault.name}: skipped, past --limit", flush=True)
                break
            window = Window(fault, time.time())
            if windows:
                windows[-1].end = window.start
            windows.append(window)
            print(f"- {fault.name}: ", end="", flush=True)
            window.note = self.inject(fault, window)
            window.restored = time.time()
            window.undoing = window.undoing or window.restored
            print(window.note, flush=True)
            window.recovered = self.wait_recovery(window)
            shown = "—" if window.recovered is None else f"+{window.recovered:.1f} s"
            print(f"  /health 200 everywhere and an order taken {shown} after the undo", flush=True)
            time.sleep(self.args.settle)
        return windows

    def inject(self, fault: Fault, window: Window) -> str:
        topology, observer = self.topology, self.observer
        assert observer is not None
        redis, postgres = topology.redis, topology.postgres
        assert redis is not None
        assert postgres is not None
        if fault.name == "abuse":
            return self.attack()
        if fault.name == "redis-down":
            redis.stop()
            time.sleep(fault.hold)
            window.undoing = time.time()
            redis.start()
            return f"Redis stopped for {fault.hold:.0f} s"
        if fault.name == "postgres-restart":
            postgres.stop("fast")
            time.sleep(fault.hold)
            window.undoing = time.time()
            postgres.start()
            return f"PostgreSQL stopped (fast) and started {fault.hold:.0f} s later"
        if fault.name in ("web-killed", "worker-killed"):
            name = "web-2" if fault.name == "web-killed" else "worker"
            caught = ""
            if name == "worker":
                caught = self.mid_delivery()
            observer.expected_down.add(name)
            topology.kill(name)
            window.killed_at = time.time()
            time.sleep(fault.hold)
            topology.start_process(name)
            if name == "web-2":
                wait_listening([self.ports[1]], 60, self.hosts)
                window.listening = time.time()
            observer.expected_down.discard(name)
            return f"{name} SIGKILLed{caught}, started again after {fault.hold:.0f} s"
        if fault.name == "slack":
            rate_limited, failing, down = fault.phases
            self.slack.answer_all(Reply.rate_limited(10))
            time.sleep(rate_limited)
            self.slack.answer_all(Reply.status(500))
            time.sleep(failing)
            self.slack.answer_all(None)
            self.slack.go_down()
            time.sleep(down)
            self.slack.come_back()
            return (
                f"Slack: 429 with Retry-After 10 for {rate_limited:.0f} s, 500 for "
                f"{failing:.0f} s, down for {down:.0f} s"
            )
        raise ValueError(fault.name)

    def mid_delivery(self) -> str:
        """Holds Slack's answer to the next message and waits until the worker is sending one."""
        self.slack.fail_next(Reply.hang(10))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = query(
                "SELECT count(*) FROM notifications_notification WHERE status = 'sending'",
                url=self.state["database_url"],
            )
            if rows[0][0]:
                return " with a message in flight to Slack"
            time.sleep(0.05)
        return " (no message was in flight: none sent within 20 s)"

    def attack(self) -> str:
        venue = self.state["venues"][0]
        bad = BadRequests(
            self.ports, venue["venue"], venue["token"], self.args.bad_requests, hosts=self.hosts
        )
        abusive = AbusiveClient(self.ports, venue["venue"], venue["token"], hosts=self.hosts)
        self.abuse = (bad, abusive)
        thread = threading.Thread(target=abusive.run, daemon=True)
        thread.start()
        bad.run()
        thread.join(120)
        took = bad.ended - bad.started
        return f"{len(bad.answers)} bad requests in {took:.0f} s; WebSocket abuse"

    def wait_recovery(self, window: Window) -> float | None:
        """Seconds from the undo until both web processes say 200 and an order got a 201."""
        assert self.observer is not None
        assert self.orders is not None
        limit = time.time() + self.args.recovery_limit
        while time.time() < limit:
            probes = [p for p in list(self.observer.probes) if p.at >= window.restored]
            latest = {p.port: p for p in probes}
            taken = [
                r.answered
                for r in self.orders.snapshot()
                if r.sent >= window.restored and r.status == 201
            ]
            healthy = all(p.status == 200 for p in latest.values())
            if set(latest) == set(self.ports) and healthy and taken:
                return max(min(taken), max(p.at for p in latest.values())) - window.restored
            time.sleep(0.5)
        return None

    def finish(self, windows: list[Window]) -> dict[str, Any]:
        assert self.orders is not None
        assert self.churn is not None
        assert self.observer is not None
        self.orders.finish()
        time.sleep(3)  # the last orders' broadcasts
        end = time.time()
        if windows:
            windows[-1].end = end
        # Slack down for 5 minutes leaves every order's message of that time to send.
        drained = wait_drained(self.observer, 300)
        print(f"orders stopped; outbox empty after {drained}", flush=True)
        if self.args.resolve_limit:
            # An open incident clears once its rule's window has passed the fault and the
            # clear time has run: from the last fault's undo, however soon after it the run
            # ended (at most RESOLVE_CAP more: a rule with a day's window is not waited for).
            (longest,) = query(
                "SELECT coalesce(max(r.window_seconds + r.clear_seconds + r.pending_seconds), 0) "
                "FROM monitoring_incident i JOIN monitoring_alertrule r ON r.id = i.rule_id "
                "WHERE i.status <> 'resolved'",
                url=self.state["database_url"],
            )[0]
            due = max((w.restored for w in windows), default=end) + min(int(longest), RESOLVE_CAP)
            resolved = self.wait_resolved(max(self.args.resolve_limit, due + 60 - time.time()))
            print(f"every incident resolved after {resolved}", flush=True)
        self.measure_memory("after")
        self.churn.finish()
        results = []
        for screens in self.screens:
            screens.send("stop")
        for screens in self.screens:
            results += screens.expect("result", time.monotonic() + 180)["clients"]
        time.sleep(2 * float(self.topology.args.flush_seconds) + 1)  # the last counts flushed
        self.observer.finish()
        return {"clients": results, "end": end, "drained": drained}

    def wait_resolved(self, limit: float) -> float | None:
        """Seconds until no incident is open (rules clear after their window and clear time)."""
        began = time.time()
        while time.time() - began < limit:
            rows = query(
                "SELECT count(*) FROM monitoring_incident WHERE status <> 'resolved'",
                url=self.state["database_url"],
            )
            if not rows[0][0]:
                return time.time() - began
            time.sleep(2)
        return None

    def close(self) -> None:
        if self.orders is not None:
            self.orders.abort()
        if self.churn is not None:
            self.churn.finish()
        for screens in self.screens:
            screens.finish()
        if self.observer is not None:
            self.observer.finish()
        self.topology.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM, SIGHUP and Ctrl-C end the run through the `finally`s below: the processes,
    # the own PostgreSQL and Redis (in sessions of their own: no signal reaches them) and the
    # namespaces are stopped and removed, not left behind.
    exit_on_signals()
    work = (args.dir or Path(tempfile.mkdtemp(prefix="inkwave-soak-"))).resolve()
    began = time.time()
    netns_off = "--no-netns" if args.no_netns else netns.unavailable()
    if netns_off:
        print(f"web processes NOT as separate hosts ({netns_off}): on loopback", flush=True)
    soak = Soak(args, work, netns_off)
    try:
        # With hosts of their own, the Slack server listens on the bridge's address.
        with SlackServer(host=soak.topology.open_network()) as slack:
            try:
                failed = run_soak(soak, slack, began)
            finally:
                soak.close()
    finally:
        soak.topology.close_network()
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(failed, indent=2))
    print(f"soak took {time.time() - began:.0f} s")
    return 1 if failed["failures"] else 0


def run_soak(soak: Soak, slack: SlackServer, began: float) -> dict[str, Any]:
    args = soak.args
    soak.start(slack)
    time.sleep(args.quiet)
    soak.measure_memory("before")
    windows = soak.faults()
    ended = soak.finish(windows)
    assert soak.orders is not None
    assert soak.observer is not None
    assert soak.churn is not None
    run = Run(
        args=args, state=soak.state, ports=soak.ports, windows=windows,
        ready=soak.ready, clients=ended["clients"], orders=soak.orders.snapshot(),
        churn=soak.churn, observer=soak.observer, slack=slack, abuse=soak.abuse,
        memory=soak.memory, began=began, end=ended["end"], drained=ended["drained"],
        flush_seconds=float(soak.topology.args.flush_seconds),
        taken=dict(soak.orders.taken), placement=soak.placement(),
        # Read now, while they run (the killed web-2 is its restart by now).
        placement_problems=soak.topology.placement_problems(),
    )  # fmt: skip
    return report(run)


if __name__ == "__main__":
    sys.exit(main())
