"""Faults against the production topology: what each one cost, how soon it was seen and left.

    .venv/bin/python bench/faults.py            # the issue's sequence, about 8 minutes
    .venv/bin/python bench/faults.py --quick    # shorter faults, about 5 minutes

Starts bench/deployment.py's topology (two web processes, a Celery worker, beat, a PostgreSQL
database of its own behind a TCP proxy, a Redis of its own on a spare port, the local Slack
server), puts a workload on it (WebSocket clients spread over the venues and both web
processes, reconnecting with backoff as devices do; orders at a fixed rate through the API with
the venues' tokens, on the web process a load balancer would pick), then injects, one after the
other: Redis down, Redis hung (SIGSTOP), the database refusing connections, a web process
SIGKILLed (then restarted), the worker SIGKILLed (then restarted), Slack answering 500. After
each it waits (bounded) for recovery and prints the time to detect, the time to recover and
what was lost or doubled; a summary table ends the run. Nothing is contacted beyond loopback;
the shared Redis and PostgreSQL are never stopped. See bench/README.md ("Faults").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import drop_database, spare_port  # noqa: E402
from bench.deployment import Topology  # noqa: E402
from bench.deployment import parse_args as deployment_args  # noqa: E402
from bench.fault_run.inject import FULL, QUICK, FaultPlan, FaultRun, Faults, ended  # noqa: E402
from bench.fault_run.observer import DATABASE, Observer, wait_drained, wait_listening  # noqa: E402
from bench.fault_run.verdict import (  # noqa: E402
    connection_figures,
    gather,
    judge,
    order_posts,
    outbox_against_slack,
    table,
)
from bench.fault_run.workload import Clients, Orders  # noqa: E402
from notifications.local_slack import SlackServer  # noqa: E402

# The system's settings, except where a figure needs otherwise (bench/README.md says why).
SETTINGS = {
    "ALERT_EVALUATION_SECONDS": "10",  # the default 60 s would hide detection in its period
    "ORDER_NOTIFY_LIMIT": "0",  # one message per order, so each can be checked once
    "SLACK_MIN_INTERVAL_SECONDS": "0.2",  # 2 orders/s must fit a channel's rate
    "LOG_LEVEL": "info",
}


def workload_parser(description: str, clients: int, output: str) -> argparse.ArgumentParser:
    """The options of a bench that runs faults under this workload (bench/alertmanager.py's
    too): `output` is the JSON's name in bench/results/."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--clients", type=int, default=clients, help="WebSocket clients")
    parser.add_argument("--venues", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2.0, help="orders per second")
    parser.add_argument("--only", default="", help="comma-separated fault names to run")
    parser.add_argument("--dir", type=Path, default=None, help="logs and state (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / output)
    return parser


def checked(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    plans: Callable[[argparse.Namespace], list[FaultPlan]],
) -> argparse.Namespace:
    """The arguments, bounded, with the plan they choose (cut to --only) as `args.plan`."""
    args = parser.parse_args(argv)
    if not 0 <= args.clients <= 1000 or not 0 < args.rate <= 20 or not 1 <= args.venues <= 50:
        parser.error("--clients 0-1000, --rate up to 20, --venues 1-50")
    plan = plans(args)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {f.name for f in plan}
        if unknown:
            parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
        plan = [f for f in plan if f.name in wanted]
    args.plan = plan
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__.split("\n\n")[0], 200, "faults.json")
    parser.add_argument("--quick", action="store_true", help="shorter faults, about 5 minutes")
    args = checked(parser, argv, lambda args: QUICK if args.quick else FULL)
    args.settle = 10.0 if args.quick else 20.0  # observed after recovery (late incidents)
    args.recovery_limit = 90.0 if args.quick else 180.0
    return args


def deployment_argv(
    work: Path,
    ports: list[int],
    venues: int,
    database: str = DATABASE,
    settings: dict[str, str] | None = None,
) -> list[str]:
    """bench/deployment.py's arguments for a fault run (another bench passes its own database
    and settings)."""
    argv = [
        "--dir",
        str(work),
        "--database",
        database,
        "--ports",
        ",".join(map(str, ports)),
        "--venues",
        str(venues),
        "--own-redis",
        "--database-proxy",
        "--drop-database",
    ]
    for name, value in (SETTINGS if settings is None else settings).items():
        argv += ["--set", f"{name}={value}"]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = (args.dir or Path(tempfile.mkdtemp(prefix="inkwave-faults-"))).resolve()
    ports = [spare_port(), spare_port()]
    drop_database(DATABASE)  # each run starts empty: the checks read the whole database
    began = time.time()
    with SlackServer() as slack:
        topology = Topology(deployment_args(deployment_argv(work, ports, args.venues)))
        observer = Observer(topology, ports)
        clients = Clients(ports, [], args.clients)
        orders = Orders(ports, [], args.rate)
        try:
            state = topology.start(slack)
            print(f"topology up in {work} (web :{ports[0]} :{ports[1]})", flush=True)
            wait_listening(ports, 120)
            clients.venues = orders.venues = state["venues"]
            observer.start()
            clients.start()
            clients.wait_connected(90)
            orders.start()
            print(f"{clients.open_now} clients connected; orders at {args.rate}/s", flush=True)
            time.sleep(15 if args.quick else 30)
            runs = [
                Faults(topology, slack, observer, orders).run(
                    plan, args.recovery_limit, args.settle
                )
                for plan in args.plan
            ]
            orders.finish()
            ended(runs, time.time())
            drained = wait_drained(observer, 90)
            print(f"orders stopped; outbox empty after {drained}", flush=True)
            figures = connection_figures(ports[0], state["monitoring_token"], clients, 30)
            clients.finish()
            observer.finish()
            report(args, runs, observer, clients, orders, slack, figures, began)
        finally:
            orders.stop.set()
            clients.finish()
            observer.finish()
            topology.close()
    tidy(work, args)
    return 0


def tidy(work: Path, args: argparse.Namespace) -> None:
    """Removes the logs' temp dir, unless --keep or --dir asked for them."""
    if not args.keep and args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}")


def report(
    args: argparse.Namespace,
    runs: list[FaultRun],
    observer: Observer,
    clients: Clients,
    orders: Orders,
    slack: SlackServer,
    figures: str,
    began: float,
) -> None:
    evidence = gather(slack)
    posts = order_posts(evidence, slack)
    results = orders.snapshot()
    members = args.clients / args.venues
    verdicts = [judge(r, evidence, results, observer, clients, posts, members) for r in runs]
    print()
    for verdict in verdicts:
        print(f"{verdict.name} (held {verdict.held:.0f} s)")
        print("\n".join(verdict.lines))
    print()
    print(table([v.row for v in verdicts]))
    print()
    created = [o for o in results if o.status == 201]
    print(
        f"whole run ({time.time() - began:.0f} s): {len(results)} orders, {len(created)} got 201; "
        f"stored once {sum(evidence.stored[o.tag] == 1 for o in created)}, on Slack once "
        f"{sum(posts[o.tag] == 1 for o in created)}"
    )
    for line in outbox_against_slack(evidence):
        print(line)
    print(figures)
    if observer.exits:
        print("processes that exited on their own:", [(n, c) for _, n, c in observer.exits])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {"faults": [v.row | {"lines": v.lines} for v in verdicts], "connections": figures},
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
