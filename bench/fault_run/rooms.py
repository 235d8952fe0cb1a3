"""bench/room_faults.py's checks: the rooms' groups in Redis, and what each screen received.

Which web process a group member is: a channel of the Redis layer is named
`specific.<the process's client prefix>!<random>`, so each process is learnt once by a probe
(one screen alone in a venue of its own on that process: the group's one member is it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis
from websockets.asyncio.client import connect

from bench.common import percentile
from orders.groups import venue_group_name

# An event received later than this after it was recorded was late (a live one takes ms).
LATE_SECONDS = 2.0


def process_prefix(channel: str) -> str:
    """The client prefix of the process a layer channel belongs to."""
    return channel.split(".", 1)[1].split("!", 1)[0]


class Groups:
    """The venue rooms' groups of one deployment, read straight from its Redis."""

    def __init__(self, redis_url: str, layer_prefix: str) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5, decode_responses=True)
        self.layer_prefix = layer_prefix

    def members(self, venue: int) -> list[str]:
        key = f"{self.layer_prefix}:group:{venue_group_name(venue)}"
        return [str(m) for m in self.client.zrange(key, 0, -1)]

    def all_groups(self) -> dict[str, list[str]]:
        found = {}
        for key in self.client.scan_iter(match=f"{self.layer_prefix}:group:*", count=1000):
            found[str(key)] = [str(m) for m in self.client.zrange(key, 0, -1)]
        return found

    def close(self) -> None:
        self.client.close()

    def learn(self, port: int, venue: int, token: str) -> tuple[str, float | None]:
        """The client prefix of the web process on `port`, by a probe alone in `venue`; and how
        long its group took to be empty again once the probe left (None: not within 5 s)."""
        return asyncio.run(self._learn(port, venue, token))

    async def _learn(self, port: int, venue: int, token: str) -> tuple[str, float | None]:
        before = set(self.members(venue))
        url = f"ws://127.0.0.1:{port}/ws/venues/{venue}/?token={token}"
        async with connect(url, open_timeout=20) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"probe of :{port} was not welcomed: {welcome}")
            new = set(self.members(venue)) - before
        if len(new) != 1:
            raise RuntimeError(f"probe of :{port}: {len(new)} new members, not one")
        closed = time.monotonic()
        while time.monotonic() - closed < 5:
            if not self.members(venue):
                return process_prefix(new.pop()), time.monotonic() - closed
            await asyncio.sleep(0.05)
        return process_prefix(new.pop()), None


@dataclass
class Membership:
    """One look at every venue group against where the screens are."""

    missing: list[str] = field(default_factory=list)  # a live process with screens, no member
    doubled: list[str] = field(default_factory=list)  # a live process in a group twice or more
    stale_live: list[str] = field(default_factory=list)  # a live process with no screens there
    of_stopped: list[str] = field(default_factory=list)  # a process stopped gracefully
    of_killed: list[str] = field(default_factory=list)  # a process SIGKILLed (until the expiry)
    unknown: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (
            self.missing or self.doubled or self.stale_live or self.of_stopped or self.unknown
        )

    def summary(self) -> str:
        parts = [
            f"{name} {len(items)}"
            for name, items in (
                ("missing", self.missing),
                ("doubled", self.doubled),
                ("stale-of-live", self.stale_live),
                ("of-stopped", self.of_stopped),
                ("of-killed", self.of_killed),
                ("unknown", self.unknown),
            )
            if items
        ]
        return "ok" if not parts else ", ".join(parts)


def check_membership(
    groups: Groups,
    venues: list[int],
    screens: list[tuple[int, int | None]],  # (venue, port connected to, or None)
    live: dict[int, str],  # port -> client prefix of the process serving it now
    stopped: set[str],
    killed: set[str],
) -> Membership:
    found = Membership()
    ports_of: dict[int, set[int]] = defaultdict(set)
    for venue, port in screens:
        if port is not None:
            ports_of[venue].add(port)
    live_prefixes = {prefix: port for port, prefix in live.items()}
    for venue in venues:
        counts = Counter(process_prefix(m) for m in groups.members(venue))
        for port in ports_of[venue]:
            n = counts.get(live[port], 0)
            if n == 0:
                found.missing.append(f"venue {venue} on :{port}")
            elif n > 1:
                found.doubled.append(f"venue {venue} on :{port} x{n}")
        for prefix, n in counts.items():
            if prefix in live_prefixes:
                if live_prefixes[prefix] not in ports_of[venue]:
                    found.stale_live.append(f"venue {venue} :{live_prefixes[prefix]} x{n}")
            elif prefix in stopped:
                found.of_stopped.append(f"venue {venue} x{n}")
            elif prefix in killed:
                found.of_killed.append(f"venue {venue} x{n}")
            else:
                found.unknown.append(f"venue {venue} {prefix[:8]} x{n}")
    return found


# --- what the screens received ---------------------------------------------------------


@dataclass
class Window:
    name: str
    start: float
    end: float = 0.0  # the next fault's start, or the end of the run
    restored: float = 0.0  # when the fault was undone (a process listening again)
    recovered_s: float | None = None  # all screens live again, after the start
    membership: str = ""
    note: str = ""


@dataclass
class Tally:
    disrupted: int = 0
    back: list[float] = field(default_factory=list)  # seconds from the start to live again
    deliveries: int = 0
    late: int = 0
    late_connected: int = 0  # late to a screen that was live all along (an open, deaf one)
    max_late: float = 0.0
    lost: int = 0
    doubled: int = 0
    resynced_over: int = 0
    closes: Counter[str] = field(default_factory=Counter)


def window_of(windows: list[Window], at: float) -> int | None:
    for i, window in enumerate(windows):
        if window.start <= at < window.end:
            return i
    return None


def judge_screens(
    clients: list[dict[str, Any]],
    ready_seqs: list[int | None],
    recorded: dict[tuple[int, int], float],  # (venue, seq) -> when recorded (epoch)
    final: dict[int, int],  # venue -> its last seq
    windows: list[Window],
) -> tuple[list[Tally], Tally, list[str]]:
    """Per window (by when the event was recorded, or the outage began) and for the warm-up
    before the first fault; and the problems of each screen, worded."""
    tallies = [Tally() for _ in windows]
    before = Tally()

    def tally(at: float) -> Tally:
        index = window_of(windows, at)
        return before if index is None else tallies[index]

    problems = []
    for number, (client, first) in enumerate(zip(clients, ready_seqs, strict=True)):
        problems += judge_one(number, client, first, recorded, final, tally, windows)
    return tallies, before, problems


def judge_one(
    number: int,
    client: dict[str, Any],
    first: int | None,
    recorded: dict[tuple[int, int], float],
    final: dict[int, int],
    tally: Any,
    windows: list[Window],
) -> list[str]:
    venue = client["venue"]
    outages = [(down, up) for down, up in client["outages"]]
    if client["down_since"] is not None and client["down_since"] < windows[-1].end:
        outages.append((client["down_since"], float("inf")))  # never back (not its own stop)
    for down, up in outages:
        t = tally(down)
        t.disrupted += 1
        index = window_of(windows, down)
        if index is not None:
            t.back.append(up - windows[index].start)
    for at, code in client["closes"]:
        tally(at).closes[str(code)] += 1
    skipped: set[int] = set()
    for _, _, since, upto in client["resyncs"]:
        skipped.update(range((since or 0) + 1, upto + 1))
    wanted = [s for s in range((first or 0) + 1, final[venue] + 1)]
    seen: Counter[int] = Counter()
    order_ok = True
    last = first or 0
    for seq, got_at, _, _ in client["received"]:
        if seq is None:
            continue
        seen[seq] += 1
        order_ok &= seq > last
        last = max(last, seq)
        made = recorded.get((venue, seq))
        if made is None:
            continue
        t = tally(made)
        t.deliveries += 1
        lateness = got_at - made
        if lateness > LATE_SECONDS:
            t.late += 1
            if not any(down <= got_at and up >= made for down, up in outages):
                t.late_connected += 1
        t.max_late = max(t.max_late, lateness)
    lost = [s for s in wanted if seen[s] == 0 and s not in skipped]
    doubled = [s for s, n in seen.items() if n > 1]
    for seq in lost:
        tally(recorded.get((venue, seq), 0.0)).lost += 1
    for seq in doubled:
        tally(recorded.get((venue, seq), 0.0)).doubled += 1
    for seq in skipped & set(wanted):
        tally(recorded.get((venue, seq), 0.0)).resynced_over += 1
    if lost or doubled or not order_ok:
        shown = ", ".join(map(str, lost[:6])) + (", ..." if len(lost) > 6 else "")
        return [
            f"screen {number} (venue {venue}): {len(lost)} lost ({shown}), "
            f"{len(doubled)} doubled, {'in order' if order_ok else 'OUT OF ORDER'}"
        ]
    return []


def recovery(window: Window) -> str:
    """Seconds from the fault's start until every screen it cut was live again, and (in
    brackets) from when the fault was undone."""
    if window.recovered_s is None:
        return "—"
    if window.recovered_s == float("inf"):
        return "never"
    undone = window.start + window.recovered_s - window.restored
    return f"{window.recovered_s:.1f} ({undone:.1f})"


def row(window: Window, t: Tally) -> dict[str, str]:
    p50 = percentile(t.back, 0.5)
    return {
        "fault": window.name,
        "screens cut": str(t.disrupted),
        "all live again s": recovery(window),
        "p50 back s": "—" if p50 is None else f"{p50:.1f}",
        "deliveries": str(t.deliveries),
        f"late >{LATE_SECONDS:.0f}s": str(t.late),
        "late while open": str(t.late_connected),
        "max late s": f"{t.max_late:.1f}",
        "lost": str(t.lost),
        "doubled": str(t.doubled),
        "resynced": str(t.resynced_over),
        "groups after": window.membership,
    }
