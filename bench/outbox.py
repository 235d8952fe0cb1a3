"""Inkwave Ops Slack outbox benchmark: enqueue rate, delivery throughput, order-to-Slack latency.

    .venv/bin/python bench/outbox.py            # full run (about 1.5 minutes)
    .venv/bin/python bench/outbox.py --quick    # smoke run (about 45 seconds)

Everything runs on this machine against 127.0.0.1: PostgreSQL (database inkwave_bench_outbox,
recreated on every run), Redis, a local Slack Web API server (notifications/local_slack.py, in
this process), real Celery workers and a real daphne server started here on ports 9200-9299. Every
process started here is stopped when the run ends, fails or is interrupted. Prints a table and
writes bench/results/outbox.json. See bench/OUTBOX.md for what each figure means.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    Children,
    ensure_database,
    exit_on_signals,
    machine_info,
    postgres_version,
    redis_version,
)
from bench.slack_outbox.delivery import run_enqueue_and_delivery  # noqa: E402
from bench.slack_outbox.orders import run_orders  # noqa: E402
from bench.slack_outbox.plan import Plan, parse_args  # noqa: E402
from bench.slack_outbox.report import figure_rows, print_cpu, print_table  # noqa: E402
from bench.slack_outbox.system import (  # noqa: E402
    DB_NAME,
    DESTINATIONS,
    System,
    claim_broker_db,
    make_env,
    release_redis,
    start_slack_server,
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.from_args(args)
    exit_on_signals()  # through the `finally` below, which stops every child
    tag = secrets.token_hex(4)
    prefix = f"bench-outbox-{tag}"
    var_dir = Path(tempfile.mkdtemp(prefix="inkwave-bench-outbox-"))
    children = Children(var_dir)
    broker_db: int | None = None
    started = time.monotonic()
    info = machine_info()
    print(
        f"Inkwave Ops Slack outbox benchmark ({'quick' if plan.quick else 'full'} run); "
        f"logs in {var_dir}",
        flush=True,
    )
    try:
        ensure_database(DB_NAME, fresh=True)
        info |= {"postgresql": postgres_version(), "redis": redis_version()}
        broker_db = claim_broker_db(tag)
        slack = start_slack_server()
        with slack:
            env = make_env(var_dir=var_dir, slack=slack, broker_db=broker_db, prefix=prefix)
            env |= dict(item.split("=", 1) for item in args.set)
            print(f"- migrating {DB_NAME} ...", flush=True)
            children.run("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], env, timeout=180)
            os.environ.update(env)
            import django

            django.setup()
            from django.conf import settings

            from inkwave import celery_app
            from notifications.models import Destination

            assert celery_app.conf.broker_url == env["CELERY_BROKER_URL"]
            assert slack.api_url == settings.SLACK_API_URL
            channels = dict(Destination.objects.values_list("name", "slack_channel_id"))
            for name, channel in DESTINATIONS:
                if channels.get(name) != channel:
                    raise RuntimeError(f"destination {name} has channel {channels.get(name)!r}")

            system = System(children, env, slack, broker_db, tag)
            print("- starting a Celery worker (limiter off) ...", flush=True)
            system.start_worker(0.0, plan.concurrency)
            print(f"- figures 1 and 2: {plan.notifications} notifications ...", flush=True)
            delivery = run_enqueue_and_delivery(system, plan)
            if not system.idle(60.0):
                print("  (the outbox or the broker was not idle after 60 s)", flush=True)
            print("- starting daphne ...", flush=True)
            system.start_daphne()
            print(
                f"- figure 3: {plan.order_rate:g} orders/s for {plan.order_seconds:g} s, "
                "limiter off ...",
                flush=True,
            )
            latencies = [
                run_orders(
                    system,
                    plan,
                    label="limiter off",
                    rate=plan.order_rate,
                    seconds=plan.order_seconds,
                    min_interval=0.0,
                )
            ]
            print("- restarting the worker with the default limiter (1 message/s) ...", flush=True)
            system.stop_worker()
            system.start_worker(1.0, plan.concurrency)
            print(
                f"- figure 3: {plan.limited_rate:g} orders/s for {plan.limited_seconds:g} s, "
                "limiter 1/s ...",
                flush=True,
            )
            latencies.append(
                run_orders(
                    system,
                    plan,
                    label="limiter 1 msg/s/channel",
                    rate=plan.limited_rate,
                    seconds=plan.limited_seconds,
                    min_interval=1.0,
                )
            )
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

    total = time.monotonic() - started
    rows = figure_rows(plan, delivery, latencies)
    failures = delivery.failures() + [line for r in latencies for line in r.failures()]
    cpu = {
        "1 enqueue (worker paused)": delivery.cpu_enqueue,
        "2 delivery": delivery.cpu_delivery,
        **{f"3 orders, {r.label}": r.cpu for r in latencies},
    }
    print()
    print(
        f"machine: {info['logical_cores']} logical cores ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB, {info['os']}, Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, Redis {info['redis']}"
    )
    print(
        "         the client (this process), the local Slack server (threads of this process), "
        "daphne, the Celery worker, PostgreSQL and Redis all share it"
    )
    print()
    print_table(rows)
    print()
    print_cpu(cpu)
    busy = [delivery.busy_before, *(r.busy_before for r in latencies)]
    if max(busy) >= 0.3:
        print(
            f"  note: the machine was busy before some phases ({max(busy):.2f} cores in use by "
            "others), so those figures are noisy"
        )
    for line in failures:
        print(f"FAILURE: {line}")
    print(f"\ntotal {total:.0f} s; database {DB_NAME} kept for inspection")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "slack-outbox",
        "plan": asdict(plan),
        "machine": info,
        "command": " ".join([".venv/bin/python", "bench/outbox.py", *sys.argv[1:]]),
        "extra_settings": args.set,
        "figures": [dict(zip(("figure", "value", "detail"), row, strict=True)) for row in rows],
        "delivery": asdict(delivery),
        "latency": [asdict(r) for r in latencies],
        "failures": failures,
        "seconds": round(total, 1),
    }
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
