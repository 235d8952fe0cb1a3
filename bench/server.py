"""Starting and stopping the server under test: one daphne process per configuration."""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PORTS = range(9100, 9200)
ASGI_APP = "bench.asgi_app:application"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# Variables of ours that must come from the benchmark, never from the caller's shell.
_CLEARED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CHANNEL_LAYER_PREFIX",
    "CHANNEL_LAYER_CAPACITY",
    "CELERY_BROKER_URL",
    "MONITORING_ENABLED",
    "DEBUG",
    "SENTRY_DSN",
)


def raise_nofile_limit() -> None:
    """Runs in the child before exec: as many open sockets as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def base_env(var_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        INKWAVE_VAR_DIR=str(var_dir),
        WS_RATE_LIMIT_PER_SECOND="1000000",
        WS_RATE_LIMIT_BURST="1000000",
        LOG_LEVEL="warning",
        METRICS_FLUSH_SECONDS="10",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def server_env(base: dict[str, str], *, monitoring: bool, redis_prefix: str | None) -> dict:
    env = dict(base, MONITORING_ENABLED="true" if monitoring else "false")
    if redis_prefix is not None:
        env.update(REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=redis_prefix)
    return env


def new_redis_prefix() -> str:
    return f"bench-{secrets.token_hex(4)}"


def run_checked(args: list[str], env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    return done.stdout


def prepare_database(env: dict[str, str]) -> tuple[int, str]:
    """Migrates, then creates a venue and a device token; returns (venue id, raw token)."""
    run_checked([sys.executable, "manage.py", "migrate", "--noinput"], env, timeout=180)
    out = run_checked([sys.executable, "-m", "bench.setup_db"], env, timeout=60)
    created = json.loads(out.strip().splitlines()[-1])
    return int(created["venue"]), str(created["token"])


def ensure_postgres_database(name: str) -> str:
    """Creates the benchmark database if it is missing; returns its DATABASE_URL."""
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def delete_redis_keys(prefix: str) -> int:
    """Removes what a stopped server left in Redis (group members of killed connections)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def redis_available() -> bool:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


_next_port = 0


def free_port() -> int:
    """The next bindable port of 9100-9199, rotating so a fresh server gets a fresh port."""
    global _next_port
    for step in range(len(PORTS)):
        port = PORTS[(_next_port + step) % len(PORTS)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        _next_port = (_next_port + step + 1) % len(PORTS)
        return port
    raise RuntimeError("no free port in 9100-9199")


@dataclass
class Server:
    """One daphne process serving bench.asgi_app (the project's application + /bench/...)."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    _ps: psutil.Process | None = None

    @property
    def ws_base(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("ab")
        # The project's server entry point: daphne with a shutdown that lets consumers leave.
        command = [
            str(BIN / "python"),
            "-m",
            "inkwave.serve",
            "-b",
            HOST,
            "-p",
            str(self.port),
            ASGI_APP,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile_limit,  # the parent has no threads of its own here
        )
        self._ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not listen on {self.port} within {timeout}s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all its threads."""
        assert self._ps is not None
        times = self._ps.cpu_times()
        return times.user + times.system

    def rss_bytes(self) -> int:
        assert self._ps is not None
        return int(self._ps.memory_info().rss)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
