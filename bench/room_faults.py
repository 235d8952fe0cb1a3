"""Faults under the venue rooms' screens: does every screen still get every order once, in order?

    .venv/bin/python bench/room_faults.py            # 600 screens over 6 venues, about 2 minutes
    .venv/bin/python bench/room_faults.py --clients 200 --only web1-sigterm,burst

Starts bench/deployment.py's topology (two web processes, a Celery worker and beat, a PostgreSQL
database of its own, a Redis of its own on a spare port, the local Slack server) and puts
`--clients` kitchen screens (the reference client, orders/room_client.py, in a process of their
own: bench/fault_screens.py) over `--venues` venues, each screen on either web process as a
balancer picks (at random, at every connect). Orders are placed at `--rate` a second through
`POST /api/v1/orders`, alternating between the web processes, the whole time. Then, one after
the other, each followed by a bounded wait until every screen is live again:

- web1-sigterm: web-1 stopped (SIGTERM: 1012 to its screens) and started again;
- web2-sigkill: web-2 SIGKILLed (its screens' sockets simply die), started again after 1 s;
- redis-down: the Redis stopped for `--hold` seconds (it comes back empty: nothing on disk);
- redis-hung: the Redis SIGSTOPped for `--hold` seconds, then SIGCONT (5 s: no longer than
  CHANNEL_LAYER_LOST_SECONDS, so the screens stay open and wait);
- redis-hung-long: the same for `--long-hold` seconds (9 s: the layer watch closes every
  screen with 1011 and the processes' leaves of their rooms time out);
- burst: every screen of one venue loses its connection at once and comes straight back.

After each, the rooms' groups in Redis are read: each venue's group must hold exactly one
member per live web process with screens in that venue, and none of a process that stopped
gracefully (one SIGKILLed stays until the group expiry, a day: reported, not a failure).
At the end each screen's events are checked against the database: every event of its venue
from when it joined, exactly once and in order; a `resync` is reported with its reason. Per
fault it prints the screens cut, the time until all were live again, the deliveries late (more
than 2 s after the event was recorded; "while open": to a screen that was connected and live
all along, which should never happen), lost, doubled and resynced.

Its own database (inkwave_room_faults, dropped before and after) and its own Redis: the shared
ones are never stopped. Loopback only, bounded (a timeout on every wait).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import database_url, drop_database, spare_port  # noqa: E402
from bench.deployment import Topology  # noqa: E402
from bench.deployment import parse_args as deployment_args  # noqa: E402
from bench.fault_run.observer import wait_listening  # noqa: E402
from bench.fault_run.rooms import (  # noqa: E402
    Groups,
    Window,
    check_membership,
    judge_screens,
    row,
)
from bench.fault_run.verdict import table  # noqa: E402
from bench.fault_run.workload import Orders  # noqa: E402
from bench.rooms.clients import ClientProcess  # noqa: E402
from notifications.local_slack import SlackServer  # noqa: E402

DATABASE = "inkwave_room_faults"
FAULTS = ["web1-sigterm", "web2-sigkill", "redis-down", "redis-hung", "redis-hung-long", "burst"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=600, help="kitchen screens")
    parser.add_argument("--venues", type=int, default=6)
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds Redis is down / hung")
    parser.add_argument(
        "--long-hold", type=float, default=9.0, help="seconds of redis-hung-long (past the watch)"
    )
    parser.add_argument("--recovery-limit", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds between faults")
    parser.add_argument("--only", default="", help="comma-separated faults to run, in order")
    parser.add_argument("--dir", type=Path, default=None, help="logs (default: temp, removed)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/room_faults.json")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 2000 or not 1 <= args.venues <= 50 or not 0 < args.rate <= 20:
        parser.error("--clients 1-2000, --venues 1-50, --rate up to 20")
    args.faults = args.only.split(",") if args.only else FAULTS
    if set(args.faults) - set(FAULTS):
        parser.error(f"faults are {', '.join(FAULTS)}")
    return args


class Run:
    """The deployment, its screens and orders, and what the bench saw of them."""

    def __init__(self, args: argparse.Namespace, topology: Topology, state: dict[str, Any]):
        self.args = args
        self.topology = topology
        self.ports: list[int] = state["ports"]
        self.venues = state["venues"][: args.venues]
        self.probes = state["venues"][args.venues :]
        self.groups = Groups(state["redis_url"], state["prefix"])
        self.live: dict[int, str] = {}  # port -> the client prefix of its process now
        self.stopped: set[str] = set()
        self.killed: set[str] = set()
        self.expected_down: set[str] = set()
        self.exits: list[tuple[float, str, int]] = []
        self.halt = threading.Event()
        self.supervisor = threading.Thread(target=self._supervise, daemon=True)

    def learn(self, index: int) -> None:
        """Which client prefix web-(index+1) has, and that a lone screen's leave empties a group."""
        probe = self.probes[index]
        prefix, emptied = self.groups.learn(self.ports[index], probe["venue"], probe["token"])
        self.live[self.ports[index]] = prefix
        shown = "not within 5 s" if emptied is None else f"{emptied * 1000:.0f} ms"
        print(f"  web-{index + 1} is {prefix[:8]}; its probe's group emptied in {shown}")

    def _supervise(self) -> None:
        """Restarts what dies on its own, as compose's restart policy would, and notes it."""
        while not self.halt.is_set():
            for name, process in list(self.topology.processes.items()):
                code = process.poll()
                if code is not None and name not in self.expected_down:
                    self.exits.append((time.time(), name, code))
                    print(f"  ! {name} exited on its own (code {code}); restarting", flush=True)
                    self.halt.wait(2)
                    self.topology.start_process(name)
            self.halt.wait(0.5)

    def restart_web(self, index: int, kill: bool) -> str:
        name = f"web-{index + 1}"
        port = self.ports[index]
        self.expected_down.add(name)
        began = time.time()
        process = self.topology.processes[name]
        if kill:
            self.topology.kill(name)
            self.killed.add(self.live.pop(port))
            time.sleep(1)
        else:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            self.stopped.add(self.live.pop(port))
        stopped = time.time() - began
        self.topology.start_process(name)
        wait_listening([port], 60)
        self.expected_down.discard(name)
        return f"stopped in {stopped:.1f} s, listening again {time.time() - began:.1f} s after"

    def inject(self, fault: str, screens: ClientProcess) -> str:
        redis = self.topology.redis
        assert redis is not None
        if fault == "web1-sigterm":
            return self.restart_web(0, kill=False)
        if fault == "web2-sigkill":
            return self.restart_web(1, kill=True)
        if fault == "burst":
            screens.send(f"burst {self.venues[0]['venue']}")
            cut = screens.expect("burst", time.monotonic() + 30)
            return f"{cut['cut']} screens of venue {self.venues[0]['venue']} cut at once"
        hold = self.args.long_hold if fault == "redis-hung-long" else self.args.hold
        if fault == "redis-down":
            redis.stop()
            time.sleep(hold)
            redis.start()
        else:
            redis.pause()
            time.sleep(hold)
            redis.resume()
        return f"held {hold:.0f} s"

    def status(self, screens: ClientProcess) -> list[list[Any]]:
        screens.send("status")
        return list(screens.expect("status", time.monotonic() + 30)["clients"])

    def wait_all_live(self, screens: ClientProcess, since: float) -> float | None:
        """Seconds from `since` until every screen is live (checked twice, 1 s apart)."""
        deadline = time.time() + self.args.recovery_limit
        first_seen: float | None = None
        while time.time() < deadline:
            if all(live and port is not None for live, _, port in self.status(screens)):
                if first_seen is not None:
                    return first_seen - since
                first_seen = time.time()
            else:
                first_seen = None
            time.sleep(0.5 if first_seen is None else 1.0)
        return None

    def membership(self, screens: ClientProcess) -> str:
        for index, port in enumerate(self.ports):
            if port not in self.live:
                self.learn(index)
        status = self.status(screens)
        where = [(v["venue"], s[2]) for v, s in zip(self.assignment(), status, strict=True)]
        venue_ids = [v["venue"] for v in self.venues]
        found = check_membership(
            self.groups, venue_ids, where, self.live, self.stopped, self.killed
        )
        for name, items in vars(found).items():
            if items:
                print(f"  groups: {name}: {'; '.join(items[:6])}")
        return found.summary()

    def assignment(self) -> list[dict[str, Any]]:
        return [self.venues[i % len(self.venues)] for i in range(self.args.clients)]


def recorded_events(venues: list[int]) -> tuple[dict[tuple[int, int], float], dict[int, int]]:
    """Every room event's time of record, and each venue's last number, from PostgreSQL."""
    import psycopg

    with psycopg.connect(database_url(DATABASE), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT venue_id, seq, created_at FROM orders_orderevent "
            "WHERE seq IS NOT NULL AND venue_id = ANY(%s)",
            (venues,),
        ).fetchall()
        last = conn.execute(
            "SELECT id, room_seq FROM orders_venue WHERE id = ANY(%s)", (venues,)
        ).fetchall()
    return {(v, s): at.timestamp() for v, s, at in rows}, {int(k): int(v) for k, v in last}


def token_and_id(venue: dict[str, Any]) -> tuple[str, int]:
    return venue["token"], venue["venue"]


def deployment_argv(work: Path, ports: list[int], venues: int) -> list[str]:
    return [
        *("--dir", str(work), "--database", DATABASE, "--ports", ",".join(map(str, ports))),
        *("--venues", str(venues), "--own-redis", "--drop-database"),
        *("--set", "LOG_LEVEL=warning"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = (args.dir or Path(tempfile.mkdtemp(prefix="inkwave-room-faults-"))).resolve()
    ports = [spare_port(), spare_port()]
    drop_database(DATABASE)
    began = time.time()
    with SlackServer() as slack:
        topology = Topology(deployment_args(deployment_argv(work, ports, args.venues + 2)))
        orders: Orders | None = None
        screens: ClientProcess | None = None
        run: Run | None = None
        try:
            state = topology.start(slack)
            wait_listening(ports, 120)
            print(f"topology up in {work} (web :{ports[0]} :{ports[1]})", flush=True)
            run = Run(args, topology, state)
            run.supervisor.start()
            run.learn(0)
            run.learn(1)
            assignment = run.assignment()
            spec = {
                "screens": [
                    [
                        [f"ws://127.0.0.1:{p}/ws/venues/{v['venue']}/" for p in ports],
                        *token_and_id(v),
                    ]
                    for v in assignment
                ],
                "heartbeat_seconds": 15,
            }
            log = (work / "screens.log").open("ab")
            screens = ClientProcess(spec, log, module="bench.fault_screens")
            ready = screens.expect("ready", time.monotonic() + 240)
            print(f"{args.clients} screens live in {ready['at'] - began:.0f} s", flush=True)
            orders = Orders(ports, run.venues, args.rate)
            orders.start()
            time.sleep(args.settle)
            windows = faults(run, screens)
            orders.finish()
            time.sleep(3)  # the last orders' broadcasts
            end = time.time()
            windows[-1].end = end
            screens.send("stop")
            result = screens.expect("result", time.monotonic() + 120)
            events, last = recorded_events([v["venue"] for v in run.venues])
            report(args, run, windows, ready, result, events, last, orders, began)
        finally:
            if orders is not None:
                orders.stop.set()
            if screens is not None:
                screens.finish()
            if run is not None:
                run.halt.set()
                run.groups.close()
            topology.close()
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def faults(run: Run, screens: ClientProcess) -> list[Window]:
    windows: list[Window] = []
    for fault in run.args.faults:
        window = Window(fault, time.time())
        if windows:
            windows[-1].end = window.start
        windows.append(window)
        print(f"- {fault}: ", end="", flush=True)
        window.note = run.inject(fault, screens)
        window.restored = time.time()
        print(window.note, flush=True)
        seen = run.wait_all_live(screens, window.start)
        shown = "—" if seen is None else f"{seen:.1f} s"
        print(f"  every screen seen live {shown} after the fault began", flush=True)
        time.sleep(run.args.settle)
        window.membership = run.membership(screens)
        print(f"  groups: {window.membership}", flush=True)
    return windows


def report(
    args: argparse.Namespace,
    run: Run,
    windows: list[Window],
    ready: dict[str, Any],
    result: dict[str, Any],
    events: dict[tuple[int, int], float],
    last: dict[int, int],
    orders: Orders,
    began: float,
) -> None:
    clients = result["clients"]
    tallies, before, problems = judge_screens(clients, ready["seqs"], events, last, windows)
    for window, tally in zip(windows, tallies, strict=True):
        # From the screens' own records: the status polls can miss a cut that is quickly over.
        window.recovered_s = max(tally.back, default=None)
    warmup = Window("(before)", 0.0)
    rows = [row(warmup, before)] + [row(w, t) for w, t in zip(windows, tallies, strict=True)]
    print()
    print(table(rows))
    print()
    results = orders.snapshot()
    answered = sum(r.status == 201 for r in results)
    print(
        f"whole run ({time.time() - began:.0f} s): {len(results)} orders sent, {answered} got "
        f"201; {len(events)} room events recorded; {sum(t.deliveries for t in tallies)} "
        f"deliveries checked after the first fault ({before.deliveries} before)"
    )
    resyncs = [(c["venue"], r) for c in clients for r in c["resyncs"]]
    print(f"resyncs: {len(resyncs)}" + "".join(f"\n  venue {v}: {r}" for v, r in resyncs[:10]))
    for window, tally in zip(windows, tallies, strict=True):
        closes = ", ".join(f"{code} x{n}" for code, n in tally.closes.most_common())
        print(f"{window.name}: {window.note}; closes seen by screens: {closes or 'none'}")
    if run.exits:
        print("processes that exited on their own:", [(n, c) for _, n, c in run.exits])
    if problems:
        print(f"SCREENS WITH EVENTS LOST, DOUBLED OR OUT OF ORDER: {len(problems)}")
        print("\n".join(f"  {p}" for p in problems[:20]))
    else:
        print("every screen had every event of its venue exactly once, in order")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rows": rows, "problems": problems}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
