"""The system under test and its services: a PostgreSQL database and a Redis broker database of
its own, the local Slack server in this process, a real Celery worker and daphne."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import (
    HOST,
    PYTHON,
    REDIS_URL,
    ROOT,
    Child,
    Children,
    PortRange,
    clean_environ,
    database_url,
    delete_redis_keys,
    wait_until,
)
from notifications.local_slack import TOKEN, SlackServer

PORTS = PortRange(range(9200, 9300))
BIN = ROOT / ".venv" / "bin"
DB_NAME = "inkwave_bench_outbox"
DATABASE_URL = database_url(DB_NAME)
# Celery's queue ("celery") lives in a Redis database of its own, chosen free at start-up:
# other checkouts on this machine leave notifications.drain tasks for *their* databases in
# db 0's queue, and a worker of ours must neither run those nor lose ours to theirs.
BROKER_DBS = range(15, 0, -1)
BROKER_OWNER_KEY = "inkwave-bench-outbox:owner"
OPERATIONS_CHANNEL = "C0BENCHOPS"
ORDERS_CHANNEL = "C0BENCHORDERS"
DESTINATIONS = (("operations", OPERATIONS_CHANNEL), ("orders", ORDERS_CHANNEL))
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


def start_slack_server() -> SlackServer:
    """The local Slack server on a port of the benchmark's range (9200-9299)."""
    for _ in range(len(PORTS.ports)):
        with contextlib.suppress(OSError):  # taken between the probe and the bind
            return SlackServer(PORTS.take())
    raise RuntimeError("no free port in 9200-9299 for the Slack server")


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
        delete_redis_keys(prefix)
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


def make_env(*, var_dir: Path, slack: SlackServer, broker_db: int, prefix: str) -> dict[str, str]:
    env = clean_environ(CLEARED_PREFIXES)
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


@dataclass
class System:
    children: Children
    env: dict[str, str]
    slack: SlackServer
    broker_db: int
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

        from notifications.outbox import send_message

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
        self.daphne_port = PORTS.take()
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
