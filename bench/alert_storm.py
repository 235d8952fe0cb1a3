"""Benchmark: one rule firing at thousands of venues at once, through the alert engine.

    .venv/bin/python bench/alert_storm.py [--venues 2000] [--steady 3]

A platform-wide fault (the screens' tier down, every kitchen blind) makes the shipped rule
"Venue order not taken" fire at every open venue in the same cycle. Each venue here has one
order that has waited 30 minutes and nobody has taken; the cycles run back to back
(`monitoring.alerting.engine.run_cycle`) until every venue has its incident, then `--steady`
cycles with all of them firing, then every order is taken and the cycles run until every
incident is resolved. Printed per cycle: seconds, incidents opened and resolved, queries,
and the Slack rows written (the group's post, its edits and replies: one group, not one
message per venue).

Target: every cycle under the beat's interval (ALERT_EVALUATION_SECONDS, 60 s) at 5,000
venues, so a storm never makes the next cycle late. The cycles run on a clock of the
bench's own, INTERVAL seconds apart, so the rule's clear period runs out in a few dozen.
Uses its own database, inkwave_bench_alert_storm, on the local PostgreSQL (dropped first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import ensure_database, migrate  # noqa: E402

DATABASE = "inkwave_bench_alert_storm"
RULE = "Venue order not taken"
INTERVAL = 60  # seconds between cycles: the beat's ALERT_EVALUATION_SECONDS (default)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--venues", type=int, default=2000)
    parser.add_argument("--steady", type=int, default=3, help="cycles with every venue firing")
    args = parser.parse_args()
    if not 1 <= args.venues <= 20_000 or not 0 <= args.steady <= 20:
        parser.error("--venues 1-20,000, --steady up to 20")

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        DATABASE_URL=ensure_database(DATABASE, fresh=True),
        INKWAVE_VAR_DIR=str(ROOT / "var" / "bench-alert-storm"),
        LOG_LEVEL="error",
    )
    env.pop("REDIS_URL", None)
    os.environ.update(env)
    migrate(env)

    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from monitoring.alerting.engine import run_cycle
    from monitoring.models import AlertRule, AlertState, Incident, IncidentStatus
    from notifications.models import Notification
    from orders.models import Order, OrderStatus, Venue

    AlertRule.objects.filter(enabled=True).exclude(name=RULE).update(enabled=False)
    rule = AlertRule.objects.get(name=RULE)
    rule.enabled = True
    rule.save()
    venues = Venue.objects.bulk_create(
        Venue(name=f"Venue {n}", slug=f"venue-{n}") for n in range(args.venues)
    )
    Order.objects.bulk_create(
        Order(venue=v, number=1, table="T1", currency="USD", total=10) for v in venues
    )
    Order.objects.update(created_at=timezone.now() - timedelta(minutes=30))
    print(
        f"{args.venues:,} venues, each an order waiting 30 min; rule {rule.name!r} "
        f"({rule.metric} > {rule.threshold:g}, group_by {rule.group_by!r}), "
        f"cycles {INTERVAL} s apart"
    )

    import time_machine

    # The beat's rhythm on a clock of the bench's own: each cycle INTERVAL s after the last
    # (the clear period runs out in simulated time), each timed on the real one.
    clock = time_machine.travel(timezone.now(), tick=True)
    traveller = clock.start()

    def cycle(label: str) -> tuple[float, int, int]:
        traveller.shift(INTERVAL)
        rows_before = Notification.objects.count()
        queries = 0

        def count(execute: Any, *args: Any) -> Any:
            nonlocal queries
            queries += 1
            return execute(*args)

        with connection.execute_wrapper(count):
            began = time.perf_counter()
            result = run_cycle()
            took = time.perf_counter() - began
        written = Notification.objects.count() - rows_before
        print(
            f"  {label:<10} {took:7.2f} s  opened {len(result.opened):>6,}  "
            f"resolved {len(result.resolved):>6,}  queries {queries:>7,}  "
            f"Slack rows +{written}" + (f"  errors {result.errors[:2]}" if result.errors else ""),
            flush=True,
        )
        return took, len(result.opened), len(result.resolved)

    firing = Incident.objects.filter(rule=rule, status=IncidentStatus.FIRING)
    storm: list[float] = []
    for n in range(1, 30):
        storm.append(cycle(f"opening {n}")[0])
        if firing.count() == args.venues:
            break
    steady = [cycle(f"firing {n}")[0] for n in range(1, args.steady + 1)]
    Order.objects.update(status=OrderStatus.ACCEPTED, accepted_at=timezone.now())
    ending: list[float] = []
    for n in range(1, 100):
        ending.append(cycle(f"ending {n}")[0])
        if not firing.exists():
            break
    posts = Notification.objects.filter(thread_parent__isnull=True, update_target__isnull=True)
    print(
        f"slowest cycle {max(storm + steady + ending):.2f} s; opening {max(storm):.2f} s, "
        f"firing median {statistics.median(steady) if steady else 0:.2f} s, "
        f"ending {max(ending):.2f} s; {Incident.objects.count():,} incidents, "
        f"{AlertState.objects.count():,} states; Slack: {posts.count()} posts, "
        f"{Notification.objects.count()} rows in all"
    )
    clock.stop()


if __name__ == "__main__":
    main()
