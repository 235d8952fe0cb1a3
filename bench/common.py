"""What every benchmark needs, written once: ports, processes, CPU meters, a quiet machine,
percentiles, and the local PostgreSQL and Redis.

Everything here is on loopback and bounded (a timeout on every wait). Benchmarks import it as
`bench.common`; nothing here imports Django, so a client process can use it before setup.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PYTHON = sys.executable
REDIS_URL = f"redis://{HOST}:6379/0"
POSTGRES_ADMIN_URL = f"postgresql://postgres@{HOST}:5432/postgres"


# --- waiting ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Polls `predicate` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


# --- ports --------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def spare_port() -> int:
    """A port the kernel says is free now (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def host_of(hosts: Mapping[int, str], port: int) -> str:
    """Where the web process on `port` listens. The benches name web processes by port; one
    that runs as a host of its own (bench/netns.py) has its own address, given in `hosts`
    (state.json's `hosts` zipped with its `ports`); any other is on loopback."""
    return hosts.get(port, HOST)


class PortRange:
    """Bindable loopback ports of a fixed range, handed out in turn, so that a fresh server
    gets a port no earlier one of the run had (until the range wraps)."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self._next = 0

    def take(self) -> int:
        for step in range(len(self.ports)):
            port = self.ports[(self._next + step) % len(self.ports)]
            if port_is_free(port):
                self._next = (self._next + step + 1) % len(self.ports)
                return port
        raise RuntimeError(f"no free port in {self.ports.start}-{self.ports.stop - 1} on {HOST}")


# --- processes ----------------------------------------------------------------------------


def raise_nofile_limit() -> None:
    """As many open sockets as the hard limit allows (1,000+ connections); also usable as a
    child's preexec_fn."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def stop_processes(processes: Iterable[subprocess.Popen[Any]], timeout: float = 20.0) -> None:
    """SIGTERM to all at once, then SIGKILL to whatever is left after `timeout` seconds."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except psutil.Error:
        return []


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
        return process_tree(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Children:
    """Every process a benchmark starts, so that all of them are stopped whatever happens."""

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
            preexec_fn=die_with_parent,
        )
        child = Child(name, popen, log_path, log)
        self.items.append(child)
        return child

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        """Runs a command to its end (a migration); raises with its log's tail if it fails."""
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
        stop_process(child.popen, timeout)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()
        child.log.close()
        if child in self.items:
            self.items.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.items)):
            with contextlib.suppress(Exception):
                self.stop(child)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """Ctrl-C (even when started in the background, where SIGINT comes ignored), SIGTERM and a
    hang-up all end the run through the caller's `finally`, which stops every child."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_exit)


def clean_environ(cleared: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without the variables that start with any of `cleared`:
    what the benchmark sets must never come from the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(cleared)}


def run_checked(args: list[str], env: dict[str, str], timeout: float) -> str:
    """Runs a command in the checkout; its stdout, or an error with the end of its output."""
    done = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    return done.stdout


def migrate(env: dict[str, str], timeout: float = 300.0) -> None:
    run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], env, timeout)


# --- CPU ----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent working (not idle, not waiting on I/O)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU time of the processes (all their threads); gone ones count 0."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class CpuMeter:
    """CPU used between start() and stop() (or inside `with`) by named groups of processes,
    and by the whole machine."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups
        self.started = 0.0
        self.before: dict[str, float] = {}
        self.machine_before = 0.0
        self.wall = 0.0
        self.seconds: dict[str, float] = {}
        self.machine_seconds = 0.0

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(processes) for name, processes in self.groups.items()}

    def start(self) -> None:
        self.before = self._read()
        self.machine_before = machine_busy_seconds()
        self.started = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self.started
        after = self._read()
        self.seconds = {name: after[name] - self.before[name] for name in after}
        self.machine_seconds = machine_busy_seconds() - self.machine_before

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def cores(self) -> dict[str, float]:
        """Cores used by each group, by the rest of the machine, and by the machine in all."""
        wall = max(self.wall, 1e-9)
        cores = {name: seconds / wall for name, seconds in self.seconds.items()}
        machine = self.machine_seconds / wall
        cores["rest of machine"] = max(0.0, machine - sum(cores.values()))
        cores["machine total"] = machine
        return cores

    def summary(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall, 2)} | {k: round(v, 2) for k, v in self.cores.items()}


QUIET_CORES = 0.3


def machine_busy_cores(seconds: float = 0.5) -> float:
    """Cores in use on the whole machine over a short probe."""
    before, started = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / (time.monotonic() - started)


def wait_for_quiet(limit: float) -> tuple[float, float]:
    """Waits (at most `limit` s) until the machine is nearly idle; (seconds waited, the busy
    cores last seen). With no limit it only takes one short look."""
    started = time.monotonic()
    busy = machine_busy_cores()
    while busy >= QUIET_CORES and time.monotonic() - started < limit:
        busy = machine_busy_cores(1.0)
    return time.monotonic() - started, busy


# --- statistics ---------------------------------------------------------------------------


def percentile(values: list[float], q: float, *, lost: int = 0) -> float | None:
    """Nearest rank: the smallest value with at least q of the answers at or below it. `lost`
    answers count as infinitely late: None when the rank falls on one (or there is nothing)."""
    n = len(values) + lost
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    if rank > len(values):
        return None
    return sorted(values)[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


# --- what was measured where --------------------------------------------------------------


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


def git_state() -> dict[str, Any]:
    """Which code was measured: HEAD and the files that differ from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {"head": git("rev-parse", "HEAD"), "changed": git("status", "--short").splitlines()}


# --- PostgreSQL ---------------------------------------------------------------------------


def database_url(name: str) -> str:
    return f"postgres://postgres@{HOST}:5432/{name}"


def ensure_database(name: str, *, fresh: bool = False) -> str:
    """Creates the database if it is missing (dropped first when `fresh`); its DATABASE_URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        if fresh:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


def drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# --- Redis --------------------------------------------------------------------------------


def delete_redis_keys(prefix: str, url: str = REDIS_URL) -> int:
    """Removes what a stopped deployment left in Redis under `prefix` (group members of killed
    connections); how many keys. A Redis that does not answer is left as it is."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    except redis.RedisError:
        return 0
    finally:
        client.close()


def redis_available(url: str = REDIS_URL) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def redis_version(url: str = REDIS_URL) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
