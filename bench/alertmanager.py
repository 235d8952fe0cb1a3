"""The application's alerts and Prometheus + Alertmanager's, side by side, through faults.

    .venv/bin/python bench/alertmanager.py            # five faults, about 11 minutes

Starts bench/deployment.py's topology as bench/faults.py does (two web processes, a Celery
worker and beat, a PostgreSQL database of its own behind a TCP proxy, a Redis of its own, the
local Slack server; ALERT_EVALUATION_SECONDS=10) with its workload (WebSocket clients on both
web processes, orders through the API), and beside it Prometheus (/usr/bin/prometheus)
scraping web-1's /metrics every 5 s with the repository's deploy/prometheus/rules.yml
unchanged, alerting to Alertmanager (/usr/bin/prometheus-alertmanager) with the inhibition
rules.yml's header gives, which notifies a webhook served by this script. Then, one after the
other, with a wait for both sides to settle after each: a client sending malformed frames on
40 connections (45 s), web-2 SIGKILLed and restarted 10 s later, the database refusing
connections (60 s), Redis stopped (30 s), Slack answering 500 (60 s).

Per fault it prints, for every alert either side raised, the application's incident (opened,
resolved, its Slack post) beside Prometheus' alert (firing, resolved) and Alertmanager's
notifications, and flags each disagreement: raised by one side only, fired or resolved more
than 30 s apart, another severity, silent while the fault lasted, still firing long after the
restore, announced by one side only. Everything is on loopback, in a temp dir, and stopped at
the end; the database is dropped; the shared Redis and PostgreSQL are not touched.
See bench/README.md ("Alertmanager side by side").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.alert_compare.app_side import RuleSpec, incidents, rules  # noqa: E402
from bench.alert_compare.compare import (  # noqa: E402
    TOLERANCE_S,
    Interval,
    Window,
    app_intervals,
    compare,
    prometheus_intervals,
    static_differences,
)
from bench.alert_compare.stack import (  # noqa: E402
    GROUP_INTERVAL,
    GROUP_WAIT,
    REPEAT_INTERVAL,
    SCRAPE_SECONDS,
    AlertStack,
)
from bench.common import (  # noqa: E402
    database_url,
    drop_database,
    exit_on_signals,
    spare_port,
    wait_until,
)
from bench.deployment import Topology  # noqa: E402
from bench.deployment import parse_args as deployment_args  # noqa: E402
from bench.fault_run import inject  # noqa: E402
from bench.fault_run.inject import FaultPlan, FaultRun  # noqa: E402
from bench.fault_run.observer import Observer, wait_listening  # noqa: E402
from bench.fault_run.verdict import table  # noqa: E402
from bench.fault_run.workload import BadFrames, Clients, Orders  # noqa: E402
from bench.faults import checked, deployment_argv, tidy, workload_parser  # noqa: E402
from notifications.local_slack import SlackServer  # noqa: E402

DATABASE = "inkwave_alertmanager"
# The application's defaults but for the evaluation period: the default 60 s would put up to
# a minute into every time to fire, against Prometheus' 5 s.
SETTINGS = {"ALERT_EVALUATION_SECONDS": "10", "LOG_LEVEL": "info"}

# The killed web process comes before the database outage, so that *Process died* (a
# 15-minute window) is firing while /metrics can say nothing but that the database is down.
PLAN = [
    FaultPlan("ws-bad-frames", 45),
    FaultPlan("web-killed", 10),
    FaultPlan("db-refusing", 60),
    FaultPlan("redis-down", 30),
    FaultPlan("slack-500", 60),
]
BASELINE_S = 40.0  # before the first fault: the clients' own connection spike shows here
SETTLE_MIN_S = 20.0  # after each restore, at least
SETTLE_LIMIT_S = 100.0  # ... and at most, waiting for the short-window alerts to resolve


class Faults(inject.Faults):
    """bench/fault_run's faults, and one more: a client sending malformed frames."""

    def __init__(
        self,
        topology: Topology,
        slack: SlackServer,
        observer: Observer,
        orders: Orders,
        bad_frames: BadFrames,
    ) -> None:
        super().__init__(topology, slack, observer, orders)
        self.bad_frames = bad_frames

    def inject(self, name: str) -> None:
        if name == "ws-bad-frames":
            self.bad_frames.start()
        else:
            super().inject(name)

    def restore(self, name: str) -> None:
        if name == "ws-bad-frames":
            self.bad_frames.finish()
        else:
            super().restore(name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__.split("\n\n")[0], 100, "alertmanager.json")
    return checked(parser, argv, lambda args: PLAN)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    work = (args.dir or Path(tempfile.mkdtemp(prefix="inkwave-alertmanager-"))).resolve()
    ports = [spare_port(), spare_port()]
    url = database_url(DATABASE)
    drop_database(DATABASE)  # each run starts empty: every incident in it is this run's
    began = time.time()
    with SlackServer() as slack:
        topology = Topology(
            deployment_args(deployment_argv(work, ports, args.venues, DATABASE, SETTINGS))
        )
        observer = Observer(topology, ports, DATABASE)
        clients = Clients(ports, [], args.clients)
        orders = Orders(ports, [], args.rate)
        bad_frames = BadFrames(ports, [])
        stack: AlertStack | None = None
        try:
            state = topology.start(slack)
            wait_listening(ports, 120)
            stack = AlertStack(work / "prometheus", ports[0], state["monitoring_token"])
            stack.start()
            print(
                f"topology up in {work} (web :{ports[0]} :{ports[1]}); Prometheus "
                f":{stack.prometheus_port} scraping :{ports[0]}, Alertmanager "
                f":{stack.alertmanager_port}",
                flush=True,
            )
            clients.venues = orders.venues = bad_frames.venues = state["venues"]
            # Scraped before the clients come: a counter's first sample shows no increase.
            if not wait_until(stack.targets_up, 30, 1.0):
                raise RuntimeError("Prometheus' scrape of /metrics is not up")
            time.sleep(SCRAPE_SECONDS)
            observer.start()
            startup = time.time()
            clients.start()
            clients.wait_connected(90)
            orders.start()
            print(f"{clients.open_now} clients connected; orders at {args.rate}/s", flush=True)
            specs = rules(url)
            time.sleep(BASELINE_S)
            faults = Faults(topology, slack, observer, orders, bad_frames=bad_frames)
            runs = []
            for plan in args.plan:
                run = faults.run(plan, 60.0, 0.0)
                waited = settle(stack, url, slack, specs, run)
                print(f"  both sides settled {waited:.0f} s after the restore", flush=True)
                runs.append(run)
            time.sleep(10)
            ended = time.time()
            orders.finish()
            clients.finish()
            observer.finish()
            inject.ended(runs, ended)
            windows = [Window("start-up", startup, None, runs[0].start if runs else ended)]
            windows += [Window(r.plan.name, r.start, r.restored, r.end) for r in runs]
            report(args, windows, stack, url, slack, specs, ended, bad_frames, began)
        finally:
            orders.stop.set()
            bad_frames.finish()
            clients.finish()
            observer.finish()
            if stack is not None:
                stack.close()
            topology.close()
    tidy(work, args)
    return 0


def sides(
    stack: AlertStack, url: str, slack: SlackServer
) -> tuple[dict[str, list[Interval]], dict[str, list[Interval]]]:
    """Both sides' alerts as they stand: the incidents (read directly) and the polls."""
    app: dict[str, list[Interval]] = {}
    with contextlib.suppress(Exception):  # the database may still be coming back
        app = app_intervals(incidents(url, slack))
    prom = prometheus_intervals(list(stack.seen), stack.notices_snapshot(), stack.names)
    return app, prom


def settle(
    stack: AlertStack, url: str, slack: SlackServer, specs: dict[str, RuleSpec], run: FaultRun
) -> float:
    """Wait (SETTLE_MIN_S to SETTLE_LIMIT_S after the restore) until every alert that began
    since the injection and whose rule looks back at most a minute (then clears) has
    resolved on both sides: what is still firing then is the fault's to answer for."""
    while True:
        waited = time.time() - run.restored
        if waited >= SETTLE_LIMIT_S:
            return waited
        if waited >= SETTLE_MIN_S:
            app, prom = sides(stack, url, slack)
            firing = [
                name
                for side in (app, prom)
                for name, intervals in side.items()
                if name in specs
                and specs[name].window <= 60
                and any(iv.start >= run.start and iv.end is None for iv in intervals)
            ]
            if not firing:
                return waited
        time.sleep(2)


def report(
    args: argparse.Namespace,
    windows: list[Window],
    stack: AlertStack,
    url: str,
    slack: SlackServer,
    specs: dict[str, RuleSpec],
    ended: float,
    bad_frames: BadFrames,
    began: float,
) -> None:
    app, prom = sides(stack, url, slack)
    rows = compare(windows, app, prom, specs, ended)
    print()
    print(
        f"Prometheus: scrape and evaluation every {SCRAPE_SECONDS} s; Alertmanager: group_wait "
        f"{GROUP_WAIT}, group_interval {GROUP_INTERVAL}, repeat_interval {REPEAT_INTERVAL}; "
        f"times in s from each fault's injection; flagged beyond {TOLERANCE_S:.0f} s"
    )
    for w in windows:
        restored = "" if w.restored is None else f", restored {w.restored - w.start:+.0f}"
        print(
            f"{w.name}: {time.strftime('%H:%M:%S', time.localtime(w.start))}{restored}, "
            f"next {w.end - w.start:+.0f}"
        )
    cells = [r.cells() for r in rows]
    print()
    print(table(cells))
    print()
    print("Disagreements:")
    for row in rows:
        for flag in row.flags:
            print(f"  {row.window.name} / {row.alert}: {flag}")
    held = sorted({(r.alert, h) for r in rows for iv in [*r.app, *r.prom] for h in iv.held})
    if held:
        print("Held back (app: the timeline's reasons; Alertmanager: inhibited by):")
        for alert, why in held:
            print(f"  {alert}: {why[:140]}")
    differences = static_differences(specs)
    print("rules.yml against the application's rules:" + ("" if differences else " agree"))
    for line in differences:
        print(f"  {line}")
    notices = stack.notices_snapshot()
    print(
        f"whole run {ended - began:.0f} s; webhook notifications: "
        f"{sum(n.status == 'firing' for n in notices)} firing, "
        f"{sum(n.status == 'resolved' for n in notices)} resolved; malformed frames sent "
        f"{bad_frames.sent}, error frames back {bad_frames.errors_back}; polls without an "
        f"answer from Prometheus {sum(s.prometheus is None for s in stack.seen)}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "rows": cells,
                "windows": [w.__dict__ for w in windows],
                "app": {name: [iv.__dict__ for iv in ivs] for name, ivs in app.items()},
                "prometheus": {name: [iv.__dict__ for iv in ivs] for name, ivs in prom.items()},
                "notices": [n.__dict__ for n in notices],
                "static": differences,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
