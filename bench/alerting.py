"""Benchmark: one alert evaluation cycle over 500 rules and 7 days of samples from 8 workers.

    .venv/bin/python bench/alerting.py [--rules 500] [--days 7] [--workers 8] [--cycles 5]

Target (issue 4): a cycle takes under 2 s on PostgreSQL. The samples are generated in the
database (generate_series), one row per worker per 10 s, as the flusher writes them.
Uses its own database, inkwave_bench_alerting, on the local PostgreSQL (dropped first).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import ensure_database, migrate  # noqa: E402

DATABASE = "inkwave_bench_alerting"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        DATABASE_URL=ensure_database(DATABASE, fresh=True),
        INKWAVE_VAR_DIR=str(ROOT / "var" / "bench-alerting"),
        LOG_LEVEL="error",
        WORKER_LIVENESS_SECONDS="60",
    )
    env.pop("REDIS_URL", None)  # the dependency probe for Redis then has no data
    os.environ.update(env)
    migrate(env)

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from monitoring.alerting.engine import run_cycle
    from monitoring.alerting.metrics import REGISTRY
    from monitoring.models import AlertRule, Incident

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO monitoring_worker (
                name, role, hostname, pid, started_at, last_seen_at, memory_rss_bytes,
                memory_percent, connections_lost)
            SELECT 'web-' || n, 'web', 'host-' || n, 1000 + n, now() - interval '8 days', now(),
                   150000000, 7, 0
            FROM generate_series(1, %s) AS n
            """,
            [args.workers],
        )
        cursor.execute(
            """
            INSERT INTO monitoring_websocketsample (
                worker_id, recorded_at, interval_seconds, connections, disconnections,
                rejected_connections, messages_sent, messages_received, errors, client_errors,
                errors_by_type, delivery_count, delivery_sum_ms, delivery_buckets, round_trip_count,
                round_trip_sum_ms, round_trip_buckets, cpu_seconds, active_connections,
                active_rooms, rooms, memory_rss_bytes, memory_limit_bytes, memory_percent)
            SELECT w.id, ts, 10, (random() * 8)::int, (random() * 8)::int, 0,
                   (random() * 500)::int, (random() * 400)::int, (random() * 3)::int, 0, '{}',
                   100, 100 * (1 + random() * 20), '[0,10,20,30,20,10,5,3,1,1,0,0,0,0,0]', 0, 0,
                   '[]', 0.1, (random() * 200)::int, 20, '{}', 150000000, 2000000000,
                   7 + random() * 2
            FROM monitoring_worker w,
                 generate_series(now() - (%s || ' days')::interval, now(), interval '10 seconds')
                   AS ts
            """,
            [str(args.days)],
        )
        cursor.execute("ANALYZE monitoring_websocketsample")
        cursor.execute("SELECT count(*) FROM monitoring_websocketsample")
        samples = cursor.fetchone()[0]
    generated = time.perf_counter() - started

    randomness = random.Random(7)
    metrics = sorted(REGISTRY)
    windows = [60, 120, 300, 600, 900, 1800, 3600]
    AlertRule.objects.bulk_create(
        [
            AlertRule(
                name=f"bench rule {index}",
                metric=(metric := metrics[index % len(metrics)]),
                comparison="gt",
                # Mostly quiet rules, as in production; a few fire.
                threshold=(REGISTRY[metric].maximum or 10_000)
                * randomness.choice([0.95, 0.9, 2.0]),
                window_seconds=randomness.choice(windows),
                repeat_interval_seconds=3600,
            )
            for index in range(args.rules)
        ]
    )
    total_rules = AlertRule.objects.filter(enabled=True).count()

    timings, queries = [], []
    for _ in range(args.cycles):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            result = run_cycle()
            timings.append(time.perf_counter() - began)
        queries.append(len(captured))
    opened = Incident.objects.count()

    print(
        f"samples: {samples:,} rows ({args.workers} workers x {args.days} days at 10 s), "
        f"generated in {generated:.1f} s"
    )
    print(
        f"rules evaluated per cycle: {result.evaluated} (enabled: {total_rules}); "
        f"incidents open after the first cycle: {opened}"
    )
    print(
        f"cycle wall time: first {timings[0]:.3f} s (opens incidents), "
        f"median {statistics.median(timings):.3f} s, max {max(timings):.3f} s "
        f"over {len(timings)} cycles (target: under 2 s)"
    )
    print(f"queries per cycle: first {queries[0]}, median {statistics.median(queries)}")


if __name__ == "__main__":
    main()
