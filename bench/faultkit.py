"""Dependencies the fault bench may break: a Redis and a PostgreSQL of its own, and a TCP proxy.

The shared Redis on 6379 and the shared PostgreSQL serve everyone's tests: never stop or hang
them. `OwnRedis` is a redis-server on a spare loopback port, keeping nothing on disk, to stop,
hang (SIGSTOP) and bring back on the same port. `OwnPostgres` is a PostgreSQL cluster of its
own (initdb in a temp dir, the machine's PostgreSQL binaries) on a spare port, to restart as an
operator or a crash would. `TcpProxy` stands between the deployment's processes and
PostgreSQL; closing it refuses new connections and cuts open ones, as a database that went away
does. (The tests have their own copies; bench never imports tests/.)

Each listens on 127.0.0.1 and, when given one, on another address of this machine too (a
bench/netns.py bridge's, for processes on hosts of their own): OwnRedis and OwnPostgres on
both, TcpProxy on the one it is given.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import spare_port, stop_process


class OwnRedis:
    """`also`: another address to listen on besides 127.0.0.1 (a bridge's)."""

    def __init__(self, work_dir: Path, also: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.work_dir = work_dir
        self.also = also
        self.port = spare_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port) and wait until it answers PING."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *([self.also] if self.also else []),
                # Bound to loopback and a private bridge only; protected mode would refuse
                # the bridge's clients (no password: a bench's throwaway Redis).
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
                "--logfile",
                str(self.work_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the bench's group must not reach it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Down: the port refuses connections and open ones are closed."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        stop_process(self.process, 10)
        self.process = None

    def pause(self) -> None:
        """Hung: the kernel still accepts connections and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


class OwnPostgres:
    """A PostgreSQL cluster of its own on a spare loopback port (trust auth, user postgres,
    fsync off: a bench's data, not anyone's). initdb and the server refuse to run as root, so
    as root they run as the postgres user, in a temp dir it owns. `also`: another address
    to listen on (a bridge's), and `also_subnet` the clients trusted there."""

    def __init__(self, also: str | None = None, also_subnet: str | None = None) -> None:
        self.also = also
        self.also_subnet = also_subnet
        self.port = spare_port()
        self.root = Path(tempfile.mkdtemp(prefix="inkwave-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.started = False

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = list(argv)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(
            command, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                _postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            if self.also_subnet:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.also_subnet} trust\n")
        listen = ",".join(["127.0.0.1", *([self.also] if self.also else [])])
        options = (
            f"-p {self.port} -c listen_addresses={listen} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self.started = True

    def restart(self) -> None:
        """A fast restart: open connections are ended, new ones refused until it is back."""
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart")

    def stop(self, mode: str = "immediate") -> None:
        """Down: `fast` ends every session and shuts down cleanly, `immediate` as a crash."""
        if self.started:
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "stop")
            self.started = False

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class TcpProxy:
    """Forwards a spare port on `host` to `target` until closed; can be opened again."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = spare_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """New connections are refused; open ones are cut."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [listener, *sockets]:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)
            with contextlib.suppress(OSError):
                source.close()

    def __enter__(self) -> TcpProxy:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
