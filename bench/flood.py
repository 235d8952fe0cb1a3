"""A flood of order chatter from one venue, with an alert in the middle: how late is the alert?

    .venv/bin/python bench/flood.py                  # 10,000 payment issues, about 2 minutes
    .venv/bin/python bench/flood.py --events 2000    # shorter

The services and the rules are bench/outbox.py's (see bench/OUTBOX.md): the database
inkwave_bench_outbox recreated, Redis with a broker database of its own, the local Slack server
in this process and one real Celery worker, here with the default limiter (1 message per second
per Slack channel) and the default coalescing (`ORDER_NOTIFY_LIMIT`, `--set` changes either).

This process records `--events` payment issues of one venue (20 orders in turn), each in its own
transaction through `orders.events.order_changed`, what `PATCH /api/v1/orders/<id>` calls with
`{"paymentStatus": "failed"}`, as fast as it can. Halfway it queues a ⚠️ system alert, then a
🚀 deployment notice: both go to #operations, which the payment issues share. It prints how long
each took from its commit to its arrival at the Slack server, then waits for the outbox to go
idle and prints how many payment messages each channel got and how many events they counted
(all of them, or the run fails).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import PYTHON, Children, ensure_database, exit_on_signals  # noqa: E402
from bench.slack_outbox.system import (  # noqa: E402
    DB_NAME,
    System,
    claim_broker_db,
    make_env,
    release_redis,
    start_slack_server,
)
from notifications.local_slack import SlackServer  # noqa: E402

ORDERS = 20


@dataclass
class FloodResult:
    events: int
    limit: int  # ORDER_NOTIFY_LIMIT per ORDER_NOTIFY_WINDOW_SECONDS
    window: int
    flood_seconds: float
    queued_ahead: int  # payment messages open on #operations when the alert was queued
    alert_delay: float | None  # seconds from the alert's commit to its arrival at Slack
    deploy_delay: float | None
    payment_messages: dict[str, int]  # per destination
    counted: dict[str, int]  # events the payment messages of each destination count
    unsent: int
    idle_seconds: float | None  # from the end of the flood until the outbox was idle

    def failures(self) -> list[str]:
        lines = []
        if self.alert_delay is None or self.deploy_delay is None:
            lines.append("the alert or the deployment notice never reached Slack")
        for name, count in self.counted.items():
            if count != self.events:
                lines.append(f"{name}: payment messages count {count} of {self.events} events")
        if self.unsent:
            lines.append(f"{self.unsent} notifications were not sent")
        return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="payment issues (10000)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for every process, e.g. --set ORDER_NOTIFY_LIMIT=0 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    args = parser.parse_args(argv)
    if not 10 <= args.events <= 100_000:
        parser.error("--events must be between 10 and 100000")
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--set wants NAME=VALUE, not {item!r}")
    return args


def arrival(slack: SlackServer, start: int, needle: str) -> float | None:
    for post in slack.posts_from(start):
        if needle in str(post.body.get("text", "")):
            return post.at
    return None


def run_flood(system: System, events: int, tag: str) -> FloodResult:
    from django.conf import settings
    from django.db import transaction

    from monitoring.notices import deployment, send_error_alert
    from notifications.models import OPEN_STATUSES, Notification, NotificationKind
    from orders import events as order_events
    from orders.models import Order, Venue

    venue = Venue.objects.create(name="Noisy Branch", slug=f"noisy-{tag}")
    orders = [
        Order.objects.create(
            venue=venue, number=n, table="Table 5", currency="USD", total=Decimal("4.50")
        )
        for n in range(1, ORDERS + 1)
    ]
    payments = Notification.objects.filter(kind=NotificationKind.PAYMENT_ISSUE)
    start = system.slack.count()
    alert_text, release = f"bench flood {tag}", f"flood-{tag}"
    committed: dict[str, float] = {}
    queued_ahead = 0
    began = time.monotonic()
    for index in range(events):
        with transaction.atomic():
            order_events.order_changed(
                orders[index % ORDERS], {"payment_status": ("pending", "failed")}
            )
        if index == events // 2:
            queued_ahead = payments.filter(
                destination__name="operations", status__in=OPEN_STATUSES
            ).count()
            with transaction.atomic():
                send_error_alert(alert_text, {"source": "Redis", "type": "Bench flood"})
            committed[alert_text] = time.time()
            deployment(release, "bench")  # commits itself
            committed[release] = time.time()
    flood_seconds = time.monotonic() - began
    print(f"  {events} events in {flood_seconds:.1f} s; waiting for the outbox ...", flush=True)
    window = settings.ORDER_NOTIFY_WINDOW_SECONDS
    idle = system.idle(timeout=window + 120.0)
    idle_seconds = time.monotonic() - began - flood_seconds if idle else None
    delays = {}
    for needle, at in committed.items():
        arrived = arrival(system.slack, start, needle)
        delays[needle] = None if arrived is None else arrived - at
    per_destination: dict[str, list[Notification]] = {}
    for row in payments.select_related("destination"):
        per_destination.setdefault(row.destination.name, []).append(row)
    return FloodResult(
        events=events,
        limit=settings.ORDER_NOTIFY_LIMIT,
        window=window,
        flood_seconds=flood_seconds,
        queued_ahead=queued_ahead,
        alert_delay=delays[alert_text],
        deploy_delay=delays[release],
        payment_messages={name: len(rows) for name, rows in per_destination.items()},
        counted={
            name: sum(r.context["tally"]["count"] if r.context.get("summary") else 1 for r in rows)
            for name, rows in per_destination.items()
        },
        unsent=Notification.objects.exclude(status="sent").count(),
        idle_seconds=idle_seconds,
    )


def report(result: FloodResult) -> None:
    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    print()
    print(
        f"flood: {result.events} payment issues from one venue in {result.flood_seconds:.1f} s "
        f"({result.events / result.flood_seconds:.0f} events/s); 1 message/s per channel; "
        f"ORDER_NOTIFY_LIMIT {result.limit} per {result.window} s"
    )
    print(f"  payment messages queued on #operations ahead of the alert: {result.queued_ahead}")
    print(f"  alert delay (commit -> Slack):       {seconds(result.alert_delay)}")
    print(f"  deployment delay (commit -> Slack):  {seconds(result.deploy_delay)}")
    for name in sorted(result.payment_messages):
        print(
            f"  #{name}: {result.payment_messages[name]} payment messages counting "
            f"{result.counted[name]} events"
        )
    print(f"  outbox idle {seconds(result.idle_seconds)} after the flood ended")
    for line in result.failures():
        print(f"FAILURE: {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    tag = secrets.token_hex(4)
    prefix = f"bench-flood-{tag}"
    var_dir = Path(tempfile.mkdtemp(prefix="inkwave-bench-flood-"))
    children = Children(var_dir)
    broker_db: int | None = None
    print(f"Inkwave Ops order-chatter flood benchmark; logs in {var_dir}", flush=True)
    try:
        ensure_database(DB_NAME, fresh=True)
        broker_db = claim_broker_db(tag)
        slack = start_slack_server()
        with slack:
            env = make_env(var_dir=var_dir, slack=slack, broker_db=broker_db, prefix=prefix)
            env.pop("ORDER_NOTIFY_LIMIT")  # coalescing as the project ships it
            env |= dict(item.split("=", 1) for item in args.set)
            print(f"- migrating {DB_NAME} ...", flush=True)
            children.run("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], env, timeout=180)
            os.environ.update(env)
            import django

            django.setup()
            system = System(children, env, slack, broker_db, tag)
            print("- starting a Celery worker (limiter 1 message/s per channel) ...", flush=True)
            system.start_worker(1.0, 2)
            print(f"- {args.events} payment issues from one venue ...", flush=True)
            result = run_flood(system, args.events, tag)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every process started here", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        release_redis(broker_db, tag, prefix)
        if args.keep:
            print(f"kept {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)
    report(result)
    return 1 if result.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
