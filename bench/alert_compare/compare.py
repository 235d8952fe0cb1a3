"""The two sides, per fault: the application's incidents and Prometheus' alerts, matched by
alert name, and every disagreement flagged.

An alert belongs to the fault in whose window (its injection to the next one's) it began, on
either side; times are seconds from that injection. Prometheus' alert is firing from the first
poll of its /api/v1/alerts that shows it firing to the first that does not; Alertmanager's
times are the webhook's arrivals. The application's is the incident's opened_at / resolved_at
and the arrival at the local Slack server of the post that announced it and of the reply that
said it resolved.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise

import yaml

from bench.alert_compare.app_side import AppIncident, RuleSpec
from bench.alert_compare.stack import RULES, Notice, Seen

# Differences in time to fire or to resolve up to this are the two evaluation loops' phases
# (the application every ALERT_EVALUATION_SECONDS, Prometheus a scrape then an evaluation
# every 5 s); beyond it, a disagreement. Announcements are compared with the application's
# group wait (ALERT_GROUP_WAIT_SECONDS, 30 s) added, against Alertmanager's 2 s.
TOLERANCE_S = 30.0
GROUP_WAIT_S = 30.0
SEVERITY = {"critical": "crit", "warning": "warn", "info": "info"}


@dataclass(frozen=True)
class Window:
    name: str
    start: float
    restored: float | None  # None: not a fault (the start-up)
    end: float


@dataclass
class Interval:
    start: float
    end: float | None  # None: still firing at the end of the run
    severity: str
    notified: float | None = None  # app: Slack post; prometheus: Alertmanager's firing notice
    notified_end: float | None = None  # the resolution's post / notice
    held: list[str] = field(default_factory=list)  # why it was not announced
    direct: bool = False
    # Alertmanager: when the receiver heard it end, if not at its own end (a resolution an
    # inhibition holds back is dropped when the same alert fires again meanwhile; the
    # alert's next resolution, if any, is the one heard).
    heard_end: float | None = None


def lingers(spec: RuleSpec | None) -> float:
    """How long after a fault the rule may rightly still fire: its window, then its clear
    period."""
    return 0.0 if spec is None else float(spec.window + spec.clear)


def app_intervals(found: list[AppIncident]) -> dict[str, list[Interval]]:
    out: dict[str, list[Interval]] = defaultdict(list)
    for i in sorted(found, key=lambda i: i.opened):
        out[i.alert].append(
            Interval(
                i.opened, i.resolved, i.severity, i.posted, i.resolution_posted, i.held, i.direct
            )
        )
    return out


def prometheus_intervals(
    seen: list[Seen], notices: list[Notice], names: dict[str, str]
) -> dict[str, list[Interval]]:
    """Firing intervals by alert name (any of its label sets firing), from the polls."""
    out: dict[str, list[Interval]] = defaultdict(list)
    open_: dict[str, Interval] = {}
    for poll in seen:
        if poll.prometheus is None:
            continue  # no answer: nothing known
        firing = {name: labels for name, labels, state in poll.prometheus if state == "firing"}
        for name, labels in firing.items():
            if name not in open_:
                open_[name] = Interval(poll.at, None, labels.get("severity", ""))
                out[name].append(open_[name])
        for name in [n for n in open_ if n not in firing]:
            open_.pop(name).end = poll.at
        for name, _, state, inhibited_by in poll.alertmanager or []:
            if name in open_ and state == "suppressed":
                why = ", ".join(sorted({names.get(f, f) for f in inhibited_by})) or "silenced"
                if f"inhibited by {why}" not in open_[name].held:
                    open_[name].held.append(f"inhibited by {why}")
    for name, intervals in out.items():
        mine = [n for n in notices if n.labels.get("alertname") == name]
        for interval, following in zip(intervals, [*intervals[1:], None], strict=True):
            until = following.start if following else float("inf")
            interval.notified = next(
                (n.at for n in mine if n.status == "firing" and interval.start - 2 <= n.at < until),
                None,
            )
            interval.notified_end = next(
                (
                    n.at
                    for n in mine
                    if n.status == "resolved"
                    and interval.end is not None
                    and interval.end - 2 <= n.at < until + 60
                ),
                None,
            )
            if interval.end is not None and interval.notified_end is None:
                interval.heard_end = next(
                    (n.at for n in mine if n.status == "resolved" and n.at >= interval.end), None
                )
    return out


def rel(at: float | None, since: float) -> str:
    return "—" if at is None else f"{at - since:+.0f}"


@dataclass
class Row:
    window: Window
    alert: str
    app: list[Interval]
    prom: list[Interval]
    flags: list[str]

    def cells(self) -> dict[str, str]:
        t0 = self.window.start
        a = self.app[0] if self.app else None
        p = self.prom[0] if self.prom else None
        a_last = self.app[-1] if self.app else None
        p_last = self.prom[-1] if self.prom else None

        def end(iv: Interval | None) -> str:
            if iv is None:
                return "—"
            return "firing" if iv.end is None else rel(iv.end, t0)

        def notified(iv: Interval | None) -> str:
            if iv is None:
                return "—"
            if iv.notified is None:
                return "held" if iv.held else "none"
            return rel(iv.notified, t0) + (" direct" if iv.direct else "")

        return {
            "fault": self.window.name,
            "alert": self.alert,
            "sev app/prom": f"{SEVERITY.get(a.severity, '—') if a else '—'}/"
            f"{SEVERITY.get(p.severity, '—') if p else '—'}",
            "app open": rel(a.start, t0) if a else "—",
            "app end": end(a_last) + (f" ({len(self.app)}x)" if len(self.app) > 1 else ""),
            "Slack": notified(a),
            "Slack ✅": rel(a_last.notified_end, t0) if a_last else "—",
            "prom fire": rel(p.start, t0) if p else "—",
            "prom end": end(p_last) + (f" ({len(self.prom)}x)" if len(self.prom) > 1 else ""),
            "AM sent": notified(p),
            "AM resolved": rel(p_last.notified_end, t0) if p_last else "—",
            "flags": "; ".join(self.flags) or "agree",
        }


def compare(
    windows: list[Window],
    app: dict[str, list[Interval]],
    prom: dict[str, list[Interval]],
    specs: dict[str, RuleSpec],
    run_end: float,
) -> list[Row]:
    rows = []
    for w in windows:
        names = sorted(
            {n for n, ivs in app.items() if any(w.start <= iv.start < w.end for iv in ivs)}
            | {n for n, ivs in prom.items() if any(w.start <= iv.start < w.end for iv in ivs)}
        )
        for name in names:
            mine_a = [iv for iv in app.get(name, []) if w.start <= iv.start < w.end]
            mine_p = [iv for iv in prom.get(name, []) if w.start <= iv.start < w.end]
            found = flags(w, name, mine_a, mine_p, app, prom, specs.get(name), run_end)
            rows.append(Row(w, name, mine_a, mine_p, found))
    return rows


def _firing_at(intervals: list[Interval], at: float) -> Interval | None:
    return next(
        (iv for iv in intervals if iv.start <= at and (iv.end is None or iv.end > at)), None
    )


def flags(
    w: Window,
    name: str,
    mine_a: list[Interval],
    mine_p: list[Interval],
    app: dict[str, list[Interval]],
    prom: dict[str, list[Interval]],
    spec: RuleSpec | None,
    run_end: float,
) -> list[str]:
    out: list[str] = []
    t0 = w.start
    sides = (("app", mine_a, app.get(name, [])), ("prom", mine_p, prom.get(name, [])))
    for (side, mine, _), (other, theirs, all_theirs) in (sides, sides[::-1]):
        if mine and not theirs:
            before = _firing_at(all_theirs, mine[0].start)
            out.append(
                f"{side} only"
                + (f" ({other} firing since {rel(before.start, t0)})" if before else "")
            )
    if mine_a and mine_p:
        a, p = mine_a[0], mine_p[0]
        delta = p.start - a.start
        if abs(delta) > TOLERANCE_S:
            out.append(f"fires {abs(delta):.0f} s later on {'prom' if delta > 0 else 'app'}")
        a_end, p_end = mine_a[-1].end, mine_p[-1].end
        if a_end is not None and p_end is not None:
            delta = p_end - a_end
            if abs(delta) > TOLERANCE_S:
                out.append(f"resolves {abs(delta):.0f} s later on {'prom' if delta > 0 else 'app'}")
        elif (a_end is None) != (p_end is None):
            still = "app" if a_end is None else "prom"
            out.append(f"still firing at the end on {still} only")
        if a.severity != p.severity:
            out.append(f"severity {a.severity} (app) vs {p.severity} (prom)")
        if (a.notified is None) != (p.notified is None):
            told, quiet = ("app", mine_p[0]) if a.notified is not None else ("prom", mine_a[0])
            why = "; ".join(quiet.held) or "no notification"
            out.append(f"announced by {told} only ({why})")
        elif a.notified is not None and p.notified is not None:
            delta = (a.notified - (0.0 if a.direct else GROUP_WAIT_S)) - p.notified
            if abs(delta) > TOLERANCE_S:
                why = "; ".join((a if delta > 0 else p).held)
                out.append(
                    f"announced {abs(delta):.0f} s later by {'app' if delta > 0 else 'AM'}"
                    + (f" ({why})" if why else "")
                )
    for iv in mine_p:
        if iv.end is not None and iv.notified is not None and iv.notified_end is None:
            heard = "never" if iv.heard_end is None else f"at {rel(iv.heard_end, t0)}"
            out.append(f"AM muted its end at {rel(iv.end, t0)}: the receiver heard it end {heard}")
        if iv.notified is None and iv.notified_end is not None:
            out.append(f"AM sent only its end ({rel(iv.notified_end, t0)}), as an earlier alert's")
    for side, mine, _ in sides:
        for before, after in pairwise(mine):
            if before.end is not None:
                out.append(f"{side} silent {rel(before.end, t0)}..{rel(after.start, t0)}")
        if w.restored is None or not mine:
            continue
        allowed = lingers(spec) + TOLERANCE_S
        at_end = _firing_at(mine, w.end)
        if mine[-1].end is None and run_end - w.restored > allowed:
            out.append(
                f"{side} still firing at the end of the run, {run_end - w.restored:.0f} s "
                f"after the restore (window + clear {lingers(spec):.0f} s)"
            )
        elif at_end is not None and w.end - w.restored > allowed:
            out.append(
                f"{side} still firing {w.end - w.restored:.0f} s after the restore "
                f"(window + clear {lingers(spec):.0f} s)"
            )
    return out


def static_differences(specs: dict[str, RuleSpec]) -> list[str]:
    """Each of the application's enabled rules (as its database has them, the model's
    defaults filled in) against its counterpart in rules.yml: present, the same severity, the
    pending period as `for`, the clear period as `keep_firing_for`."""
    alerts = {
        rule["alert"]: rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    out = []
    for name, spec in sorted(specs.items()):
        theirs = alerts.pop(name, None)
        if theirs is None:
            out.append(f"{name}: not in rules.yml")
            continue
        severity = theirs.get("labels", {}).get("severity")
        if severity != spec.severity:
            out.append(f"{name}: severity {severity} in rules.yml, {spec.severity} in the app")
        for key, field_, expected in (
            ("for", "pending", spec.pending),
            ("keep_firing_for", "clear", spec.clear),
        ):
            got = seconds(theirs.get(key, "0s"))
            if got != expected:
                out.append(
                    f"{name}: {key} {got:g} s in rules.yml, {field_} {expected} s in the app"
                )
    out += [f"{name}: in rules.yml only" for name in alerts]
    return out


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in ("ms", "s", "m", "h", "d"):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return timedelta(seconds=int(duration[: -len(unit)]) * units[unit]).total_seconds()
    raise ValueError(f"not a duration: {duration}")
