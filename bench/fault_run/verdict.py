"""What each fault cost, read at the end: the database, the Slack server's posts, the clients."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.common import HOST, percentile
from bench.fault_run.inject import FaultRun
from bench.fault_run.observer import DIRECT_URL, Observer, Probe, healthy
from bench.fault_run.observer import query as read
from bench.fault_run.workload import Clients, OrderResult
from notifications.local_slack import SlackServer


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass
class Evidence:
    """Everything read once at the end: the database, the Slack server's posts, the clients."""

    stored: Counter[str]  # order tag -> rows
    refusals_recorded: set[str]  # tags of creation_failed events (refused, recorded later)
    incidents: list[tuple[int, str, str, float, float | None]]  # id, title, status, opened, res.
    dead: list[tuple[str, float]]  # role, declared dead at
    rows: list[tuple[int, str, str, str, float]]  # id, status, kind, slack_ts, created
    posts: list[tuple[float, str, str, str]]  # at, path, ts, text


def gather(slack: SlackServer, url: str = DIRECT_URL) -> Evidence:
    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return read(sql, *params, url=url)

    stored = Counter(
        {
            tag: n
            for tag, n in query(
                'SELECT "table", count(*) FROM orders_order WHERE "table" LIKE %s GROUP BY 1', "F%"
            )
        }
    )
    refused = {
        str(row[0])
        for row in query(
            "SELECT payload->>'table' FROM orders_orderevent WHERE kind = %s",
            "order.creation_failed",
        )
    }
    incidents = [
        (i, title, status, opened.timestamp(), epoch(resolved))
        for i, title, status, opened, resolved in query(
            "SELECT id, title, status, opened_at, resolved_at FROM monitoring_incident ORDER BY id"
        )
    ]
    dead = [
        (role, at.timestamp())
        for role, at in query(
            "SELECT role, declared_dead_at FROM monitoring_worker "
            "WHERE declared_dead_at IS NOT NULL"
        )
    ]
    rows = [
        (i, status, kind, ts or "", created.timestamp())
        for i, status, kind, ts, created in query(
            "SELECT id, status, kind, slack_ts, created_at FROM notifications_notification "
            "WHERE update_target_id IS NULL"
        )
    ]
    posts = [(p.at, p.path, p.ts, str(p.body.get("text", ""))) for p in slack.posts]
    return Evidence(stored, refused, incidents, dead, rows, posts)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:60] if text.strip() else "(no text)"


def rel(at: float | None, since: float) -> str:
    return "—" if at is None else f"+{at - since:.1f} s"


@dataclass
class Verdict:
    name: str
    held: float
    lines: list[str]
    row: dict[str, str]


def judge(
    run: FaultRun,
    evidence: Evidence,
    orders: list[OrderResult],
    observer: Observer,
    clients: Clients,
    order_posts: Counter[str],
    members: float,
) -> Verdict:
    t0, t1 = run.start, run.end
    mine = [o for o in orders if t0 <= o.sent < t1]
    status = Counter("none" if o.status is None else str(o.status) for o in mine)
    created = [o for o in mine if o.status == 201]
    not_stored_once = [o.tag for o in created if evidence.stored[o.tag] != 1]
    not_posted_once = [o.tag for o in created if order_posts[o.tag] != 1]
    doubled_posts = [o.tag for o in created if order_posts[o.tag] > 1]
    stored_unanswered = [o.tag for o in mine if o.status != 201 and evidence.stored[o.tag]]
    refused = [o for o in mine if o.status == 503]
    unrecorded = [o.tag for o in refused if o.tag not in evidence.refusals_recorded]
    unheard = [o.tag for o in created if clients.received[o.tag] == 0]
    partly = [o.tag for o in created if 0 < clients.received[o.tag] < members]
    others = len(mine) - len(created) - len(refused)
    waits = sorted(o.answered - o.sent for o in created)
    p50 = percentile(waits, 0.5) or 0.0
    slowest = max((o.answered - o.sent for o in mine if o.status is not None), default=0.0)

    probes = [p for p in observer.probes if t0 <= p.at < t1]
    bad = next((p for p in probes if not healthy(p, False)), None)
    degraded = next((p for p in probes if p.checks.get("slack") == "degraded"), None)
    slowest_probe = max((p.seconds for p in probes if p.status is not None), default=0.0)
    operations = [
        (at, text)
        for at, path, _, text in evidence.posts
        if t0 <= at < t1 and path.endswith("chat.postMessage") and "New Order" not in text
    ]
    incidents = [i for i in evidence.incidents if t0 <= i[3] < t1]
    dead = [d for d in evidence.dead if t0 <= d[1] < t1]
    ws = Counter(e.kind for e in clients.events if t0 <= e.at < t1 and e.kind != "open")
    exits = [e for e in observer.exits if t0 <= e[0] < t1]
    rows = [r for r in evidence.rows if t0 <= r[4] < t1]
    rows_lost = [r for r in rows if r[1] in ("failed", "pending", "sending")]

    lines = [
        f"  detect: /health {describe_probe(bad, t0)}"
        + (f"; slack degraded {rel(degraded.at, t0)}" if degraded else "")
        + f"; first Slack message {rel(operations[0][0], t0) if operations else '—'}"
        + (f" ({first_line(operations[0][1])})" if operations else "")
        + (f"; declared dead: {', '.join(f'{r} {rel(a, t0)}' for r, a in dead)}" if dead else ""),
        f"  incidents opened: {len(incidents)}"
        + "".join(
            f"\n    #{i} {title} {rel(opened, t0)} ({status}"
            + (f", resolved {rel(resolved, t0)}" if resolved else "")
            + ")"
            for i, title, status, opened, resolved in incidents
        ),
        f"  recover (after restore at {rel(run.restored, t0)}): "
        + ", ".join(
            f"{k} {'not within limit' if v is None else f'+{v:.1f} s'}"
            for k, v in run.recovered.items()
        ),
        f"  orders: {len(mine)} sent, {dict(status)}; 201 answered in p50 {p50:.2f} s, "
        f"slowest answer {slowest:.2f} s ({sum(w > 2 for w in waits)} 201s over 2 s); "
        f"{sum(o.retried_elsewhere for o in mine)} refused and sent to the other web process",
        f"  lost/doubled: 201 not stored once {len(not_stored_once)}, 201 not on Slack once "
        f"{len(not_posted_once)} (twice or more: {len(doubled_posts)}), stored without a 201 "
        f"{len(stored_unanswered)}, 503 never recorded {len(unrecorded)}/{len(refused)}, "
        f"notifications lost {len(rows_lost)}/{len(rows)}",
        f"  broadcasts: 201 orders heard by no client {len(unheard)}, by only some "
        f"{len(partly)}; WebSocket closes and refusals: {dict(ws) or 'none'}; "
        f"slowest /health {slowest_probe:.2f} s",
    ]
    if operations:
        lines.append(
            f"  Slack, not orders ({len(operations)}): "
            + "; ".join(f"{rel(at, t0)} {first_line(text)}" for at, text in operations[:8])
        )
    if exits:
        lines.append(
            "  process exits: "
            + ", ".join(f"{name} (code {code}) {rel(at, t0)}" for at, name, code in exits)
        )
    if not_stored_once or not_posted_once or unrecorded or stored_unanswered:
        lines.append(
            f"  tags: not stored once {not_stored_once[:5]}, not posted once "
            f"{not_posted_once[:5]}, unrecorded 503 {unrecorded[:5]}, stored without 201 "
            f"{stored_unanswered[:5]}"
        )
    detect = min(
        [
            x
            for x in (
                bad.at if bad else None,
                degraded.at if degraded else None,
                operations[0][0] if operations else None,
                *(i[3] for i in incidents),
                *(d[1] for d in dead),
            )
            if x is not None
        ],
        default=None,
    )

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    row = {
        "fault": run.plan.name,
        "held s": f"{run.plan.hold:.0f}",
        "detect s": fmt(None if detect is None else detect - t0),
        "incidents": str(len(incidents)),
        "/health ok s": fmt(run.recovered.get("health")),
        "201 again s": fmt(run.recovered.get("orders")),
        "drained s": fmt(run.recovered.get("backlog")),
        "orders 201/503/other": f"{len(created)}/{len(refused)}/{others}",
        "lost": str(
            len(not_stored_once)
            + len(set(not_posted_once) - set(doubled_posts))
            + len(unrecorded)
            + len(rows_lost)
        ),
        "doubled": str(len(doubled_posts) + sum(evidence.stored[t] > 1 for t in not_stored_once)),
        "exits": str(len(exits)),
    }
    return Verdict(run.plan.name, run.plan.hold, lines, row)


def describe_probe(probe: Probe | None, since: float) -> str:
    if probe is None:
        return "stayed 200"
    what = "no answer" if probe.status is None else str(probe.status)
    failing = [k for k, v in probe.checks.items() if v == "unhealthy"]
    return f"{what} {rel(probe.at, since)} on :{probe.port}" + (
        f" ({', '.join(failing)})" if failing else ""
    )


def table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    heads = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in heads]
    out = [" | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(r[h].ljust(w) for h, w in zip(heads, widths, strict=True)) for r in rows]
    return "\n".join(out)


TAG = re.compile(r"F\d{7}")


def order_posts(evidence: Evidence, slack: SlackServer) -> Counter[str]:
    """How many messages on Slack name each order (by its unique table)."""
    counts: Counter[str] = Counter()
    for post in slack.posts:
        if post.path.endswith("chat.postMessage") and "New Order" in json.dumps(post.body):
            counts.update(set(TAG.findall(json.dumps(post.body))))
    return counts


def outbox_against_slack(evidence: Evidence) -> list[str]:
    """Every row marked sent was posted once; every post is a row's (or a direct alert)."""
    posted = Counter(ts for _, path, ts, _ in evidence.posts if path.endswith("chat.postMessage"))
    sent = {r[3] for r in evidence.rows if r[1] == "sent" and r[3]}
    unsent_posts = [
        (at, text)
        for at, path, ts, text in evidence.posts
        if path.endswith("chat.postMessage") and ts not in sent
    ]
    direct = [p for p in unsent_posts if p[1].startswith("🔴")]
    status = Counter(r[1] for r in evidence.rows)
    return [
        f"outbox rows (not in-place updates): {dict(status)}",
        f"rows marked sent that Slack never got: {sum(1 for ts in sent if not posted[ts])}",
        f"Slack posts of no row: {len(unsent_posts)} ({len(direct)} direct 🔴 alerts"
        + (
            f"; others: {[first_line(t) for _, t in unsent_posts if not t.startswith('🔴')][:5]}"
            if len(unsent_posts) > len(direct)
            else ""
        )
        + ")",
    ]


def fetch_stats(
    port: int, token: str, timeout: float = 5.0, host: str = HOST
) -> dict[str, Any] | None:
    """GET /api/v1/monitoring/websocket/stats with the monitoring token; None if not a 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "GET",
            "/api/v1/monitoring/websocket/stats",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        body = json.loads(response.read())
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def connection_figures(port: int, token: str, clients: Clients, limit: float) -> str:
    """totalConnections - totalDisconnections against activeConnections and the clients."""
    deadline = time.time() + limit
    text = "stats did not answer"
    while time.time() < deadline:
        stats = fetch_stats(port, token)
        if stats is not None:
            net = stats["totalConnections"] - stats["totalDisconnections"]
            active, live = stats["activeConnections"], clients.open_now
            text = (
                f"totalConnections {stats['totalConnections']} - totalDisconnections "
                f"{stats['totalDisconnections']} = {net}; activeConnections {active}; "
                f"clients connected {live}: {'equal' if net == active == live else 'NOT equal'}"
            )
            if net == active == live:
                return text
        time.sleep(1)
    return text
