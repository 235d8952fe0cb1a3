"""The outbox benchmark's report: the figures table and who used the cores."""

from __future__ import annotations

from typing import Any

from bench.slack_outbox.delivery import DeliveryResult
from bench.slack_outbox.orders import LatencyResult
from bench.slack_outbox.plan import Plan


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def figure_rows(
    plan: Plan, delivery: DeliveryResult, latencies: list[LatencyResult]
) -> list[list[str]]:
    d = delivery
    ok = "ok"
    rows = [
        [
            "1 enqueue rate",
            f"{d.enqueue_rate:,.0f} notifications/s",
            f"N={d.n} send_message() calls, one transaction each, in {d.enqueue_seconds:.2f} s; "
            f"per call p50 {fmt_ms(d.enqueue_call_p50)}, p99 {fmt_ms(d.enqueue_call_p99)}",
        ],
        [
            "2 delivery throughput (limiter off)",
            f"{d.delivery_rate:,.1f} deliveries/s",
            f"{d.received}/{d.n} received {d.delivery_seconds:.2f} s after all were committed "
            f"(1 worker x {plan.concurrency} processes"
            + (f"; {d.delivered_before_start} sent early" if d.delivered_before_start else "")
            + ")",
        ],
        [
            "  exactly once",
            ok if not (d.duplicates or d.missing) else "FAIL",
            f"{d.duplicates} duplicates, {d.missing} missing, {d.attempts} attempts",
        ],
        [
            "  per destination in creation order",
            ok if not (d.out_of_order or d.wrong_channel) else "FAIL",
            f"{d.out_of_order} out of order, {d.wrong_channel} in the wrong channel",
        ],
        [
            "  status == sent for all rows",
            "yes" if d.statuses.get("sent", 0) == d.n else "NO",
            ", ".join(f"{k}: {v}" for k, v in sorted(d.statuses.items())),
        ],
        [
            "  DB work per delivered message",
            "-"
            if d.db_transactions_per_message is None
            else f"{d.db_transactions_per_message:.1f} transactions",
            "PostgreSQL commits in the bench database during delivery / N (autocommit: one per "
            f"statement); Slack call (DeliveryAttempt.duration_ms) p50 {fmt_ms(d.slack_http_p50)}, "
            f"p99 {fmt_ms(d.slack_http_p99)}",
        ],
        [
            "  drain tasks",
            f"{d.tasks_queued} queued by {d.n} enqueues",
            f"{d.tasks_left_at_done} still queued or running when the last message arrived"
            + (
                f" (then consumed at {d.noop_task_rate:,.0f} tasks/s, with nothing left to send)"
                if d.noop_task_rate is not None
                else ""
            )
            + "; the queue was empty "
            + (
                f"{d.tasks_cleared_seconds:.1f} s after the start"
                if d.tasks_cleared_seconds is not None
                else "only after the timeout"
            ),
        ],
    ]
    for r in latencies:
        rows.append(
            [
                f"3 order->Slack, {r.label}",
                f"p50 {fmt_ms(r.p50)}  p99 {fmt_ms(r.p99)}  max {fmt_ms(r.max)}",
                f"{r.matched}/{r.orders} orders at {r.rate:g}/s for {r.seconds:g} s; "
                f"POST->201 p50 {fmt_ms(r.post_p50)}, p99 {fmt_ms(r.post_p99)}",
            ]
        )
        rows.append(
            [
                "  breakdown (p50 of each stage)",
                "",
                f"request->row {fmt_ms(r.api_p50)}, row->worker sends {fmt_ms(r.dispatch_p50)}, "
                f"Slack call {fmt_ms(r.send_p50)}",
            ]
        )
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, value, detail in rows:
        print(f"  {name:<{widths[0]}}  {value:<{widths[1]}}  {detail}")


def print_cpu(phases: dict[str, dict[str, Any]]) -> None:
    columns = ["bench process", "daphne", "celery worker", "rest of machine", "machine total"]
    print(f"  {'cores used during':<38}{'wall':>7}" + "".join(f"{c:>17}" for c in columns))
    for phase, cpu in phases.items():
        cells = "".join(f"{cpu[c]:>17.2f}" if c in cpu else f"{'-':>17}" for c in columns)
        print(f"  {phase:<38}{cpu['wall_s']:>6.1f}s{cells}")
