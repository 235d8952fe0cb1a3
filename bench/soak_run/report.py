"""The soak's report: every check of the issue, read at the end from the database, the clients,
the Slack server and the probes. Each check prints its figures; those that fail are also listed
at the end (and make the soak exit 1)."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile
from bench.deployment import OPERATIONS_CHANNEL
from bench.fault_run import rooms
from bench.fault_run.observer import Observer, Probe, query
from bench.fault_run.verdict import (
    Evidence,
    fetch_stats,
    first_line,
    gather,
    order_posts,
    table,
)
from bench.fault_run.workload import Clients, OrderResult
from bench.soak_run.abuse import AbusiveClient, BadRequests
from bench.soak_run.plan import END, START, Fault
from notifications.local_slack import SlackServer

LATENCY = "WebSocket latency"  # true wherever the screens saw events late
# A fault's consequences may open this long after the next fault began (the evaluation period,
# a liveness, a flush): they are still its own.
CARRY_SECONDS = 30.0
HEALTH_ANSWER_SECONDS = 2.0  # /health must answer within this, always
HEALTH_EDGE_SECONDS = 2.0  # a probe this close to a fault's start may say either
# ... or this close after the dependency answers again: each process learns it from its
# once-a-second probe of the database and its pool's new connections.
# (psycopg's pool retries with a growing delay: seen 1.4 s on a quiet machine, 3.1 on a busy
# one).
HEALTH_BACK_SECONDS = 5.0
# bench/reconnect.py: screens back within the restart spread (5 s) of a restarted process;
# a killed one's screens back off (up to 10 s) instead, from its restart on.
RECONNECT_PROMISE_SECONDS = 10.0


@dataclass
class Window:
    fault: Fault
    start: float
    end: float = 0.0  # the next fault's start, or the end of the orders
    restored: float = 0.0  # when the fault was undone
    undoing: float = 0.0  # when its undoing began (a dependency starting again)
    recovered: float | None = None  # after the undo: /health 200 everywhere and a 201
    killed_at: float | None = None
    listening: float | None = None  # the killed web process listening again
    note: str = ""


@dataclass
class Run:
    args: argparse.Namespace
    state: dict[str, Any]
    ports: list[int]
    windows: list[Window]
    ready: list[dict[str, Any]]
    clients: list[dict[str, Any]]  # the screens' summaries
    orders: list[OrderResult]
    churn: Clients
    observer: Observer
    slack: SlackServer
    abuse: tuple[BadRequests, AbusiveClient] | None
    memory: dict[str, dict[str, int]]
    began: float
    end: float
    drained: float | None
    flush_seconds: float
    taken: dict[str, int] = field(default_factory=dict)  # the kitchen's PATCHes, by status
    placement: list[str] = field(default_factory=list)  # where the web processes ran
    placement_problems: list[str] = field(default_factory=list)  # not the hosts they seemed
    failures: list[str] = field(default_factory=list)
    late: set[str] = field(default_factory=set)  # windows in which screens got events late

    @property
    def resolution_checked(self) -> bool:
        """--ci does not wait for incidents to clear (their rules' windows take minutes)."""
        return bool(self.args.resolve_limit)

    @property
    def url(self) -> str:
        return str(self.state["database_url"])

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  FAILED: {text}")


def report(run: Run) -> dict[str, Any]:
    evidence = gather(run.slack, run.url)
    print("\n## Where the web processes ran")
    for line in run.placement:
        print(f"  {line}")
    for problem in run.placement_problems:
        run.fail(problem)
    sections = [
        ("Orders", lambda: orders(run, evidence)),
        ("Kitchen screens", lambda: screens(run)),
        ("Statistics against the clients", lambda: statistics(run)),
        ("Incidents and Slack, per fault", lambda: incidents(run, evidence)),
        ("/health", lambda: health(run)),
        ("Attack", lambda: attack(run)),
        ("Memory", lambda: memory(run)),
    ]
    figures: dict[str, Any] = {"Where": run.placement}
    for title, section in sections:
        print(f"\n## {title}")
        figures[title] = section()
    print(f"\n{len(run.failures)} checks failed" if run.failures else "\nevery check passed")
    for failure in run.failures:
        print(f"  - {failure}")
    return {"failures": run.failures, "figures": figures}


# --- orders ---------------------------------------------------------------------------------


def where(run: Run, at: float) -> str:
    """The fault window a moment fell in, and how far into it."""
    window = next((w for w in run.windows if w.start <= at < w.end), None)
    return f"{window.fault.name} +{at - window.start:.1f} s" if window else "quiet"


def orders(run: Run, evidence: Evidence) -> dict[str, Any]:
    posts = order_posts(evidence, run.slack)
    results = run.orders
    status = Counter("no answer" if o.status is None else str(o.status) for o in results)
    created = [o for o in results if o.status == 201]
    refused = [o for o in results if o.status == 503]
    events = Counter(
        {
            str(tag): int(n)
            for tag, n in query(
                'SELECT o."table", count(e.id) FROM orders_order o LEFT JOIN orders_orderevent e '
                "ON e.order_id = o.id AND e.kind = 'order.placed' WHERE o.\"table\" LIKE 'F%%' "
                "GROUP BY 1",
                url=run.url,
            )
        }
    )
    stored_not_once = [o.tag for o in created if evidence.stored[o.tag] != 1]
    not_one_event = [o.tag for o in created if events[o.tag] != 1]
    not_posted_once = [o.tag for o in created if posts[o.tag] != 1]
    unrecorded = [o.tag for o in refused if o.tag not in evidence.refusals_recorded]
    unanswered = [o for o in results if o.status is None]
    unanswered_stored = [o.tag for o in unanswered if evidence.stored[o.tag]]
    print(
        f"{len(results)} orders sent: {dict(status)}; of the {len(created)} 201s: stored once "
        f"{len(created) - len(stored_not_once)}, one room event "
        f"{len(created) - len(not_one_event)}, "
        f"on Slack once {len(created) - len(not_posted_once)}; 503s recorded as refused "
        f"{len(refused) - len(unrecorded)}/{len(refused)}; no answer {len(unanswered)} "
        f"(stored anyway: {len(unanswered_stored)}); the kitchen's PATCHes: {run.taken}"
    )
    resent = [o for o in results if o.unanswered_sends]
    if resent:
        print(
            f"  sent again with their Idempotency-Key after no answer: {len(resent)} "
            f"({', '.join(f'{o.tag} {where(run, o.sent)}' for o in resent[:8])}); "
            f"answered with the order an earlier send had made: {sum(o.replayed for o in resent)}"
        )
    if stored_not_once:
        run.fail(f"201 orders not stored exactly once: {stored_not_once[:5]}")
    if not_one_event:
        run.fail(f"201 orders without exactly one room event: {not_one_event[:5]}")
    if not_posted_once:
        run.fail(f"201 orders not on Slack exactly once: {not_posted_once[:5]}")
    if unrecorded:
        run.fail(f"503 orders never recorded as refused: {unrecorded[:5]}")
    others = {k: v for k, v in status.items() if k not in ("201", "503", "no answer")}
    if others:
        odd = [o for o in results if o.status not in (201, 503, None)]
        # Said in the failure itself: the summary at the end is what a truncated log keeps.
        first = "; ".join(f"{o.tag} on :{o.port}: {o.status} {where(run, o.sent)}" for o in odd[:3])
        run.fail(f"orders answered neither 201 nor 503: {others} ({first})")
    # No answer in 10 s: the client cannot know; stored once and broadcast is not lost.
    lost = [o.tag for o in unanswered if evidence.stored[o.tag] != 1 and o.tag not in
            evidence.refusals_recorded]  # fmt: skip
    if lost:
        run.fail(f"orders without an answer, neither stored once nor recorded refused: {lost[:5]}")
    for o in unanswered[:8]:
        print(f"  {o.tag} never answered in 4 sends, the last to :{o.port} ({where(run, o.sent)})")
    return {"sent": len(results), "status": dict(status)}


# --- screens --------------------------------------------------------------------------------


def screens(run: Run) -> dict[str, Any]:
    venues = [v["venue"] for v in run.state["venues"]]
    rows = query(
        "SELECT venue_id, seq, created_at FROM orders_orderevent "
        "WHERE seq IS NOT NULL AND venue_id = ANY(%s)",
        venues,
        url=run.url,
    )
    recorded = {(int(v), int(s)): at.timestamp() for v, s, at in rows}
    final = {
        int(k): int(v)
        for k, v in query("SELECT id, room_seq FROM orders_venue WHERE id = ANY(%s)", venues,
                          url=run.url)
    }  # fmt: skip
    windows = [rooms.Window(w.fault.name, w.start, w.end, w.restored) for w in run.windows] or [
        rooms.Window("(none)", run.end, run.end + 1, run.end)
    ]
    seqs = [s for ready in run.ready for s in ready["seqs"]]
    tallies, before, problems = rooms.judge_screens(run.clients, seqs, recorded, final, windows)
    out = [rooms.row(rooms.Window("(quiet)", 0.0), before)]
    for window, tally in zip(windows, tallies, strict=True):
        window.recovered_s = max(tally.back, default=None)
        out.append(rooms.row(window, tally))
        if tally.late:
            run.late.add(window.name)
    if before.late:
        run.late.add("(start)")
    print(table(out))
    deliveries = sum(t.deliveries for t in tallies) + before.deliveries
    print(f"{len(run.clients)} screens, {len(recorded)} room events, {deliveries} deliveries")
    if problems:
        run.fail(f"{len(problems)} screens lost, doubled or reordered events: {problems[:3]}")
    else:
        print("every screen had every event of its venue exactly once, in order")
    for soaked, tally in zip(run.windows, tallies, strict=True):
        if soaked.fault.name == "web-killed" and tally.back:
            worst = max(tally.back)
            after = worst - ((soaked.listening or soaked.start) - soaked.start)
            print(f"web-killed: {tally.disrupted} screens cut, all back within {worst:.1f} s "
                  f"of the kill, {after:.1f} s after it listened again (promise: "
                  f"{RECONNECT_PROMISE_SECONDS:.0f} s)")  # fmt: skip
            if after > RECONNECT_PROMISE_SECONDS:
                run.fail(f"the killed process's screens took {after:.1f} s to come back")
    latencies = quiet_latencies(run, recorded)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"broadcast latency outside the faults (event recorded to screen): {len(latencies)} "
        f"deliveries, p50 {1000 * (p50 or 0):.0f} ms, p99 {1000 * (p99 or 0):.0f} ms"
    )
    return {"rows": out, "problems": problems[:20], "latency p50 s": p50, "latency p99 s": p99}


def quiet_latencies(run: Run, recorded: dict[tuple[int, int], float]) -> list[float]:
    """Live deliveries of events recorded outside every fault (its start to its undo, and the
    settle after it)."""
    busy = [(w.start, w.restored + run.args.settle) for w in run.windows]
    found = []
    for client in run.clients:
        for seq, got_at, _, how in client["received"]:
            made = recorded.get((client["venue"], seq))
            if made is None or how != "live" or any(a <= made <= b for a, b in busy):
                continue
            found.append(got_at - made)
    return sorted(found)


# --- statistics -----------------------------------------------------------------------------


def statistics(run: Run) -> dict[str, Any]:
    """The deployment's totals against what the clients did. A SIGKILLed process loses what it
    counted since its last flush, so they may differ by one flush interval of its share."""
    host = str(run.state["hosts"][0])
    stats = fetch_stats(run.ports[0], str(run.state["monitoring_token"]), 10.0, host)
    if stats is None:
        run.fail("the statistics endpoint did not answer")
        return {}
    abusive = run.abuse[1] if run.abuse else None
    attacker = (0, 0, 0)
    unread = 0  # what the server may have sent the attacker that it never read
    if abusive is not None:
        attacker = (abusive.connections, abusive.frames_sent, abusive.frames_received)
        # Each of its frames may draw one answer (a pong, an error frame), and each event of
        # its venue's room one frame, still in flight when a close began (its own, after it
        # stopped reading; the server's, after a flood): the server counted them, it read none.
        window = next(w for w in run.windows if w.fault.name == "abuse")
        (events,) = query(
            "SELECT count(*) FROM orders_orderevent WHERE venue_id = %s AND seq IS NOT NULL "
            "AND created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)",
            abusive.venue, window.start, window.end, url=run.url,
        )[0]  # fmt: skip
        unread = abusive.frames_sent + int(events)
    welcomed = sum(c["welcomes"] for c in run.clients) + run.churn.opens + attacker[0]
    # (the fewest, the most) the server can have counted: of a flood's frames, those still in
    # flight when the server closed it were sent by the attacker and never read; of what the
    # server sent the attacker, what was in flight at its closes.
    clients = {
        "connections": (welcomed, welcomed),
        "frames received by the server": (
            sum(c["frames_out"] for c in run.clients),
            sum(c["frames_out"] for c in run.clients) + attacker[1],
        ),
        "frames sent by the server": (
            sum(c["frames_in"] for c in run.clients) + run.churn.frames_in + attacker[2],
            sum(c["frames_in"] for c in run.clients) + run.churn.frames_in + attacker[2] + unread,
        ),
    }  # fmt: skip
    server = {
        "connections": stats["totalConnections"],
        "frames received by the server": stats["totalMessagesReceived"],
        "frames sent by the server": stats["totalMessagesSent"],
    }
    print(
        f"disconnections {stats['totalDisconnections']}, rejected "
        f"{stats['totalRejectedConnections']}, active now {stats['activeConnections']}, "
        f"service errors {stats['totalServiceErrors']}, client errors "
        f"{stats['totalClientErrors']}, resumes {stats['totalResumes']}"
    )
    kinds = query(
        "SELECT kind, sum(n::int) FROM monitoring_websocketsample, "
        "jsonb_each_text(errors_by_type) AS e(kind, n) GROUP BY kind ORDER BY kind",
        url=run.url,
    )
    print("errors by kind (every sample): " + ", ".join(f"{k} {n}" for k, n in kinds))
    timeouts = sum(c.get("open_timeouts", 0) for c in run.clients)
    churn_timeouts = sum(e.kind == "timeout" for e in run.churn.events)
    print(f"handshakes the clients gave up on (10 s): screens {timeouts}, churn {churn_timeouts}")
    kills = sum(w.fault.name == "web-killed" for w in run.windows)
    seconds = max(1.0, run.end - run.began)
    for name, (low, high) in clients.items():
        theirs = server[name]
        # One flush interval of one of the two processes' share, per kill, at the bursts' rate
        # (five times the average: the kill may fall in one).
        # Either way: it loses what it counted since its last flush, and what it had sent
        # (and counted) dies in its socket buffers.
        allowed = int(kills * 5 * low / seconds * run.flush_seconds / 2) + 2
        mine = str(low) if low == high else f"{low}-{high}"
        print(f"{name}: clients {mine}, statistics {theirs} (allowed {allowed} either way: "
              f"{kills} kill(s) x one flush interval)")  # fmt: skip
        if not low - allowed <= theirs <= high + allowed:
            run.fail(f"statistics' {name} {theirs} against the clients' {mine}")
    return {"clients": clients, "server": server, "stats": stats}


# --- incidents ------------------------------------------------------------------------------


def incidents(run: Run, evidence: Evidence) -> dict[str, Any]:
    """Each incident is judged against the fault it belongs to: the one whose window it opened
    in, or (within CARRY_SECONDS of a window's start) the one before, whose consequences
    are still being evaluated; before the first fault (and just after), the start's."""
    # What operators read: every message but the orders' own (a channel's summary after a
    # Slack outage goes to that channel).
    operations = [
        (post.at, post.path, str(post.body.get("text", "")))
        for post in run.slack.posts
        if "chat." in post.path
        and (post.body.get("channel") == OPERATIONS_CHANNEL or "Delivery to" in str(post.body))
    ]
    first = run.windows[0].start if run.windows else run.end
    claimed: set[int] = set()
    rows = [judge_window(run, window, evidence, operations, claimed) for window in run.windows]
    # Held back by an inhibition (its cause fired, or its outage lies in the rule's window)
    # and never announced: recorded for the timeline, not an alert anyone got.
    held = {
        int(number)
        for (number,) in query(
            "SELECT DISTINCT incident_id FROM monitoring_incidentevent WHERE kind = 'suppressed' "
            "AND incident_id NOT IN (SELECT incident_id FROM monitoring_incidentevent "
            "WHERE kind = 'notified')",
            url=run.url,
        )
    }
    for number, title, status, opened, resolved in evidence.incidents:
        if number in claimed:
            continue
        reason = allowance(run, title, opened, first)
        if reason is None and number in held:
            reason = "held back by an inhibition and never announced"
        if reason is None:
            run.fail(f"an incident no fault explains: {title} (opened +{opened - first:.1f} s)")
        else:
            print(f"  '{title}' ({reason})")
            # The end's own (the screens stopping) opens after the wait for every incident to
            # resolve: there is no run left for it to resolve in.
            if resolved is None and run.resolution_checked and opened < run.end:
                run.fail(f"'{title}' never resolved ({status})")
    print(table(rows))
    print("every incident (relative to the first fault):")
    for number, title, status, opened, resolved in evidence.incidents:
        lasted = "" if resolved is None else f", resolved +{resolved - first:.1f} s"
        print(f"  #{number} {title[:60]}: opened +{opened - first:.1f} s{lasted} ({status})")
    return {"rows": rows}


def allowance(run: Run, title: str, opened: float, first: float) -> str | None:
    """Why an incident that no fault expects may open then (None: it may not)."""
    candidates: list[tuple[str, dict[str, str]]] = []
    if opened >= run.end:
        candidates.append(("(end)", dict(END)))
    if opened < first + CARRY_SECONDS:
        candidates.append(("(start)", dict(START)))
    for window in run.windows:
        if window.start <= opened < window.end + CARRY_SECONDS:
            candidates.append((window.fault.name, dict(window.fault.allow)))
    for name, allow in candidates:
        if name in run.late:
            allow[LATENCY] = "screens got events late then (the screens' table)"
        for rule, reason in allow.items():
            if title.startswith(rule):
                return f"after {name}: {reason}"
    return None


def judge_window(
    run: Run,
    window: Window,
    evidence: Evidence,
    operations: list[tuple[float, str, str]],
    claimed: set[int],
) -> dict[str, str]:
    """Its expected incidents: opened in its window or within CARRY_SECONDS after it (or, when
    it joins, already firing at its start); each must be announced and, once undone, resolve."""
    fault = window.fault
    until = window.end + CARRY_SECONDS
    expected = {}
    for name in fault.expect:
        found = [
            i for i in evidence.incidents
            if i[1].startswith(name) and (
                window.start <= i[3] < until
                or (fault.joins and i[3] < window.start and (i[4] is None or i[4] > window.start))
            )
        ]  # fmt: skip
        expected[name] = found
        claimed.update(i[0] for i in found)
        if not found:
            run.fail(f"{fault.name}: no '{name}' incident")
        for _, title, status, _, resolved in found:
            if resolved is None and run.resolution_checked:
                run.fail(f"{fault.name}: '{title}' never resolved ({status})")
    mine = [i for i in evidence.incidents if window.start <= i[3] < window.end]
    words = (*fault.expect, *fault.mentions)
    # A fault that joins a firing incident was told of by that incident's message.
    since = min([window.start, *(i[3] for found in expected.values() for i in found)])
    about = [
        (at, path, text)
        for at, path, text in operations
        if at >= (since if fault.joins else window.start)
        and (any(w in text for w in words) or text.startswith("🔴"))
    ]
    told = next((at for at, path, _ in about if path.endswith("postMessage")), None)
    resolved = next((at for at, _, text in about if at >= window.restored and "✅" in text), None)
    posts_in_window = [
        o for o in operations if window.start <= o[0] < window.end and o[1].endswith("postMessage")
    ]
    for at, _, text in posts_in_window[:8]:
        print(f"    {fault.name} +{at - window.start:6.1f} s {first_line(text)}")

    def rel(at: float | None, since: float) -> str:
        return "—" if at is None else f"{at - since:.1f}"

    if fault.expect and told is None:
        run.fail(f"{fault.name}: no Slack message about it")
    if fault.expect and resolved is None and run.resolution_checked:
        run.fail(f"{fault.name}: no recovery message")
    return {
        "fault": fault.name,
        "held s": f"{window.restored - window.start:.0f}",
        "first message s": rel(told, window.start),
        "recovery message s": rel(resolved, window.start),
        "(after undo)": rel(resolved, window.restored),
        "incidents opened": ", ".join(sorted({i[1][:28] for i in mine})) or "none",
        "messages": str(len(posts_in_window)),
        "back s": "—" if window.recovered is None else f"{window.recovered:.1f}",
    }


# --- /health --------------------------------------------------------------------------------


def health(run: Run) -> dict[str, Any]:
    probes = [p for p in run.observer.probes if run.windows and p.at < run.end]
    killed = [
        (w.start, w.restored + HEALTH_EDGE_SECONDS) for w in run.windows
        if w.fault.name == "web-killed"
    ]  # fmt: skip
    # 503 from its start (after an edge) until its undoing began; either answer until it
    # answers again (its start returned) and an edge more.
    down = [(w.start, w.undoing or w.restored, w.restored) for w in run.windows if w.fault.down]
    slow, wrong_ok, wrong_down, silent = [], [], [], []
    for probe in probes:
        if probe.port == run.ports[1] and any(a <= probe.at <= b for a, b in killed):
            continue  # the killed process: no answer is the truth
        if probe.status is None:
            silent.append(probe)
            continue
        if probe.seconds > HEALTH_ANSWER_SECONDS:
            slow.append(probe)
        # The whole probe (sent to answered) while it was down: a slow one may see it back.
        inside = any(
            a + HEALTH_EDGE_SECONDS <= probe.at and probe.at + probe.seconds <= b
            for a, b, _ in down
        )
        near = any(
            a - HEALTH_EDGE_SECONDS <= probe.at <= c + HEALTH_BACK_SECONDS for a, _, c in down
        )
        if inside and probe.status != 503:
            wrong_ok.append(probe)
        elif not near and probe.status != 200:
            wrong_down.append(probe)
    answered = [p.seconds for p in probes if p.status is not None]
    print(
        f"{len(probes)} probes, answered in p50 {1000 * (percentile(answered, 0.5) or 0):.0f} ms, "
        f"max {max(answered, default=0):.2f} s; over {HEALTH_ANSWER_SECONDS:.0f} s: {len(slow)}; "
        f"no answer (outside the killed process's window): {len(silent)}; 200 while a required "
        f"dependency was down: {len(wrong_ok)}; not 200 while nothing required was down: "
        f"{len(wrong_down)}"
    )
    for name, found in (("slow", slow), ("no answer", silent), ("200 while down", wrong_ok),
                        ("not 200", wrong_down)):  # fmt: skip
        if found:
            run.fail(f"/health {name}: {len(found)} probes, first {describe(found[0], run)}")
    return {"probes": len(probes), "slow": len(slow), "silent": len(silent),
            "wrong_ok": len(wrong_ok), "wrong_down": len(wrong_down)}  # fmt: skip


def describe(probe: Probe, run: Run) -> str:
    window = next((w for w in run.windows if w.start <= probe.at < w.end), None)
    where = f"{window.fault.name} +{probe.at - window.start:.1f} s" if window else "quiet"
    return f"{where} on :{probe.port}: {probe.status} in {probe.seconds:.2f} s {probe.checks}"


# --- the attack -----------------------------------------------------------------------------


def attack(run: Run) -> dict[str, Any]:
    if run.abuse is None:
        print("not run")
        return {}
    bad, abusive = run.abuse
    summary = bad.summary()
    print(
        f"{summary['sent']} bad requests in {summary['seconds']} s: 4xx {summary['4xx']}, "
        f"5xx {summary['5xx']}, other {summary['other']}, 4xx without a clear error "
        f"{summary['unclear']}; slowest answer {summary['slowest']} s"
    )
    for kind, statuses in summary["by kind"].items():
        print(f"  {kind}: {statuses}")
    if summary["5xx"] or summary["other"] or summary["unclear"]:
        run.fail(
            f"bad requests: {summary['5xx']} 5xx, {summary['other']} neither 4xx nor 5xx, "
            f"{summary['unclear']} without a clear error"
        )
    print("WebSocket abuse: " + "; ".join(f"{k} x{n}" for k, n in abusive.outcomes.items()))
    for outcome in abusive.outcomes:
        if "failed" in outcome or outcome.startswith(("oversized: open", "flood: open")):
            run.fail(f"WebSocket abuse not refused: {outcome}")
    return {"bad requests": summary, "websocket": dict(abusive.outcomes)}


# --- memory ---------------------------------------------------------------------------------


def memory(run: Run) -> dict[str, Any]:
    for name, figures in sorted(run.memory.items()):
        before, after = figures.get("before"), figures.get("after")
        same = figures.get("before pid") == figures.get("after pid")
        shown = f"{(before or 0) / 2**20:.0f} MB before, {(after or 0) / 2**20:.0f} MB after" + (
            "" if same else " (restarted during the run: a new process)"
        )
        print(f"{name}: {shown}")
        if same and before and after and after > 2 * before and after > 200 * 2**20:
            run.fail(f"{name} grew from {before / 2**20:.0f} MB to {after / 2**20:.0f} MB")
    return run.memory
