"""The figures table (monitored against unmonitored, median of repetitions) and the cores table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.rooms.plan import VARIANTS, Plan


@dataclass(frozen=True)
class Figure:
    label: str
    path: tuple[str, ...]  # into a session: (scenario, metric)
    layer: str
    unit: str
    digits: int = 0
    # "ratio>=": monitored/unmonitored must be at least; "ratio<=": at most; "max": monitored below
    target_kind: str | None = None
    target: float | None = None

    def measured(self, session: dict[str, Any]) -> bool:
        node: Any = session
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    def value(self, session: dict[str, Any]) -> float | None:
        """The figure of one session; None when it could not be computed (lost replies)."""
        node: Any = session
        for key in self.path:
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    def target_text(self) -> str:
        if self.target_kind == "ratio>=":
            return f"ratio >= {self.target:.2f}"
        if self.target_kind == "ratio<=":
            return f"ratio <= {self.target:.2f}"
        if self.target_kind == "max":
            return f"< {self.target:g} {self.unit}"
        return ""


def figures_for(plan: Plan) -> list[Figure]:
    figures: list[Figure] = []
    if "echo" in plan.scenarios:
        for n in plan.echo_connections:
            figures.append(
                Figure(
                    f"echo closed loop, {n:,} conns: round trips/s",
                    (f"echo{n}", "throughput"),
                    "memory",
                    "/s",
                    target_kind="ratio>=",
                    target=0.95,
                )
            )
            figures.append(
                Figure(
                    f"echo closed loop, {n:,} conns: server CPU/msg",
                    (f"echo{n}", "server_cpu_us_per_msg"),
                    "memory",
                    "us",
                    1,
                )
            )
    if "open" in plan.scenarios:
        rate = f"{plan.open_connections:,} conns @ {plan.open_rate:,.0f}/s"
        figures += [
            Figure(f"open loop {rate}: RTT p50", ("open", "rtt_p50_ms"), "memory", "ms", 2),
            Figure(
                f"open loop {rate}: RTT p99",
                ("open", "rtt_p99_ms"),
                "memory",
                "ms",
                2,
                target_kind="max",
                target=5.0,
            ),
            Figure(
                f"open loop {rate}: server CPU/msg",
                ("open", "server_cpu_us_per_msg"),
                "memory",
                "us",
                1,
                target_kind="ratio<=",
                target=1.05,
            ),
            Figure(f"open loop {rate}: lost replies", ("open", "lost"), "memory", ""),
        ]
    if "broadcast" in plan.scenarios:
        for layer in plan.layers:
            head = f"broadcast {plan.members} members, {layer}"
            figures += [
                Figure(
                    f"{head}: deliveries/s (burst)",
                    ("broadcast", "burst", "deliveries_per_s"),
                    layer,
                    "/s",
                ),
                Figure(
                    f"{head}: server CPU/delivery (burst)",
                    ("broadcast", "burst", "server_cpu_us_per_delivery"),
                    layer,
                    "us",
                    1,
                ),
                Figure(
                    f"{head}: all members p50 (paced)",
                    ("broadcast", "paced", "all_members_p50_ms"),
                    layer,
                    "ms",
                    1,
                ),
                Figure(
                    f"{head}: all members p99 (paced)",
                    ("broadcast", "paced", "all_members_p99_ms"),
                    layer,
                    "ms",
                    1,
                ),
                Figure(
                    f"{head}: lost deliveries",
                    ("broadcast", "burst", "lost_deliveries"),
                    layer,
                    "",
                ),
            ]
            if layer == "redis":
                figures += [
                    Figure(
                        f"{head}: all members p50 (separate publisher)",
                        ("broadcast", "external", "all_members_p50_ms"),
                        layer,
                        "ms",
                        1,
                    ),
                    Figure(
                        f"{head}: all members p99 (separate publisher)",
                        ("broadcast", "external", "all_members_p99_ms"),
                        layer,
                        "ms",
                        1,
                    ),
                ]
    return figures


@dataclass
class Row:
    figure: Figure
    monitored: list[float | None] = field(default_factory=list)
    unmonitored: list[float | None] = field(default_factory=list)

    @staticmethod
    def median(values: list[float | None]) -> float | None:
        # A missing value (a percentile that fell on a lost reply) ranks as the worst.
        if not values:
            return None
        return statistics.median(math.inf if v is None else v for v in values)

    def ratio(self) -> float | None:
        """Median over repetitions of monitored / unmonitored, each pair run back to back."""
        pairs = [
            m / u
            for m, u in zip(self.monitored, self.unmonitored, strict=False)
            if m is not None and u is not None and u != 0
        ]
        return statistics.median(pairs) if pairs else None

    def verdict(self) -> str:
        kind, target = self.figure.target_kind, self.figure.target
        if kind is None or target is None:
            return ""
        if kind == "max":
            value = self.median(self.monitored)
            return "ok" if value is not None and value < target else "FAIL"
        ratio = self.ratio()
        if ratio is None:
            return "?"
        passed = ratio >= target if kind == "ratio>=" else ratio <= target
        return "ok" if passed else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.figure.label,
            "layer": self.figure.layer,
            "unit": self.figure.unit,
            "monitored": self.monitored,
            "unmonitored": self.unmonitored,
            "monitored_median": self.median(self.monitored),
            "unmonitored_median": self.median(self.unmonitored),
            "ratio": self.ratio(),
            "target": self.figure.target_text() or None,
            "verdict": self.verdict() or None,
        }


def build_rows(plan: Plan, sessions: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for figure in figures_for(plan):
        row = Row(figure)
        for rep in range(plan.reps):
            for variant in VARIANTS:
                match = [
                    s
                    for s in sessions
                    if s["rep"] == rep and s["variant"] == variant and s["layer"] == figure.layer
                ]
                if match and figure.measured(match[0]):
                    values = row.monitored if variant == "monitored" else row.unmonitored
                    values.append(figure.value(match[0]))
        if row.monitored or row.unmonitored:
            rows.append(row)
    return rows


def fmt(value: float | None, digits: int, unit: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "lost"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit not in ("", "/s") else text


def render_table(rows: list[Row]) -> str:
    header = ("figure (median of reps)", "monitored", "unmonitored", "ratio", "target", "")
    lines = [header]
    for row in rows:
        f = row.figure
        ratio = row.ratio()
        lines.append(
            (
                f.label + (f" [{f.unit}]" if f.unit == "/s" else ""),
                fmt(row.median(row.monitored), f.digits, f.unit),
                fmt(row.median(row.unmonitored), f.digits, f.unit),
                "-" if ratio is None else f"{ratio:.3f}",
                f.target_text(),
                row.verdict(),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:4], widths[1:4], strict=True)
        ]
        cells += [line[4].ljust(widths[4]), line[5]]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


NOISY_OTHER_CORES = 0.25


def render_context(plan: Plan, sessions: list[dict[str, Any]]) -> str:
    """Who used the cores during each measured window (median over repetitions)."""
    windows: list[tuple[str, str, tuple[str, ...]]] = [
        (f"echo{n}", "memory", (f"echo{n}",)) for n in plan.echo_connections
    ]
    windows.append(("open", "memory", ("open",)))
    windows += [(f"burst {x}", x, ("broadcast", "burst")) for x in plan.layers]
    lines = [
        "cores used in each measured window (median of reps): the daphne process, the client",
        "process(es), and everything else on the machine (other people's work shows up there)",
    ]
    noisy = False
    for label, layer, path in windows:
        for variant in VARIANTS:
            found = []
            for session in sessions:
                node: Any = session if session["layer"] == layer else None
                for key in path:
                    node = node.get(key) if isinstance(node, dict) else None
                if session["variant"] == variant and isinstance(node, dict):
                    found.append(node)
            if not found:
                continue

            def med(name: str, found: list[dict[str, Any]] = found) -> float:
                return statistics.median(x.get(name) or 0.0 for x in found)

            noisy = noisy or max(x.get("other_cores", 0.0) for x in found) > NOISY_OTHER_CORES
            rss = (
                f"  server RSS {med('server_rss_mb'):.0f} MB" if "server_rss_mb" in found[0] else ""
            )
            lines.append(
                f"  {label:<13} {variant:<11} server {med('server_cores'):.2f}  clients "
                f"{med('client_cores'):.2f}  other {med('other_cores'):.2f}{rss}"
            )
    if noisy:
        lines.append(
            f"  note: something else used more than {NOISY_OTHER_CORES} cores in at least one"
            " window; those figures are noisier (see sessions[] in the JSON)."
        )
    return "\n".join(lines)
