"""Figure 3: from an order's POST to its message at the Slack server, via daphne and a worker."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import HOST, CpuMeter, percentile, wait_for_quiet, wait_until
from bench.slack_outbox.plan import Plan
from bench.slack_outbox.system import ORDERS_CHANNEL, System
from notifications.local_slack import Post

ORDER_TEXT = re.compile(r"^🛒 New Order #(\d+)\n")


@dataclass
class OrderSample:
    sent: float  # time.time() just before the POST
    answered: float | None = None
    status: int = 0
    order_id: int | None = None
    number: int | None = None
    error: str = ""


@dataclass
class LatencyResult:
    label: str
    min_interval: float
    rate: float
    seconds: float
    orders: int
    created: int
    matched: int
    duplicates: int
    p50: float | None
    p99: float | None
    max: float | None
    post_p50: float | None
    post_p99: float | None
    api_p50: float | None  # POST sent -> outbox row created (inside the request)
    dispatch_p50: float | None  # row created -> the worker starts the Slack request
    send_p50: float | None  # the worker starts the Slack request -> the Slack server has it
    send_lag_max: float
    errors: list[str]
    cpu: dict[str, Any] = field(default_factory=dict)
    busy_before: float = 0.0

    def failures(self) -> list[str]:
        lines = [f"{self.label}: {error}" for error in self.errors[:5]]
        if self.created != self.orders:
            lines.append(f"{self.label}: {self.orders - self.created} POSTs did not answer 201")
        if self.matched != self.created:
            lines.append(
                f"{self.label}: {self.created - self.matched} new orders never reached Slack"
            )
        if self.duplicates:
            lines.append(f"{self.label}: {self.duplicates} order messages posted more than once")
        return lines


def post_order(port: int, raw_token: str, venue_id: int, sample: OrderSample) -> None:
    body = json.dumps(
        {
            "venue": venue_id,
            "table": "Table 5",
            "currency": "USD",
            "items": [{"name": "Soup", "quantity": 1, "unitPrice": "4.50"}],
        }
    )
    headers = {"Authorization": f"Bearer {raw_token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    try:
        sample.sent = time.time()
        conn.request("POST", "/api/v1/orders", body, headers)
        response = conn.getresponse()
        data = response.read()
        sample.answered = time.time()
        sample.status = response.status
        if response.status == 201:
            order = json.loads(data)
            sample.order_id, sample.number = int(order["id"]), int(order["number"])
        else:
            sample.error = f"POST answered {response.status}: {data[:200]!r}"
    except (OSError, ValueError, KeyError) as exc:
        sample.error = f"POST failed: {type(exc).__name__}: {exc}"
    finally:
        conn.close()


def run_orders(
    system: System, plan: Plan, *, label: str, rate: float, seconds: float, min_interval: float
) -> LatencyResult:
    from notifications.models import DeliveryAttempt, Notification
    from orders.models import Venue, VenueAccessToken

    assert system.daphne is not None
    assert system.worker is not None
    suffix = secrets.token_hex(3)
    venue = Venue.objects.create(name=f"Outbox bench {suffix}", slug=f"outbox-bench-{suffix}")
    _, raw = VenueAccessToken.issue(venue, "Outbox benchmark")
    system.idle(30.0)  # the venue's sign-up message is out of the way
    if min_interval > 0:
        time.sleep(min_interval + 0.2)  # the warm-up's limiter slot on #orders has expired
    _, busy_before = wait_for_quiet(plan.quiet_wait)

    count = max(1, round(rate * seconds))
    samples = [OrderSample(sent=0.0) for _ in range(count)]
    slack_start = system.slack.count()
    lags: list[float] = []
    futures: list[Future[None]] = []
    groups = {
        "bench process": [psutil.Process()],
        "daphne": system.daphne.tree(),
        "celery worker": system.worker.tree(),
    }
    with CpuMeter(groups) as cpu, ThreadPoolExecutor(max_workers=32) as pool:
        t0 = time.monotonic() + 0.05
        for k, sample in enumerate(samples):
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lags.append(max(0.0, time.monotonic() - due))
            futures.append(pool.submit(post_order, system.daphne_port, raw, venue.pk, sample))
        for future in futures:
            future.result()
        created = {s.number: s for s in samples if s.number is not None}
        marker = f"\nVenue: {venue.name}\n"
        arrivals: dict[int, list[Post]] = defaultdict(list)
        seen = slack_start

        def collect() -> int:
            nonlocal seen
            new = system.slack.posts_from(seen)
            seen += len(new)
            for post in new:
                text = str(post.body.get("text", ""))
                match = ORDER_TEXT.match(text)
                if match and marker in text and post.body.get("channel") == ORDERS_CHANNEL:
                    arrivals[int(match.group(1))].append(post)
            return len(arrivals)

        wait_until(lambda: collect() >= len(created), plan.match_timeout, 0.02)
        collect()

    latencies: list[float] = []
    posts_ms: list[float] = []
    for number, sample in created.items():
        if sample.answered is not None:
            posts_ms.append(sample.answered - sample.sent)
        if number in arrivals:
            latencies.append(arrivals[number][0].at - sample.sent)

    # Where the time goes, from the rows: the request, the queue and worker, the Slack call.
    order_ids = [s.order_id for s in samples if s.order_id is not None]
    rows = {
        int(row.context["order"]): row
        for row in Notification.objects.filter(kind="order_placed", context__order__in=order_ids)
    }
    first_attempts = {
        a.notification_id: a
        for a in DeliveryAttempt.objects.filter(notification__in=rows.values(), number=1)
    }
    api, dispatch, send = [], [], []
    for sample in samples:
        row = rows.get(sample.order_id or -1)
        if row is None or sample.number not in arrivals:
            continue
        attempt = first_attempts.get(row.pk)
        api.append(row.created_at.timestamp() - sample.sent)
        if attempt is not None:
            dispatch.append(attempt.started_at.timestamp() - row.created_at.timestamp())
            send.append(arrivals[sample.number][0].at - attempt.started_at.timestamp())

    return LatencyResult(
        label=label,
        min_interval=min_interval,
        rate=rate,
        seconds=seconds,
        orders=count,
        created=len(created),
        matched=sum(1 for number in created if number in arrivals),
        duplicates=sum(len(p) - 1 for p in arrivals.values() if len(p) > 1),
        p50=percentile(latencies, 0.5),
        p99=percentile(latencies, 0.99),
        max=max(latencies, default=None),
        post_p50=percentile(posts_ms, 0.5),
        post_p99=percentile(posts_ms, 0.99),
        api_p50=percentile(api, 0.5),
        dispatch_p50=percentile(dispatch, 0.5),
        send_p50=percentile(send, 0.5),
        send_lag_max=max(lags, default=0.0),
        errors=[s.error for s in samples if s.error],
        cpu=cpu.summary(),
        busy_before=round(busy_before, 2),
    )
