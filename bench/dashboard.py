"""Benchmark: the staff dashboard's weight, its 30-day trends, and the query behind them.

    .venv/bin/python bench/dashboard.py [--workers 4] [--days 30] [--renders 5]

Targets (issue 13): the first load under 300 KB of JavaScript; a 30-day range fetched and
drawn in under 1 s with a month of samples from 4 workers; the downsampling query reads an
index, not every row (the month reads 720 hourly rollups by their time index). A month of
rows is generated in the database as the flushers write them (a WebSocket sample and a
request sample per worker per 10 s) with a month of orders, the rollup task catches up on
them, then a real server process serves the page to Debian's Chromium (Playwright,
headless), signed in through the admin's login form. Prints the JavaScript bytes the page
loaded, the time from asking for the month to the last chart drawn (median of --renders, in
the browser), how long the rollup task (monitoring.dashboard.trends.roll_up) takes to catch up
on the month and to write one hour, and EXPLAIN (ANALYZE, BUFFERS) of the month's queries
(the hourly rollups and the samples not rolled up yet).
Uses its own database, inkwave_bench_dashboard, on the local PostgreSQL (dropped first,
unless --reuse; drop it when done).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import HOST, PYTHON, ensure_database, migrate, redis_available  # noqa: E402
from bench.server import Server, base_env, new_redis_prefix, server_env  # noqa: E402

DATABASE = "inkwave_bench_dashboard"
CHROMIUM = "/usr/bin/chromium"
JS_TARGET_BYTES = 300 * 1024
RENDER_TARGET_MS = 1000.0
USER, PASSWORD = "bench-op", "bench-op-password-1"
BUCKETS = "[0,10,20,30,20,10,5,3,1,1,0,0,0,0,0]"

SEED = [
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
              %(buckets)s::jsonb, 0.1, 200 + (random() * 100)::int, 25,
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
       SELECT w.id, ts, 10, 'api/v1/orders', 100, 2, (random() * 1.2)::int, 2500,
              %(buckets)s::jsonb, 300, 400, 200000, 0
       FROM monitoring_worker w,
            generate_series(now() - (%(days)s || ' days')::interval, now(),
                            interval '10 s') AS ts""",
    """INSERT INTO orders_venue (name, slug, timezone, currency, is_active, order_counter,
           room_seq, created_at)
       SELECT 'Venue ' || v, 'venue-' || v, 'UTC', 'EUR', true, 0, 0, now()
       FROM generate_series(1, 50) AS v""",
    # 300 orders a venue a day over the range.
    """INSERT INTO orders_order (venue_id, number, "table", status, payment_status, currency,
           total, created_at, updated_at)
       SELECT v.id, n, 'T' || (n %% 30), 'completed', 'paid', 'EUR', 25,
              now() - (n * interval '288 s'), now()
       FROM orders_venue v, generate_series(1, 300 * %(days)s) AS n""",
]
TABLES = ["monitoring_websocketsample", "monitoring_requestsample", "orders_order"]


def seed(url: str, args: argparse.Namespace) -> dict[str, int]:
    import psycopg
    from psycopg import sql

    params = {"days": str(args.days), "workers": args.workers, "buckets": BUCKETS}
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SEED:
            conn.execute(statement, params)  # type: ignore[call-overload]
        counts = {}
        for table in TABLES:
            name = sql.Identifier(table)
            # As autovacuum leaves a table in production (statistics, visibility map).
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


ROLLUP = """
import time
from monitoring.dashboard import trends
from monitoring.models import TrendRollup
TrendRollup.objects.all().delete()
began = time.perf_counter(); hours = trends.roll_up(); month = time.perf_counter() - began
TrendRollup.objects.order_by("-ends_at")[0].delete()  # as if the last hour had just ended
began = time.perf_counter(); last = trends.roll_up(); one = time.perf_counter() - began
print(f"rollup: catch-up of {hours} hours in {month:.2f} s; {last} hour in {one * 1000:.0f} ms")
"""
EXPLAIN = """
from datetime import timedelta
from django.utils import timezone
from monitoring.dashboard import figures, trends
now = timezone.now(); seconds, step = figures.RANGES["month"]
start = now - timedelta(seconds=seconds)
first, until = trends._ceil_hour(start), trends.rolled_up_until(now)
for name, query in (
    ("rollups of the whole hours", trends.rollup_query(first, until, step)),
    ("websocket samples after the last rollup", trends.websocket_query(until, now, step)),
    ("request samples after the last rollup", trends.http_query(until, now, step)),
    ("websocket samples of the first, partial hour", trends.websocket_query(start, first, step)),
):
    print("--- " + name); print(query.explain(analyze=True, buffers=True))
"""


def django_script(env: dict[str, str], body: str) -> str:
    script = "import django; django.setup()\n" + body
    return subprocess.run(
        [PYTHON, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def roll_up_month(env: dict[str, str]) -> str:
    """The rollup task's catch-up of the whole month (from none), then of one hour."""
    return django_script(env, ROLLUP)


def explain_month(env: dict[str, str]) -> str:
    """EXPLAIN of the month's queries, as the dashboard's code builds them: the hourly
    rollups, and the samples not rolled up (the newest minutes, the first partial hour)."""
    return django_script(env, EXPLAIN)


def browse(base_url: str, renders: int) -> tuple[int, dict[str, int], list[float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base_url}/admin/login/?next=/ops/dashboard/")
        page.fill("#id_username", USER)
        page.fill("#id_password", PASSWORD)
        scripts: dict[str, int] = {}

        def count(response: object) -> None:
            if response.request.resource_type == "script":  # type: ignore[attr-defined]
                scripts[response.url] = len(response.body())  # type: ignore[attr-defined]

        page.on("response", count)
        page.click("input[type=submit]")
        page.wait_for_function("document.getElementById('dashboard').dataset.historyRange")
        page.remove_listener("response", count)
        timings = []
        for _ in range(renders):
            began = page.evaluate("performance.now()")
            page.evaluate("window.InkwaveDashboard.loadHistory('month')")
            ended = page.evaluate(
                "new Promise(r => requestAnimationFrame(() => r(performance.now())))"
            )
            timings.append(ended - began)
            shown = page.evaluate("document.getElementById('dashboard').dataset.historyRange")
            if shown != "month":  # not drawn: say why, and count it as a miss
                print("30-day range not drawn:", page.inner_text("#history-note"))
                timings[-1] = float("inf")
        browser.close()
    return sum(scripts.values()), scripts, timings


def seed_all(env: dict[str, str], url: str, args: argparse.Namespace) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "createsuperuser", "--noinput", "--username", USER,
         "--email", "op@example.com"],
        env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, cwd=ROOT, check=True,
        capture_output=True,
    )  # fmt: skip
    started = time.perf_counter()
    counts = seed(url, args)
    print(f"generated in {time.perf_counter() - started:.0f} s: " + ", ".join(
        f"{table} {n:,}" for table, n in counts.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep the last run's database")
    args = parser.parse_args()

    url = ensure_database(DATABASE, fresh=not args.reuse)
    work = Path(tempfile.mkdtemp(prefix="inkwave-bench-dashboard-"))
    env = base_env(work, url)
    migrate(env)
    if not args.reuse:
        seed_all(env, url, args)
    env.update(METRICS_RETENTION_DAYS=str(args.days + 1))  # the catch-up covers the month
    print(roll_up_month(env), end="")
    print(explain_month(env))

    prefix = new_redis_prefix() if redis_available() else None
    env = server_env(env, monitoring=True, redis_prefix=prefix)
    env.update(WORKER_LIVENESS_SECONDS="3600", METRICS_RETENTION_DAYS=str(args.days + 1))
    server = Server(env=env, log_path=work / "daphne.log")
    server.start()
    try:
        js_bytes, scripts, timings = browse(f"http://{HOST}:{server.port}", args.renders)
    finally:
        server.stop()

    print(f"first load: {js_bytes:,} bytes of JavaScript "
          f"(target under {JS_TARGET_BYTES:,}): "
          + ", ".join(f"{os.path.basename(u)} {n:,}" for u, n in scripts.items()))  # fmt: skip
    median = statistics.median(timings)  # inf when most renders were not drawn
    print(f"30-day range fetched and drawn: median {median:.0f} ms, max {max(timings):.0f} ms "
          f"over {len(timings)} (target under {RENDER_TARGET_MS:.0f} ms)")  # fmt: skip
    met = js_bytes < JS_TARGET_BYTES and median < RENDER_TARGET_MS
    print("targets met" if met else "TARGET MISSED")


if __name__ == "__main__":
    main()
