"""Figures 1 and 2: how fast notifications are enqueued, and delivered by one worker."""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import CpuMeter, percentile, wait_for_quiet, wait_until
from bench.slack_outbox.plan import Plan
from bench.slack_outbox.system import DB_NAME, DESTINATIONS, System, broker_backlog
from notifications.local_slack import Post

BENCH_TEXT = re.compile(r"^bench-outbox (\w+) #(\d+)$")


@dataclass
class DeliveryResult:
    n: int
    enqueue_seconds: float
    enqueue_rate: float
    enqueue_call_p50: float | None
    enqueue_call_p99: float | None
    tasks_queued: int
    delivered_before_start: int
    received: int
    delivery_seconds: float
    delivery_rate: float
    duplicates: int
    missing: int
    out_of_order: int
    wrong_channel: int
    statuses: dict[str, int]
    attempts: int
    slack_http_p50: float | None
    slack_http_p99: float | None
    tasks_cleared_seconds: float | None
    tasks_left_at_done: int  # drain tasks still queued or running when the last message arrived
    noop_task_rate: float | None  # how fast the worker then consumed them (nothing was due)
    db_transactions_per_message: float | None
    cpu_enqueue: dict[str, Any] = field(default_factory=dict)
    cpu_delivery: dict[str, Any] = field(default_factory=dict)
    busy_before: float = 0.0

    def failures(self) -> list[str]:
        lines = []
        if self.missing:
            lines.append(f"delivery: {self.missing} of {self.n} notifications never reached Slack")
        if self.duplicates:
            lines.append(f"delivery: {self.duplicates} notifications reached Slack more than once")
        if self.out_of_order:
            lines.append(f"delivery: {self.out_of_order} messages arrived out of creation order")
        if self.wrong_channel:
            lines.append(f"delivery: {self.wrong_channel} messages arrived in the wrong channel")
        if self.statuses.get("sent", 0) != self.n:
            lines.append(f"delivery: row statuses are {self.statuses}, not all 'sent'")
        if self.attempts != self.n:
            lines.append(f"delivery: {self.attempts} delivery attempts for {self.n} notifications")
        return lines


def db_transactions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            [DB_NAME],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def run_enqueue_and_delivery(system: System, plan: Plan) -> DeliveryResult:
    from django.db import transaction
    from django.db.models import Count

    from notifications.models import DeliveryAttempt, Notification
    from notifications.outbox import send_message

    assert system.worker is not None
    worker = system.worker
    _, busy_before = wait_for_quiet(plan.quiet_wait)
    run = secrets.token_hex(3)
    n = plan.notifications
    slack_start = system.slack.count()

    # Figure 1. The worker stops taking tasks (Celery's cancel_consumer) so that the enqueue
    # loop has the machine to itself and the work piles up: N rows committed, N drain tasks
    # waiting in the broker.
    system.consume(False)
    ids: list[int] = []
    calls: list[float] = []
    groups = {"bench process": [psutil.Process()]}
    with CpuMeter(groups) as cpu_enqueue:
        started = time.perf_counter()
        for i in range(n):
            name = DESTINATIONS[i % 2][0]
            call = time.perf_counter()
            with transaction.atomic():
                rows = send_message(name, f"bench-outbox {run} #{i}")
            calls.append(time.perf_counter() - call)
            ids.append(rows[0].pk)
        enqueue_seconds = time.perf_counter() - started
    tasks_queued, _ = broker_backlog(system.broker_db)
    delivered_before_start = sum(
        1
        for p in system.slack.posts_from(slack_start)
        if (m := BENCH_TEXT.match(str(p.body.get("text", "")))) and m.group(1) == run
    )

    # Figure 2. Everything is committed; the clock starts when the worker is told to take
    # tasks again (add_consumer), with the round trip of that command inside the time.
    time.sleep(1.5)  # let PostgreSQL's statistics catch up before the first reading
    transactions_before = db_transactions()
    groups = {
        "bench process": [psutil.Process()],
        "celery worker": worker.tree(),
    }
    received: dict[int, list[Post]] = defaultdict(list)
    seen = slack_start

    def collect() -> int:
        nonlocal seen
        new = system.slack.posts_from(seen)
        seen += len(new)
        for post in new:
            match = BENCH_TEXT.match(str(post.body.get("text", "")))
            if match and match.group(1) == run:
                received[int(match.group(2))].append(post)
        return len(received)

    with CpuMeter(groups) as cpu_delivery:
        t0 = time.time()
        system.consume(True)
        wait_until(lambda: collect() >= n, plan.delivery_timeout, 0.02)
        left_at_done = sum(broker_backlog(system.broker_db))
        done_at = time.time()
    collect()
    posts = [post for batch in received.values() for post in batch]
    last = max((post.at for post in posts), default=time.time())
    delivery_seconds = max(last - t0, 1e-9)

    # The drain tasks still queued are no-ops by now; how long until they are all consumed?
    cleared = wait_until(
        lambda: broker_backlog(system.broker_db) == (0, 0), plan.delivery_timeout, 0.05
    )
    cleared_at = time.time()
    tasks_cleared_seconds = (cleared_at - t0) if cleared else None
    noop_task_rate = (
        left_at_done / (cleared_at - done_at) if cleared and cleared_at > done_at + 0.1 else None
    )
    time.sleep(1.5)  # short-lived connections report their statistics when they close
    transactions = db_transactions() - transactions_before - 1

    # Exactly once, per destination in creation order, in the right channel.
    counts = Counter({i: len(batch) for i, batch in received.items()})
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    missing = n - len(counts)
    by_channel: dict[str, list[int]] = defaultdict(list)
    wrong_channel = 0
    for post in sorted(posts, key=lambda p: p.ts):  # ts counts up in arrival order
        match = BENCH_TEXT.match(str(post.body.get("text", "")))
        assert match is not None
        i = int(match.group(2))
        channel = str(post.body.get("channel", ""))
        if channel != DESTINATIONS[i % 2][1]:
            wrong_channel += 1
        by_channel[channel].append(i)
    out_of_order = 0
    for sequence in by_channel.values():
        highest = -1
        for i in sequence:
            if i < highest:
                out_of_order += 1
            highest = max(highest, i)

    def statuses() -> dict[str, int]:
        rows = Notification.objects.filter(pk__in=ids).values("status").annotate(c=Count("pk"))
        return {row["status"]: row["c"] for row in rows}

    wait_until(lambda: statuses().get("sent", 0) == n, 10.0, 0.2)
    final_statuses = statuses()
    durations = [
        d / 1000.0
        for d in DeliveryAttempt.objects.filter(notification_id__in=ids).values_list(
            "duration_ms", flat=True
        )
        if d is not None
    ]
    attempts = DeliveryAttempt.objects.filter(notification_id__in=ids).count()
    return DeliveryResult(
        n=n,
        enqueue_seconds=enqueue_seconds,
        enqueue_rate=n / enqueue_seconds,
        enqueue_call_p50=percentile(calls, 0.5),
        enqueue_call_p99=percentile(calls, 0.99),
        tasks_queued=tasks_queued,
        delivered_before_start=delivered_before_start,
        received=len(counts),
        delivery_seconds=delivery_seconds,
        delivery_rate=len(counts) / delivery_seconds,
        duplicates=duplicates,
        missing=missing,
        out_of_order=out_of_order,
        wrong_channel=wrong_channel,
        statuses=final_statuses,
        attempts=attempts,
        slack_http_p50=percentile(durations, 0.5),
        slack_http_p99=percentile(durations, 0.99),
        tasks_cleared_seconds=tasks_cleared_seconds,
        tasks_left_at_done=left_at_done,
        noop_task_rate=noop_task_rate,
        db_transactions_per_message=transactions / n if cleared else None,
        cpu_enqueue=cpu_enqueue.summary(),
        cpu_delivery=cpu_delivery.summary(),
        busy_before=round(busy_before, 2),
    )
