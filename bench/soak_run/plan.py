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
    # Words of the operations messages that are about it (besides the expected rules' names).
    mentions: tuple[str, ...] = ()
    # An expected incident already firing when it begins (a death within "Process died"'s
    # window) counts: the rule's one incident covers every death in its window.
    joins: bool = False


# Before the first fault: the screens' first connections are a connection spike, true and
# expected (a deployment that starts has every screen connect).
START = {"Connection spike": "every screen connected at the start"}
# After the orders stop, the soak stops its screens: every one leaves at once.
END = {"Disconnection spike": "every screen stopped at the end of the run"}


# Closing every room connection at once (Redis gone, a process killed) is a disconnection
# spike, and each reconnect a connection spike: true, and caused by the fault.
_SOCKETS = {
    "Disconnection spike": "every screen of the fault's process(es) was cut at once",
    "Connection spike": "every cut screen came back at once",
}


def plan(profile: str) -> list[Fault]:
    """The faults of a profile: "full" (the issue's durations), "short", or "ci" (the test
    suite's: each fault just long enough to be seen)."""
    holds = {
        "full": {"redis": 30.0, "pg": 15.0, "web": 5.0, "worker": 5.0},
        "short": {"redis": 10.0, "pg": 6.0, "web": 3.0, "worker": 3.0},
        "ci": {"redis": 5.0, "pg": 4.0, "web": 2.0, "worker": 2.0},
    }[profile]
    # Slack must fail 30 s or more to be an outage (the rule's line; "ci" sets it to 10 s).
    slack = {"full": (60.0, 60.0, 300.0), "short": (15.0, 15.0, 40.0), "ci": (3.0, 3.0, 12.0)}[
        profile
    ]
    faults = [
        Fault("abuse", 0.0, allow={
            "Refused connections and bad frames": "the attack is bad frames and refusals",
        } | ({
            "Elevated error rate": "the attack fills both cores and an order's broadcast may "
            "time out (broadcast_failed, a service error: the screens have it from the record); "
            "with this profile's 60 screens, one is over 1% of the window's operations",
        } if profile == "ci" else {})),
        Fault("redis-down", holds["redis"], expect=("Redis unreachable",), down="redis",
              allow=_SOCKETS | {
                  "High error rate": "each screen's reconnect is refused with 1011 until Redis "
                  "answers: a service error",
                  "Elevated error rate": "the same, at the lower line",
              }),
        Fault("postgres-restart", holds["pg"], expect=("Database connection lost",),
              down="database"),
        Fault("web-killed", holds["web"], expect=("Process died",), allow=_SOCKETS),
        Fault("worker-killed", holds["worker"], expect=("Process died",), joins=True),
        Fault("slack", sum(slack), expect=("Slack delivery failing",), phases=slack,
              mentions=("Delivery to",), allow={
            "Notifications waiting": "orders' messages wait longer than 5 minutes while Slack "
            "is down for 5",
        }),
    ]  # fmt: skip
    if profile == "ci":
        # Its faults are seconds apart: the message the killed worker left in flight holds its
        # channel for the lease (30 s), in which Slack's failure would go unseen. Last, then.
        faults.append(faults.pop(4))
    return faults
