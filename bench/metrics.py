"""Benchmark: how long GET /metrics takes with 8 web workers' samples over the retention window.

    .venv/bin/python bench/metrics.py [--workers 8] [--days 14] [--routes 20] [--scrapes 50]

Target (issue 12): a scrape is answered in under 100 ms (p95). The rows are generated in the
database (generate_series) as the flushers write them: one WebSocket sample per worker per
10 s over METRICS_RETENTION_DAYS' default, a request sample per worker and route per 10 s for
a few routes, running totals for `--routes` routes, a day of orders, a month of outbox rows,
a few incidents. A real server process (daphne, PostgreSQL, Redis when it answers) then
answers `--scrapes` scrapes one after another, each on a new connection, after a warm-up.
Uses its own database, inkwave_bench_metrics, on the local PostgreSQL (dropped first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    HOST,
    delete_redis_keys,
    ensure_database,
    migrate,
    percentile,
    redis_available,
)
from bench.server import Server, base_env, new_redis_prefix, server_env  # noqa: E402

DATABASE = "inkwave_bench_metrics"
TOKEN = "bench-metrics-token"  # noqa: S105 (a local server of the bench)
TARGET_MS = 100.0
# Request samples are written for this many routes (the busiest); /metrics reads none of them,
# so they are there for the table's size, not for the figure.
SAMPLED_ROUTES = 4
# Every generated histogram: 100 observations, mostly 1-25 ms.
BUCKETS = "[0,10,20,30,20,10,5,3,1,1,0,0,0,0,0]"

SEED = [
    # Eight web processes, live (the server runs with a long WORKER_LIVENESS_SECONDS).
    """INSERT INTO monitoring_worker (name, role, hostname, pid, started_at, last_seen_at,
           memory_rss_bytes, memory_percent, connections_lost)
       SELECT 'web:host-' || n || ':' || (1000 + n) || ':bench', 'web', 'host-' || n, 1000 + n,
              now() - (%(days)s || ' days')::interval, now(), 150000000, 7, 0
       FROM generate_series(1, %(workers)s) AS n""",
    """INSERT INTO monitoring_websocketsample (
           worker_id, recorded_at, interval_seconds, connections, disconnections,
           rejected_connections, messages_sent, messages_received, errors, client_errors,
           resumes, events_replayed, resyncs, errors_by_type, delivery_count, delivery_sum_ms,
           delivery_buckets, round_trip_count, round_trip_sum_ms, round_trip_buckets,
           cpu_seconds, active_connections, active_rooms, rooms, memory_rss_bytes,
           memory_limit_bytes, memory_percent)
       SELECT w.id, ts, 10, (random() * 8)::int, (random() * 8)::int, 0,
              (random() * 500)::int, (random() * 400)::int, (random() * 3)::int, 0, 0, 0, 0,
              '{}', 100, 100 * (1 + random() * 20), %(buckets)s::jsonb, 100, 1500,
              %(buckets)s::jsonb,
              0.1, 250, 25,
              (SELECT jsonb_object_agg('venue.' || v, 10) FROM generate_series(1, 25) AS v),
              150000000, 2000000000, 7 + random() * 2
       FROM monitoring_worker w,
            generate_series(now() - (%(days)s || ' days')::interval, now(),
                            interval '10 s') AS ts""",
    """UPDATE monitoring_worker w SET last_sample_id = (
           SELECT max(id) FROM monitoring_websocketsample s WHERE s.worker_id = w.id)""",
    """INSERT INTO monitoring_requestsample (
           worker_id, recorded_at, interval_seconds, route, requests, client_errors,
           server_errors, duration_sum_ms, duration_buckets, queries, query_ms,
           response_bytes, memory_growth_bytes)
       SELECT w.id, ts, 10, 'api/v1/route-' || r, 100, 2, 0, 2500, %(buckets)s::jsonb, 300, 400,
              200000, 0
       FROM monitoring_worker w, generate_series(1, %(sampled)s) AS r,
            generate_series(now() - (%(days)s || ' days')::interval, now(),
                            interval '10 s') AS ts""",
    """INSERT INTO monitoring_metrictotals (
           id, started_at, connections, disconnections, rejected_connections, messages_sent,
           messages_received, errors, client_errors, resumes, events_replayed, resyncs,
           delivery_count, delivery_sum_ms, delivery_buckets, round_trip_count,
           round_trip_sum_ms, round_trip_buckets)
       VALUES (1, now() - interval '90 days', 4000000, 3998000, 100, 9e9, 7e9, 5000, 800,
               20000, 90000, 300, 1e8, 1.1e9, %(buckets)s::jsonb, 1e8, 1.5e9,
               %(buckets)s::jsonb)""",
    """INSERT INTO monitoring_routetotals (
           route, requests, client_errors, server_errors, duration_sum_ms, duration_buckets,
           slow_queries)
       SELECT 'api/v1/route-' || r, 1e8, 2e6, 1e4, 2.5e9, %(buckets)s::jsonb, 300
       FROM generate_series(1, %(routes)s) AS r""",
    """INSERT INTO orders_venue (name, slug, timezone, currency, is_active, order_counter,
           room_seq, created_at)
       SELECT 'Venue ' || v, 'venue-' || v, 'UTC', 'USD', true, 0, 0, now()
       FROM generate_series(1, 200) AS v""",
    # 300 orders a venue a day, a week of them: the scrape counts the last 24 hours'.
    """INSERT INTO orders_order (venue_id, number, "table", status, payment_status, currency,
           total, created_at, updated_at)
       SELECT v.id, n, 'T' || (n %% 30),
              (ARRAY['placed','accepted','preparing','ready','served','completed',
                     'cancelled'])[1 + (n %% 7)],
              'paid', 'USD', 25, now() - (n * interval '288 s'), now()
       FROM orders_venue v, generate_series(1, 2100) AS n""",
    """INSERT INTO notifications_destination (name, slack_channel_id, webhook_url, enabled,
           status, last_error, drain_requested, outage_summary_due, created_at)
       VALUES ('bench-operations', 'C0OPS', '', true, 'ok', '', false, false, now())""",
    # A month of the outbox at 2,000 messages a day, nearly all sent.
    """INSERT INTO notifications_notification (kind, destination_id, priority, coalesce_key,
           status, text, blocks, context, broadcast, attempts, revision, next_attempt_at,
           last_error, slack_ts, slack_channel, created_at)
       SELECT 'order_placed', d.id, 1, '', CASE WHEN n %% 500 = 0 THEN 'failed' ELSE 'sent' END,
              'x', '[]', '{}', false, 1, 0, now() - (n * interval '43 s'), '', '', '',
              now() - (n * interval '43 s')
       FROM notifications_destination d, generate_series(1, 60000) AS n""",
    """INSERT INTO monitoring_incident (rule_id, scope, title, severity, status, flapping,
           opened_at, last_seen_at, occurrences, first_value, peak_value, last_value,
           postmortem)
       SELECT r.id, '', r.name, r.severity, 'firing', false, now(), now(), 1, 1, 1, 1, ''
       FROM monitoring_alertrule r ORDER BY r.id LIMIT 3""",
]
COUNTED = ["monitoring_websocketsample", "monitoring_requestsample", "orders_order",
           "notifications_notification"]  # fmt: skip


def seed(url: str, args: argparse.Namespace) -> dict[str, int]:
    import psycopg
    from psycopg import sql

    params = {
        "days": str(args.days),
        "workers": args.workers,
        "routes": args.routes,
        "sampled": SAMPLED_ROUTES,
        "buckets": BUCKETS,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SEED:
            conn.execute(statement, params)  # type: ignore[call-overload]
        counts = {}
        for table in COUNTED:
            name = sql.Identifier(table)
            # As autovacuum leaves a table in production (statistics, visibility map).
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def scrape(port: int) -> tuple[float, int]:
    """One scrape on a new connection: (seconds to the end of the answer, bytes)."""
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
    return time.perf_counter() - began, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    url = ensure_database(DATABASE, fresh=True)
    work = Path(tempfile.mkdtemp(prefix="inkwave-bench-metrics-"))
    env = base_env(work, url)
    migrate(env)
    started = time.perf_counter()
    counts = seed(url, args)
    print(f"generated in {time.perf_counter() - started:.0f} s: " + ", ".join(
        f"{table} {n:,}" for table, n in counts.items()))  # fmt: skip

    prefix = new_redis_prefix() if redis_available() else None
    env = server_env(env, monitoring=True, redis_prefix=prefix)
    # The generated workers stay live for the run; the server's own flush adds a ninth.
    env.update(MONITORING_TOKEN=TOKEN, WORKER_LIVENESS_SECONDS="3600")
    server = Server(env=env, log_path=work / "daphne.log")
    server.start()
    try:
        for _ in range(args.warmup):
            scrape(server.port)
        timings, sizes = [], []
        for _ in range(args.scrapes):
            seconds, size = scrape(server.port)
            timings.append(seconds * 1000.0)
            sizes.append(size)
    finally:
        server.stop()
        if prefix is not None:
            delete_redis_keys(prefix)
    report(timings, sizes, args, prefix is not None)


def report(timings: list[float], sizes: list[int], args: argparse.Namespace, redis: bool) -> None:
    p95 = percentile(timings, 0.95)
    assert p95 is not None
    layer = "Redis" if redis else "in-memory layer, no Redis"
    print(
        f"{args.scrapes} scrapes of /metrics ({args.workers} workers x {args.days} days of "
        f"samples, {args.routes} routes; PostgreSQL, {layer}); "
        f"answer {statistics.median(sizes):,.0f} bytes"
    )
    print(
        f"median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms, max {max(timings):.1f} ms"
    )
    verdict = "met" if p95 < TARGET_MS else "NOT met"
    print(f"target: p95 under {TARGET_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
