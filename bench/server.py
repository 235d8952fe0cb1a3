"""Starting and stopping the server under test: one daphne process per configuration."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from bench.common import (
    HOST,
    PYTHON,
    REDIS_URL,
    ROOT,
    PortRange,
    clean_environ,
    cpu_seconds,
    migrate,
    raise_nofile_limit,
    run_checked,
    stop_process,
    wait_until,
)

PORTS = PortRange(range(9100, 9200))
ASGI_APP = "bench.asgi_app:application"

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


def base_env(var_dir: Path, database_url: str | None) -> dict[str, str]:
    env = clean_environ(_CLEARED)
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


def prepare_database(env: dict[str, str]) -> tuple[int, str]:
    """Migrates, then creates a venue and a device token; returns (venue id, raw token)."""
    migrate(env, timeout=180)
    out = run_checked([PYTHON, "-m", "bench.setup_db"], env, timeout=60)
    created = json.loads(out.strip().splitlines()[-1])
    return int(created["venue"]), str(created["token"])


@dataclass
class Server:
    """One daphne process serving bench.asgi_app (the project's application + /bench/...)."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=PORTS.take)
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
            PYTHON,
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
        if wait_until(self._listening, timeout, 0.1):
            return
        self.stop()
        raise RuntimeError(f"daphne did not listen on {self.port} within {timeout}s:\n{self.log()}")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log()}")
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def processes(self) -> list[psutil.Process]:
        assert self._ps is not None
        return [self._ps]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all its threads."""
        return cpu_seconds(self.processes)

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
        if self.process is not None:
            stop_process(self.process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
