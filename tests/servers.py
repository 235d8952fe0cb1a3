"""Real daphne server processes for whole-system tests.

A server runs `python -m daphne inkwave.asgi:application` on a free loopback port with the
production settings module, pointed at the test database and the test run's Redis prefix,
so the test process and every server share one database and one channel layer. Each
server's stderr goes to a file; `ServerGroup` stops every server it started (SIGTERM, then
SIGKILL) and writes the tail of their logs to stderr, which pytest shows for a failed test.

A test using these servers needs committed data: mark it
`@pytest.mark.django_db(transaction=True)` and `@pytest.mark.system`, and start the servers
from a fixture that depends on `transactional_db`, so they stop before the tables are
flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
MONITORING_TOKEN = "system-test-monitoring-token"
STATS_PATH = "/api/v1/monitoring/websocket/stats"
LOG_TAIL_CHARS = 20_000
# The server program; the address and the ASGI application are appended.
SERVER_COMMAND = (sys.executable, "-m", "inkwave.serve")

T = TypeVar("T")


class ServerStartError(RuntimeError):
    pass


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    seconds: float,
    interval: float = 0.05,
) -> T:
    """Fetch until done(value) or the deadline; the last value either way, to assert exactly."""
    deadline = time.monotonic() + seconds
    while True:
        value = await fetch()
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


def free_port() -> int:
    """A port that was free a moment ago; start_daphne retries if another process takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit(minimum: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (servers started later inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= minimum:
        return
    if hard != resource.RLIM_INFINITY and hard < minimum:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} is below the {minimum} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (minimum, hard))


def current_database_url() -> str:
    """DATABASE_URL of the database this test run actually uses (the test database)."""
    db = settings.DATABASES["default"]
    engine = db["ENGINE"]
    if engine != "django.db.backends.postgresql":
        raise RuntimeError(f"system tests need PostgreSQL, not {engine}")
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(db['NAME'], safe='')}"


def server_env(var_dir: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Only the test process decides which database is the test one.
    env.pop("DATABASE_TEST_NAME", None)
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        DATABASE_URL=current_database_url(),
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYER_PREFIX,
        INKWAVE_VAR_DIR=str(var_dir),
        SECRET_KEY=settings.SECRET_KEY,
        METRICS_FLUSH_SECONDS="0.3",
        WORKER_LIVENESS_SECONDS="5",
        MONITORING_TOKEN=MONITORING_TOKEN,
        PYTHONUNBUFFERED="1",
    )
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(overrides or {})
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: a crashed test run must not leave servers behind."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class DaphneServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    exit_code: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def get_json(
        self, path: str, *, token: str | None = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path)  # noqa: S310 (http://127.0.0.1 only)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if body else None

    def stats(self) -> dict[str, Any]:
        """The deployment-wide WebSocket statistics, as this server reports them."""
        status, body = self.get_json(STATS_PATH, token=MONITORING_TOKEN)
        if status != 200:
            raise AssertionError(f"{STATS_PATH} answered {status}: {body}")
        return dict(body)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait_until_live(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ServerStartError(
                    f"daphne on port {self.port} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError):
                status, _ = self.get_json("/health/live", timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise ServerStartError(
            f"daphne on port {self.port} did not answer /health/live within {timeout}s:\n"
            + self.log_tail()
        )

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop with the final metrics flush), SIGKILL if it hangs."""
        if self.exit_code is not None:
            return self.exit_code
        if self.is_running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)
        self.exit_code = self.process.returncode
        return self.exit_code

    def log_tail(self, max_chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return text[-max_chars:]


def start_daphne(
    work_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    startup_timeout: float = 30.0,
    attempts: int = 3,
) -> DaphneServer:
    """Start one server and wait until it answers; retries when its port was taken meanwhile."""
    work_dir.mkdir(parents=True, exist_ok=True)
    last_error: ServerStartError | None = None
    for _ in range(attempts):
        port = free_port()
        var_dir = work_dir / f"var-{port}"
        var_dir.mkdir(exist_ok=True)
        log_path = work_dir / f"daphne-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*SERVER_COMMAND, "-b", "127.0.0.1", "-p", str(port), "inkwave.asgi:application"],
                cwd=ROOT,
                env=server_env(var_dir, env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the access log
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        server = DaphneServer(port=port, process=process, log_path=log_path)
        try:
            server.wait_until_live(startup_timeout)
        except ServerStartError as exc:
            server.stop()
            last_error = exc
            if "Address already in use" not in server.log_tail():
                raise
            continue
        return server
    assert last_error is not None
    raise last_error


class ServerGroup:
    """Servers started for one test; leaving the block stops them all and prints their logs."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.servers: list[DaphneServer] = []

    def start(self, **env: str) -> DaphneServer:
        """Start one more server; keyword arguments override its environment variables."""
        server = start_daphne(self.work_dir, env)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop_all()
        finally:
            # pytest shows a test's captured teardown output only when the test failed.
            for server in self.servers:
                sys.stderr.write(
                    f"----- daphne pid {server.pid} port {server.port} "
                    f"(exit {server.exit_code}) stderr -----\n{server.log_tail()}\n"
                )


class RedisServer:
    """A redis-server of a test's own on a free port, to stop, hang and restart at will.

    Never the shared Redis: stopping that would break every other test run on the machine.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with (self.work_dir / f"redis-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.work_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def _answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """As when Redis goes down: every connection is closed, nothing is kept."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case it was hung
            self.process.terminate()
            self.process.wait(10.0)
        self.process = None

    def hang(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def compose_command(service: str) -> list[str]:
    """The service's command in docker-compose.yml, run with this test's interpreter."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = list(compose["services"][service]["command"])
    assert command[0] == "celery", command
    return [sys.executable, "-m", "celery", *command[1:]]


def wait_for(
    predicate: Callable[[], bool],
    seconds: float,
    what: str,
    alive: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Poll until predicate() holds; fail at once if one of the `alive` processes exits."""
    deadline = time.monotonic() + seconds
    while not predicate():
        for process in alive:
            if process.poll() is not None:
                raise AssertionError(
                    f"{process.args!r} exited with {process.returncode} while waiting for {what}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Processes started for one test; leaving the block stops them and shows their logs."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.started: list[tuple[subprocess.Popen[bytes], str, Path]] = []

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        name = command[command.index("-A") + 2]  # worker, beat
        log_path = self.work_dir / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, name, log_path))
        return process

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """SIGTERM, as `docker compose stop` sends: a warm shutdown."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        return process.returncode

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process, name, log_path in self.started:
            self.stop(process)
            # pytest shows a test's captured teardown output only when the test failed.
            sys.stderr.write(
                f"----- {name} pid {process.pid} "
                f"(exit {process.returncode}) -----\n"
                f"{log_path.read_text(errors='replace')[-LOG_TAIL_CHARS:]}\n"
            )


ORDER = {"table": "7", "items": [{"name": "Soup", "quantity": 1, "unitPrice": "6.00"}]}


def place_order(base_url: str, venue_id: int, token: str) -> tuple[dict[str, Any], str]:
    """POST an order with a device token: (the created order, the answer's X-Request-ID)."""
    request = urllib.request.Request(  # noqa: S310 -- loopback, http
        f"{base_url}/api/v1/orders",
        data=json.dumps({**ORDER, "venue": venue_id}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 -- loopback
        assert answer.status == 201
        return json.loads(answer.read()), str(answer.headers["X-Request-ID"])
