"""The soak's faults: what each breaks, for how long, and which incidents it must open.

A fault's `expect` are the rules whose incident it must open (and resolve once it is undone);
`allow` are the rules that may open as its honest consequence (each named in the report with
the reason it is allowed); any other incident opened in its window is a false alarm. `down` is
the dependency /health must call down (503) while the fault is held.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fault:
    name: str
    hold: float  # seconds it is held (slack: the three phases' sum)
    expect: tuple[str, ...] = ()
    allow: dict[str, str] = field(default_factory=dict)  # rule -> why it may open
    down: str | None = None  # what /health must call down while held
    phases: tuple[float, float, float] = (0.0, 0.0, 0.0)  # slack: 429, 500, down


# Closing every room connection at once (Redis gone, a process killed) is a disconnection
# spike, and each reconnect a connection spike: true, and caused by the fault.
_SOCKETS = {
    "Disconnection spike": "every screen of the fault's process(es) was cut at once",
    "Connection spike": "every cut screen came back at once",
}


def plan(short: bool) -> list[Fault]:
    if short:
        holds = {"redis": 10.0, "pg": 6.0, "web": 3.0, "worker": 3.0}
        slack = (15.0, 15.0, 40.0)
    else:
        holds = {"redis": 30.0, "pg": 15.0, "web": 5.0, "worker": 5.0}
        slack = (60.0, 60.0, 300.0)
    return [
        Fault("abuse", 0.0, allow={
            "Refused connections and bad frames": "the attack is bad frames and refusals",
        }),
        Fault("redis-down", holds["redis"], expect=("Redis unreachable",), down="redis",
              allow=_SOCKETS | {
                  "High error rate": "each screen's reconnect is refused with 1011 until Redis "
                  "answers: a service error",
                  "Elevated error rate": "the same, at the lower line",
              }),
        Fault("postgres-restart", holds["pg"], expect=("Database connection lost",),
              down="database"),
        Fault("web-killed", holds["web"], expect=("Process died",), allow=_SOCKETS),
        Fault("worker-killed", holds["worker"], expect=("Process died",)),
        Fault("slack", sum(slack), expect=("Slack delivery failing",), phases=slack, allow={
            "Notifications waiting": "orders' messages wait longer than 5 minutes while Slack "
            "is down for 5",
        }),
    ]  # fmt: skip
