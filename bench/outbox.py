"""Inkwave Ops Slack outbox benchmark: enqueue rate, delivery throughput, order-to-Slack latency.

    .venv/bin/python bench/outbox.py            # full run (about 1.5 minutes)
    .venv/bin/python bench/outbox.py --quick    # smoke run (about 45 seconds)

Everything runs on this machine against 127.0.0.1: PostgreSQL (database inkwave_bench_outbox,
recreated on every run), Redis, a local Slack Web API server (notifications/local_slack.py, in
this process), real Celery workers and a real daphne server started here on ports 9200-9299. Every
process started here is stopped when the run ends, fails or is interrupted. Prints a table and
writes bench/results/outbox.json. See bench/OUTBOX.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from notifications.local_slack import TOKEN, Post, SlackServer  # noqa: E402

HOST = "127.0.0.1"
PORTS = range(9200, 9300)
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python")
DB_NAME = "inkwave_bench_outbox"
DATABASE_URL = f"postgres://postgres@{HOST}:5432/{DB_NAME}"
POSTGRES_ADMIN = f"postgresql://postgres@{HOST}:5432/postgres"
REDIS_URL = f"redis://{HOST}:6379/0"
# Celery's queue ("celery") lives in a Redis database of its own, chosen free at start-up:
# other checkouts on this machine leave notifications.drain tasks for *their* databases in
# db 0's queue, and a worker of ours must neither run those nor lose ours to theirs.
BROKER_DBS = range(15, 0, -1)
BROKER_OWNER_KEY = "inkwave-bench-outbox:owner"
OPERATIONS_CHANNEL = "C0BENCHOPS"
ORDERS_CHANNEL = "C0BENCHORDERS"
DESTINATIONS = (("operations", OPERATIONS_CHANNEL), ("orders", ORDERS_CHANNEL))
RESULTS = ROOT / "bench" / "results" / "outbox.json"
# Variables that must come from the benchmark, never from the caller's shell.
CLEARED_PREFIXES = (
    "DATABASE_",
    "REDIS_",
    "CELERY_",
    "CHANNEL_LAYER_",
    "SLACK_",
    "NOTIFICATION_",
    "ORDER_",
    "SENTRY_",
    "DEBUG",
    "LOG_",
    "DJANGO_SETTINGS_MODULE",
    "INKWAVE_VAR_DIR",
)
BENCH_TEXT = re.compile(r"^bench-outbox (\w+) #(\d+)$")
ORDER_TEXT = re.compile(r"^🛒 New Order #(\d+)\n")


# --- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    quick: bool
    notifications: int  # figures 1 and 2: notifications enqueued, then delivered
    delivery_timeout: float  # figure 2: give up waiting for the Slack server after this long
    order_rate: float  # figure 3, limiter off: orders per second
    order_seconds: float
    limited_rate: float  # figure 3, default limiter (1 message/s per channel)
    limited_seconds: float
    match_timeout: float  # after the last POST, wait this long for the last Slack message
    quiet_wait: float  # before each measured phase, wait up to this long for an idle machine
    concurrency: int = 2

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        return cls(
            quick=quick,
            notifications=args.notifications or (300 if quick else 2000),
            delivery_timeout=45.0 if quick else 150.0,
            order_rate=5.0,
            order_seconds=args.order_seconds or (6.0 if quick else 20.0),
            limited_rate=0.8,
            limited_seconds=6.25 if quick else 15.0,
            match_timeout=10.0 if quick else 20.0,
            quiet_wait=args.quiet_wait if args.quiet_wait is not None else (3.0 if quick else 10.0),
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the Slack outbox with real services (see bench/OUTBOX.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument(
        "--notifications", type=int, help="notifications to enqueue and deliver (2000; quick 300)"
    )
    parser.add_argument(
        "--order-seconds", type=float, help="length of the 5 orders/s run (20 s; quick 6 s)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each measured phase, wait up to this long for an idle machine (10 s; quick 3)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for every process, e.g. --set DATABASE_CONN_MAX_AGE=60 (repeatable)",
    )
    args = parser.parse_args(argv)
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--set wants NAME=VALUE, not {item!r}")
    if args.notifications is not None and not 10 <= args.notifications <= 10_000:
        parser.error("--notifications must be between 10 and 10000")
    if args.quiet_wait is not None and not 0 <= args.quiet_wait <= 120:
        parser.error("--quiet-wait must be between 0 and 120 seconds")
    if args.order_seconds is not None and not 1 <= args.order_seconds <= 60:
        parser.error("--order-seconds must be between 1 and 60")
    return args


# --- small helpers ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    for port in PORTS:
        if port not in taken and port_is_free(port):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} on {HOST}")


def start_slack_server(taken: set[int]) -> SlackServer:
    for port in PORTS:
        if port in taken:
            continue
        try:
            server = SlackServer(port)
        except OSError:
            continue
        taken.add(port)
        return server
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} for the Slack server")


# --- child processes ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.Error:
            return []

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Children:
    """Every process the benchmark starts, so that all of them are stopped whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, popen, log_path, log)
        self.items.append(child)
        return child

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        child = self.start(name, argv, env)
        try:
            code = child.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(child)
            raise RuntimeError(f"{name} took longer than {timeout:.0f} s") from None
        if code != 0:
            raise RuntimeError(f"{name} failed (exit {code}):\n{child.tail()}")
        self.stop(child)

    def stop(self, child: Child, timeout: float = 15.0) -> None:
        """SIGTERM to the main process, then SIGKILL whatever of its tree is left."""
        processes = child.tree()
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=timeout)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=5)
        child.log.close()
        if child in self.items:
            self.items.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.items)):
            with contextlib.suppress(Exception):
                self.stop(child)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# --- services: PostgreSQL, Redis ----------------------------------------------------------


def recreate_database() -> str:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def claim_broker_db(tag: str) -> int:
    """A Redis database nobody uses, marked as ours ("tag:pid") for the run.

    One left behind by a benchmark that was killed (its pid is gone) is emptied and reused.
    """
    import redis

    clients = {
        db: redis.Redis.from_url(f"redis://{HOST}:6379/{db}", socket_timeout=5) for db in BROKER_DBS
    }
    for db, client in clients.items():
        owner = client.get(BROKER_OWNER_KEY)
        if owner is not None:
            old_tag, _, pid = _text(owner).partition(":")
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                release_redis(db, old_tag, None)
    for db, client in clients.items():
        if client.dbsize() == 0 and client.set(BROKER_OWNER_KEY, f"{tag}:{os.getpid()}", nx=True):
            return db
    raise RuntimeError("no empty Redis database (1-15) for the Celery broker")


def release_redis(broker_db: int | None, tag: str, prefix: str | None) -> None:
    import redis

    if prefix:
        with contextlib.suppress(redis.RedisError):
            layer = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
            keys = list(layer.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                layer.delete(*keys)
    if broker_db is None:
        return
    with contextlib.suppress(redis.RedisError):
        broker = redis.Redis.from_url(f"redis://{HOST}:6379/{broker_db}", socket_timeout=5)
        owner = broker.get(BROKER_OWNER_KEY)
        if owner is not None and _text(owner).partition(":")[0] == tag:
            # The database was empty when we took it: everything in it is Celery's and ours.
            for pattern in ("celery*", "_kombu.*", "unacked*", BROKER_OWNER_KEY):
                keys = list(broker.scan_iter(match=pattern, count=1000))
                if keys:
                    broker.delete(*keys)


def broker_backlog(broker_db: int) -> tuple[int, int]:
    """(tasks waiting in the queue, tasks taken but not yet acknowledged)."""
    import redis

    client = redis.Redis.from_url(f"redis://{HOST}:6379/{broker_db}", socket_timeout=5)
    return int(client.llen("celery")), int(client.hlen("unacked"))


def redis_version() -> str:
    import redis

    info = redis.Redis.from_url(REDIS_URL, socket_timeout=5).info("server")
    return str(info.get("redis_version", "?"))


# --- CPU accounting -----------------------------------------------------------------------


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


class CpuMeter:
    """Cores used during a phase by each of our processes and by the rest of the machine."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups
        self.started = 0.0
        self.before: dict[str, float] = {}
        self.machine_before = 0.0

    def _read(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, processes in self.groups.items():
            total = 0.0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            totals[name] = total
        return totals

    def __enter__(self) -> CpuMeter:
        self.started = time.monotonic()
        self.before = self._read()
        self.machine_before = machine_busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.started
        after = self._read()
        self.cores = {
            name: (after[name] - self.before[name]) / max(self.wall, 1e-9) for name in after
        }
        machine = (machine_busy_seconds() - self.machine_before) / max(self.wall, 1e-9)
        self.cores["rest of machine"] = max(0.0, machine - sum(self.cores.values()))
        self.cores["machine total"] = machine

    def summary(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall, 2)} | {k: round(v, 2) for k, v in self.cores.items()}


def wait_for_quiet(limit: float) -> float:
    """Up to `limit` seconds for the machine to be idle; returns the busy cores last seen."""
    deadline = time.monotonic() + limit
    while True:
        before, started = machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        busy = (machine_busy_seconds() - before) / (time.monotonic() - started)
        if busy < 0.3 or time.monotonic() >= deadline:
            return busy


# --- the environment of every process -----------------------------------------------------


def make_env(*, var_dir: Path, slack: SlackServer, broker_db: int, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        INKWAVE_VAR_DIR=str(var_dir),
        LOG_LEVEL="warning",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        CHANNEL_LAYER_PREFIX=prefix,
        CELERY_BROKER_URL=f"redis://{HOST}:6379/{broker_db}",
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_API_URL=slack.api_url,
        SLACK_OPERATIONS_CHANNEL_ID=OPERATIONS_CHANNEL,
        SLACK_ORDERS_CHANNEL_ID=ORDERS_CHANNEL,
        SLACK_MIN_INTERVAL_SECONDS="0",
        # Figure 3 follows every order of one venue at 5 a second into Slack: past the
        # default rate they would be counted into a summary (bench/flood.py measures that).
        ORDER_NOTIFY_LIMIT="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        # This checkout's code in every child, whichever checkout the venv's editable install
        # (or a copied venv's `celery` script) points at: celery puts no directory on the path.
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- the system under test ----------------------------------------------------------------


@dataclass
class System:
    children: Children
    env: dict[str, str]
    slack: SlackServer
    broker_db: int
    taken_ports: set[int]
    tag: str
    worker: Child | None = None
    daphne: Child | None = None
    daphne_port: int = 0
    warmups: int = 0

    def start_worker(self, min_interval: float, concurrency: int) -> Child:
        env = self.env | {"SLACK_MIN_INTERVAL_SECONDS": f"{min_interval:g}"}
        argv = [
            str(BIN / "celery"),
            "-A",
            "inkwave",
            "worker",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "-n",
            f"bench-outbox-{self.tag}@%h",
        ]
        self.worker = self.children.start("celery-worker", argv, env)
        self.warm_up(timeout=60.0)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.children.stop(self.worker)
            self.worker = None

    def warm_up(self, timeout: float) -> None:
        """One message to each destination, delivered: the worker is up and has run the path."""
        from django.db import transaction

        from notifications.service import send_message

        self.warmups += 1
        texts = {f"bench-outbox warmup{self.warmups}x{name} #0" for name, _ in DESTINATIONS}
        start = self.slack.count()
        for name, _ in DESTINATIONS:
            with transaction.atomic():
                send_message(name, f"bench-outbox warmup{self.warmups}x{name} #0")

        def arrived() -> bool:
            if self.worker is not None and not self.worker.alive():
                raise RuntimeError(f"the Celery worker exited:\n{self.worker.tail()}")
            got = {str(p.body.get("text", "")) for p in self.slack.posts_from(start)}
            return texts <= got

        if not wait_until(arrived, timeout, 0.05):
            tail = self.worker.tail() if self.worker else ""
            raise RuntimeError(f"the warm-up messages never reached Slack:\n{tail}")

    def start_daphne(self) -> Child:
        self.daphne_port = free_port(self.taken_ports)
        # daphne's command line with the project's fixed shutdown (inkwave/serve.py), as
        # scripts/run starts it; the same server as `.venv/bin/daphne`.
        argv = [
            PYTHON,
            "-m",
            "inkwave.serve",
            "-b",
            HOST,
            "-p",
            str(self.daphne_port),
            "inkwave.asgi:application",
        ]
        self.daphne = self.children.start("daphne", argv, self.env)

        def live() -> bool:
            if self.daphne is not None and not self.daphne.alive():
                raise RuntimeError(f"daphne exited:\n{self.daphne.tail()}")
            try:
                conn = http.client.HTTPConnection(HOST, self.daphne_port, timeout=2)
                conn.request("GET", "/health/live")
                ok = conn.getresponse().status == 200
                conn.close()
                return ok
            except OSError:
                return False

        if not wait_until(live, 30.0, 0.1):
            raise RuntimeError(f"daphne did not answer /health/live:\n{self.daphne.tail()}")
        return self.daphne

    def consume(self, on: bool) -> None:
        """Resume or stop the worker's consumption of the task queue (Celery remote control)."""
        from inkwave import celery_app

        control = celery_app.control
        command = control.add_consumer if on else control.cancel_consumer
        # limit=1: return on the (only) worker's answer instead of waiting out the timeout.
        replies = command("celery", reply=True, timeout=5.0, limit=1)
        if len(replies) != 1:
            raise RuntimeError(f"{command.__name__}: expected one worker to answer, got {replies}")

    def idle(self, timeout: float = 60.0) -> bool:
        """No open notification rows and no Celery task left in the broker."""
        from notifications.models import OPEN_STATUSES, Notification

        def done() -> bool:
            if Notification.objects.filter(status__in=OPEN_STATUSES).exists():
                return False
            return broker_backlog(self.broker_db) == (0, 0)

        return wait_until(done, timeout, 0.1)


# --- figures 1 and 2: enqueue rate, delivery throughput -----------------------------------


@dataclass
class DeliveryResult:
    n: int
    enqueue_seconds: float
    enqueue_rate: float
    enqueue_call_p50: float | None
    enqueue_call_p99: float | None
    tasks_queued: int
    delivered_before_start: int
    received: int
    delivery_seconds: float
    delivery_rate: float
    duplicates: int
    missing: int
    out_of_order: int
    wrong_channel: int
    statuses: dict[str, int]
    attempts: int
    slack_http_p50: float | None
    slack_http_p99: float | None
    tasks_cleared_seconds: float | None
    tasks_left_at_done: int  # drain tasks still queued or running when the last message arrived
    noop_task_rate: float | None  # how fast the worker then consumed them (nothing was due)
    db_transactions_per_message: float | None
    cpu_enqueue: dict[str, Any] = field(default_factory=dict)
    cpu_delivery: dict[str, Any] = field(default_factory=dict)
    busy_before: float = 0.0

    def failures(self) -> list[str]:
        lines = []
        if self.missing:
            lines.append(f"delivery: {self.missing} of {self.n} notifications never reached Slack")
        if self.duplicates:
            lines.append(f"delivery: {self.duplicates} notifications reached Slack more than once")
        if self.out_of_order:
            lines.append(f"delivery: {self.out_of_order} messages arrived out of creation order")
        if self.wrong_channel:
            lines.append(f"delivery: {self.wrong_channel} messages arrived in the wrong channel")
        if self.statuses.get("sent", 0) != self.n:
            lines.append(f"delivery: row statuses are {self.statuses}, not all 'sent'")
        if self.attempts != self.n:
            lines.append(f"delivery: {self.attempts} delivery attempts for {self.n} notifications")
        return lines


def db_transactions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            [DB_NAME],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def run_enqueue_and_delivery(system: System, plan: Plan) -> DeliveryResult:
    from django.db import transaction
    from django.db.models import Count

    from notifications.models import DeliveryAttempt, Notification
    from notifications.service import send_message

    assert system.worker is not None
    worker = system.worker
    busy_before = wait_for_quiet(plan.quiet_wait)
    run = secrets.token_hex(3)
    n = plan.notifications
    slack_start = system.slack.count()

    # Figure 1. The worker stops taking tasks (Celery's cancel_consumer) so that the enqueue
    # loop has the machine to itself and the work piles up: N rows committed, N drain tasks
    # waiting in the broker.
    system.consume(False)
    ids: list[int] = []
    calls: list[float] = []
    groups = {"bench process": [psutil.Process()]}
    with CpuMeter(groups) as cpu_enqueue:
        started = time.perf_counter()
        for i in range(n):
            name = DESTINATIONS[i % 2][0]
            call = time.perf_counter()
            with transaction.atomic():
                rows = send_message(name, f"bench-outbox {run} #{i}")
            calls.append(time.perf_counter() - call)
            ids.append(rows[0].pk)
        enqueue_seconds = time.perf_counter() - started
    tasks_queued, _ = broker_backlog(system.broker_db)
    delivered_before_start = sum(
        1
        for p in system.slack.posts_from(slack_start)
        if (m := BENCH_TEXT.match(str(p.body.get("text", "")))) and m.group(1) == run
    )

    # Figure 2. Everything is committed; the clock starts when the worker is told to take
    # tasks again (add_consumer), with the round trip of that command inside the time.
    time.sleep(1.5)  # let PostgreSQL's statistics catch up before the first reading
    transactions_before = db_transactions()
    groups = {
        "bench process": [psutil.Process()],
        "celery worker": worker.tree(),
    }
    received: dict[int, list[Post]] = defaultdict(list)
    seen = slack_start

    def collect() -> int:
        nonlocal seen
        new = system.slack.posts_from(seen)
        seen += len(new)
        for post in new:
            match = BENCH_TEXT.match(str(post.body.get("text", "")))
            if match and match.group(1) == run:
                received[int(match.group(2))].append(post)
        return len(received)

    with CpuMeter(groups) as cpu_delivery:
        t0 = time.time()
        system.consume(True)
        wait_until(lambda: collect() >= n, plan.delivery_timeout, 0.02)
        left_at_done = sum(broker_backlog(system.broker_db))
        done_at = time.time()
    collect()
    posts = [post for batch in received.values() for post in batch]
    last = max((post.at for post in posts), default=time.time())
    delivery_seconds = max(last - t0, 1e-9)

    # The drain tasks still queued are no-ops by now; how long until they are all consumed?
    cleared = wait_until(
        lambda: broker_backlog(system.broker_db) == (0, 0), plan.delivery_timeout, 0.05
    )
    cleared_at = time.time()
    tasks_cleared_seconds = (cleared_at - t0) if cleared else None
    noop_task_rate = (
        left_at_done / (cleared_at - done_at) if cleared and cleared_at > done_at + 0.1 else None
    )
    time.sleep(1.5)  # short-lived connections report their statistics when they close
    transactions = db_transactions() - transactions_before - 1

    # Exactly once, per destination in creation order, in the right channel.
    counts = Counter({i: len(batch) for i, batch in received.items()})
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    missing = n - len(counts)
    by_channel: dict[str, list[int]] = defaultdict(list)
    wrong_channel = 0
    for post in sorted(posts, key=lambda p: p.ts):  # ts counts up in arrival order
        match = BENCH_TEXT.match(str(post.body.get("text", "")))
        assert match is not None
        i = int(match.group(2))
        channel = str(post.body.get("channel", ""))
        if channel != DESTINATIONS[i % 2][1]:
            wrong_channel += 1
        by_channel[channel].append(i)
    out_of_order = 0
    for sequence in by_channel.values():
        highest = -1
        for i in sequence:
            if i < highest:
                out_of_order += 1
            highest = max(highest, i)

    def statuses() -> dict[str, int]:
        rows = Notification.objects.filter(pk__in=ids).values("status").annotate(c=Count("pk"))
        return {row["status"]: row["c"] for row in rows}

    wait_until(lambda: statuses().get("sent", 0) == n, 10.0, 0.2)
    final_statuses = statuses()
    durations = [
        d / 1000.0
        for d in DeliveryAttempt.objects.filter(notification_id__in=ids).values_list(
            "duration_ms", flat=True
        )
        if d is not None
    ]
    attempts = DeliveryAttempt.objects.filter(notification_id__in=ids).count()
    return DeliveryResult(
        n=n,
        enqueue_seconds=enqueue_seconds,
        enqueue_rate=n / enqueue_seconds,
        enqueue_call_p50=percentile(calls, 0.5),
        enqueue_call_p99=percentile(calls, 0.99),
        tasks_queued=tasks_queued,
        delivered_before_start=delivered_before_start,
        received=len(counts),
        delivery_seconds=delivery_seconds,
        delivery_rate=len(counts) / delivery_seconds,
        duplicates=duplicates,
        missing=missing,
        out_of_order=out_of_order,
        wrong_channel=wrong_channel,
        statuses=final_statuses,
        attempts=attempts,
        slack_http_p50=percentile(durations, 0.5),
        slack_http_p99=percentile(durations, 0.99),
        tasks_cleared_seconds=tasks_cleared_seconds,
        tasks_left_at_done=left_at_done,
        noop_task_rate=noop_task_rate,
        db_transactions_per_message=transactions / n if cleared else None,
        cpu_enqueue=cpu_enqueue.summary(),
        cpu_delivery=cpu_delivery.summary(),
        busy_before=round(busy_before, 2),
    )


# --- figure 3: order-to-Slack latency -----------------------------------------------------


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
    busy_before = wait_for_quiet(plan.quiet_wait)

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


# --- report -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


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


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.from_args(args)
    # Ctrl-C (even when started in the background, where SIGINT comes ignored), SIGTERM and a
    # hang-up all end the run through the `finally` below, which stops every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_exit)
    tag = secrets.token_hex(4)
    prefix = f"bench-outbox-{tag}"
    var_dir = Path(tempfile.mkdtemp(prefix="inkwave-bench-outbox-"))
    children = Children(var_dir)
    taken: set[int] = set()
    broker_db: int | None = None
    started = time.monotonic()
    info = machine_info()
    print(
        f"Inkwave Ops Slack outbox benchmark ({'quick' if plan.quick else 'full'} run); "
        f"logs in {var_dir}",
        flush=True,
    )
    try:
        pg_version = recreate_database()
        info |= {"postgresql": pg_version, "redis": redis_version()}
        broker_db = claim_broker_db(tag)
        slack = start_slack_server(taken)
        with slack:
            env = make_env(var_dir=var_dir, slack=slack, broker_db=broker_db, prefix=prefix)
            env |= dict(item.split("=", 1) for item in args.set)
            print(f"- migrating {DB_NAME} ...", flush=True)
            children.run("migrate", [PYTHON, "manage.py", "migrate", "--noinput"], env, timeout=180)
            os.environ.update(env)
            import django

            django.setup()
            from django.conf import settings

            from inkwave import celery_app
            from notifications.models import Destination

            assert celery_app.conf.broker_url == env["CELERY_BROKER_URL"]
            assert slack.api_url == settings.SLACK_API_URL
            channels = dict(Destination.objects.values_list("name", "slack_channel_id"))
            for name, channel in DESTINATIONS:
                if channels.get(name) != channel:
                    raise RuntimeError(f"destination {name} has channel {channels.get(name)!r}")

            system = System(children, env, slack, broker_db, taken, tag)
            print("- starting a Celery worker (limiter off) ...", flush=True)
            system.start_worker(0.0, plan.concurrency)
            print(f"- figures 1 and 2: {plan.notifications} notifications ...", flush=True)
            delivery = run_enqueue_and_delivery(system, plan)
            if not system.idle(60.0):
                print("  (the outbox or the broker was not idle after 60 s)", flush=True)
            print("- starting daphne ...", flush=True)
            system.start_daphne()
            print(
                f"- figure 3: {plan.order_rate:g} orders/s for {plan.order_seconds:g} s, "
                "limiter off ...",
                flush=True,
            )
            latencies = [
                run_orders(
                    system,
                    plan,
                    label="limiter off",
                    rate=plan.order_rate,
                    seconds=plan.order_seconds,
                    min_interval=0.0,
                )
            ]
            print("- restarting the worker with the default limiter (1 message/s) ...", flush=True)
            system.stop_worker()
            system.start_worker(1.0, plan.concurrency)
            print(
                f"- figure 3: {plan.limited_rate:g} orders/s for {plan.limited_seconds:g} s, "
                "limiter 1/s ...",
                flush=True,
            )
            latencies.append(
                run_orders(
                    system,
                    plan,
                    label="limiter 1 msg/s/channel",
                    rate=plan.limited_rate,
                    seconds=plan.limited_seconds,
                    min_interval=1.0,
                )
            )
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every process started here", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        release_redis(broker_db, tag, prefix)
        if args.keep:
            print(f"kept {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)

    total = time.monotonic() - started
    rows = figure_rows(plan, delivery, latencies)
    failures = delivery.failures() + [line for r in latencies for line in r.failures()]
    cpu = {
        "1 enqueue (worker paused)": delivery.cpu_enqueue,
        "2 delivery": delivery.cpu_delivery,
        **{f"3 orders, {r.label}": r.cpu for r in latencies},
    }
    print()
    print(
        f"machine: {info['logical_cores']} logical cores ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB, {info['os']}, Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, Redis {info['redis']}"
    )
    print(
        "         the client (this process), the local Slack server (threads of this process), "
        "daphne, the Celery worker, PostgreSQL and Redis all share it"
    )
    print()
    print_table(rows)
    print()
    print_cpu(cpu)
    busy = [delivery.busy_before, *(r.busy_before for r in latencies)]
    if max(busy) >= 0.3:
        print(
            f"  note: the machine was busy before some phases ({max(busy):.2f} cores in use by "
            "others), so those figures are noisy"
        )
    for line in failures:
        print(f"FAILURE: {line}")
    print(f"\ntotal {total:.0f} s; database {DB_NAME} kept for inspection")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "slack-outbox",
        "plan": asdict(plan),
        "machine": info,
        "command": " ".join([".venv/bin/python", "bench/outbox.py", *sys.argv[1:]]),
        "extra_settings": args.set,
        "figures": [dict(zip(("figure", "value", "detail"), row, strict=True)) for row in rows],
        "delivery": asdict(delivery),
        "latency": [asdict(r) for r in latencies],
        "failures": failures,
        "seconds": round(total, 1),
    }
    args.output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results: {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
