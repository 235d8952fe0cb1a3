"""The production topology on one machine, for trying the system as its users do.

    .venv/bin/python bench/deployment.py --dir /tmp/inkwave-deploy --minutes 50

starts, as docker-compose.yml does but as plain processes: a local Slack server
(notifications/local_slack.py, bot token and two channels), `manage.py migrate` on a PostgreSQL
database of its own (created if missing), two web processes (`python -m inkwave.serve`,
each with its own INKWAVE_VAR_DIR), one Celery worker and one Celery beat, all with the same
SECRET_KEY, MONITORING_TOKEN and Redis key prefix. Then it writes, in --dir:

- `env.sh`: the shared environment (`set -a; . DIR/env.sh; set +a` before `manage.py ...`);
- `state.json`: ports, pids, the venue and its device token, the Slack server's URL and the
  signing secret Slack's requests to us are signed with;
- `slack-posts.jsonl`: every message the Slack server accepted, one JSON object a line
  (`path`, `body`, `at`: epoch seconds of arrival);
- `web-1.log`, `web-2.log`, `worker.log`, `beat.log`.

It runs until --minutes have passed, or SIGINT / SIGTERM, then stops every process it started
(SIGTERM, then SIGKILL) and, with --drop-database, drops the database. `--web2-redis-url` puts the
second web process on another Redis (one you may stop or hang to see /health answer 503
without touching the shared one). `--own-redis` starts a Redis of its own on a spare port for
every process, `--own-postgres` a PostgreSQL cluster of its own (to restart; removed at the
end), and `--database-proxy` puts a TCP proxy in front of PostgreSQL, so that a fault
run (bench/faults.py, which drives `Topology` directly) can stop, hang or refuse them; the
shared Redis and PostgreSQL are never touched. Bounded: nothing runs past --minutes.

`--netns` (root, iproute2; needs --own-redis and --own-postgres) runs each web process as a
host of its own (bench/netns.py): a network namespace with its own address on a private
bridge, its own loopback and hostname, besides its own INKWAVE_VAR_DIR. It listens on its
address only; what it uses (its own Redis and PostgreSQL, the TCP proxy, the Slack server)
is reached at the bridge's address, where they listen too (Redis and PostgreSQL on 127.0.0.1
as well, for the worker, the beat and the bench). PUBLIC_URL is web-1's address, and
ALLOWED_HOSTS names both. `state.json`'s `hosts` are the web processes' addresses, parallel
to `ports` (127.0.0.1 without --netns), and `netns` their namespaces. The namespaces and the
bridge are deleted when it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    clean_environ,
    delete_redis_keys,
    drop_database,
    ensure_database,
    stop_processes,
)
from bench.common import database_url as shared_database_url  # noqa: E402
from bench.faultkit import OwnPostgres, OwnRedis, TcpProxy  # noqa: E402
from bench.netns import Network  # noqa: E402
from notifications.local_slack import TOKEN, SlackServer  # noqa: E402

OPERATIONS_CHANNEL = "C0OPERATIONS"
ORDERS_CHANNEL = "C0ORDERS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where logs and state go")
    parser.add_argument("--database", default="inkwave_deploy", help="PostgreSQL database name")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--web2-redis-url", default=None, help="another Redis for web-2")
    parser.add_argument("--prefix", default=None, help="channel layer prefix (default: random)")
    parser.add_argument("--ports", default="8101,8102", help="the two web processes' ports")
    parser.add_argument("--minutes", type=float, default=30.0, help="stop after this long")
    parser.add_argument("--flush-seconds", default="2", help="METRICS_FLUSH_SECONDS")
    parser.add_argument("--drop-database", action="store_true", help="drop it when stopping")
    parser.add_argument("--venues", type=int, default=1, help="venues to create (a token each)")
    parser.add_argument(
        "--own-redis", action="store_true", help="a Redis of its own on a spare port"
    )
    parser.add_argument(
        "--database-proxy", action="store_true", help="processes reach PostgreSQL via a proxy"
    )
    parser.add_argument(
        "--own-postgres",
        action="store_true",
        help="a PostgreSQL cluster of its own on a spare port (to restart), removed at the end",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="each web process a host of its own: a network namespace on a private bridge",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="extra environment"
    )
    args = parser.parse_args(argv)
    if args.netns and not (args.own_redis and args.own_postgres and not args.web2_redis_url):
        # The shared Redis and PostgreSQL listen on loopback only: another host cannot reach them.
        parser.error("--netns needs --own-redis and --own-postgres, and no --web2-redis-url")
    return args


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


class Topology:
    """The processes of one deployment; `start()` then `close()`, or `run()` for the CLI."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir: Path = args.dir.resolve()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.logs: list[IO[bytes]] = []
        self.stopping = threading.Event()
        self.redis: OwnRedis | None = None
        self.proxy: TcpProxy | None = None
        self.postgres: OwnPostgres | None = None
        self.redis_url: str = args.redis_url
        self.prefix = ""
        self.recorder: threading.Thread | None = None
        self.signing_secret = secrets.token_urlsafe(24)
        self.ports = [int(p) for p in args.ports.split(",")]
        self.names = [f"web-{index}" for index in range(1, len(self.ports) + 1)]
        self.network: Network | None = None
        self.hosts = ["127.0.0.1"] * len(self.ports)  # where each web process listens

    def open_network(self) -> str:
        """With --netns, creates the hosts' network (once); the address at which the web
        processes reach this machine's services: the bridge's, or 127.0.0.1. A Slack server
        for `start()` must listen there."""
        if not self.args.netns:
            return "127.0.0.1"
        if self.network is None:
            network = Network(self.names)
            network.open()  # deletes what a dead run of the same name left, first
            self.network = network
            self.hosts = [network.hosts[name].address for name in self.names]
        return self.network.gateway

    def close_network(self) -> None:
        if self.network is not None:
            self.network.close()
            self.network = None

    def placement_problems(self) -> list[str]:
        """With --netns, what shows a web process is not a host of its own: its pid outside its
        namespace, its port answering on this host's loopback, or not on its address."""
        problems: list[str] = []
        if self.network is None:
            return problems
        for name, host, port in zip(self.names, self.hosts, self.ports, strict=True):
            pid = self.processes[name].pid
            if pid not in self.network.pids(name):
                problems.append(
                    f"{name} (pid {pid}) is not in netns {self.network.hosts[name].netns}"
                )
            if _answers("127.0.0.1", port):
                problems.append(f"{name}'s port {port} answers on this host's 127.0.0.1")
            if not _answers(host, port):
                problems.append(f"{name} does not answer at {host}:{port}")
        return problems

    def placement(self) -> list[str]:
        """Where each web process runs, in words (for a report)."""
        lines = []
        for name, host, port in zip(self.names, self.hosts, self.ports, strict=True):
            var = self.dir / f"var-{name}"
            if self.network is not None:
                netns = self.network.hosts[name].netns
                lines.append(f"{name} at {host}:{port} in netns {netns}, var/ {var}")
            else:
                lines.append(f"{name} at {host}:{port} (loopback, this host), var/ {var}")
        if self.network is not None:
            lines.append(
                f"bridge {self.network.bridge} {self.network.subnet}: Redis, PostgreSQL and "
                f"Slack reached at {self.network.gateway}; worker and beat on this host"
            )
        return lines

    def env(self, slack: SlackServer, database_url: str, prefix: str) -> dict[str, str]:
        env = clean_environ(("SLACK_", "DATABASE_", "REDIS_", "CELERY_", "CHANNEL_LAYER_"))
        env.update(
            DJANGO_SETTINGS_MODULE="inkwave.settings",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            MONITORING_TOKEN=secrets.token_urlsafe(24),
            DATABASE_URL=database_url,
            REDIS_URL=self.redis_url,
            CHANNEL_LAYER_PREFIX=prefix,
            METRICS_FLUSH_SECONDS=self.args.flush_seconds,
            SLACK_API_URL=slack.api_url,
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_OPERATIONS_CHANNEL_ID=OPERATIONS_CHANNEL,
            SLACK_ORDERS_CHANNEL_ID=ORDERS_CHANNEL,
            # Slack's requests to us (buttons, /inkwave) are signed with it; state.json has it,
            # so that a run can sign a click as Slack would.
            SLACK_SIGNING_SECRET=self.signing_secret,
            PUBLIC_URL=f"http://{self.hosts[0]}:{self.ports[0]}",
            LOG_LEVEL="info",
            PYTHONDONTWRITEBYTECODE="1",
            INKWAVE_VAR_DIR=str(self.dir / "var-shell"),
        )
        if self.network is not None:
            # The default names loopback only: Django answers 400 to a request for another host.
            env["ALLOWED_HOSTS"] = ",".join(["localhost", "127.0.0.1", "[::1]", *self.hosts])
        for item in self.args.set:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def start_process(self, name: str) -> None:
        """Start (or start again, with the same command and environment) one process."""
        command, env = self.commands[name]
        log = (self.dir / f"{name}.log").open("ab")
        self.logs.append(log)
        self.processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def add(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.commands[name] = (command, env)
        self.start_process(name)

    def kill(self, name: str) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost host would."""
        process = self.processes[name]
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def stop_all(self) -> None:
        stop_processes(self.processes.values(), timeout=20)
        for log in self.logs:
            log.close()

    def record_posts(self, slack: SlackServer) -> None:
        seen = 0
        with (self.dir / "slack-posts.jsonl").open("a") as out:
            while not self.stopping.is_set():
                posts = slack.posts
                for post in posts[seen:]:
                    out.write(
                        json.dumps({"path": post.path, "body": post.body, "at": post.at}) + "\n"
                    )
                out.flush()
                seen = len(posts)
                self.stopping.wait(0.2)

    def database_url(self) -> str:
        if self.args.own_postgres:
            if self.network is not None:
                self.postgres = OwnPostgres(self.network.gateway, self.network.subnet)
            else:
                self.postgres = OwnPostgres()
            self.postgres.start()
            url = self.postgres.create_database(self.args.database)
        else:
            url = ensure_database(self.args.database)
        if not self.args.database_proxy:
            return url
        port = self.postgres.port if self.postgres is not None else 5432
        # With --netns it listens on the bridge's address, which this host reaches too.
        host = self.open_network()
        self.proxy = TcpProxy(("127.0.0.1", port), host=host)
        self.proxy.open()
        return url.replace(f"127.0.0.1:{port}", f"{host}:{self.proxy.port}")

    def setup(self, env: dict[str, str]) -> list[dict[str, Any]]:
        """Migrates and creates the venues; returns [{"venue": id, "token": raw}, ...]."""
        with (self.dir / "migrate.log").open("ab") as log:
            subprocess.run(
                [PYTHON, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=300,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        created = subprocess.run(
            [PYTHON, "-m", "bench.setup_db", str(self.args.venues)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        return [
            json.loads(line) for line in created.stdout.strip().splitlines()[-self.args.venues :]
        ]

    def start(self, slack: SlackServer) -> dict[str, Any]:
        """Starts everything; returns the state also written to state.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = self.args.prefix or f"verify-{secrets.token_hex(3)}"
        services = self.open_network()
        if slack.host != services:
            raise ValueError(f"the Slack server must listen on {services}, not {slack.host}")
        if self.args.own_redis:
            self.redis = OwnRedis(self.dir / "redis", also=services if self.network else None)
            self.redis.start()
            self.redis_url = self.redis.url
        database_url = self.database_url()
        ports = self.ports
        self.recorder = threading.Thread(target=self.record_posts, args=(slack,), daemon=True)
        self.recorder.start()
        env = self.env(slack, database_url, self.prefix)
        (self.dir / "env.sh").write_text(
            "".join(f"{k}={json.dumps(v)}\n" for k, v in env.items() if k.isidentifier())
        )
        venues = self.setup(env)
        for index, (name, host, port) in enumerate(
            zip(self.names, self.hosts, ports, strict=True), 1
        ):
            web_env = dict(env, INKWAVE_VAR_DIR=str(self.dir / f"var-{name}"))
            if index == 2 and self.args.web2_redis_url:
                web_env["REDIS_URL"] = self.args.web2_redis_url
            prefix: list[str] = []
            if self.network is not None:
                # Its Redis and PostgreSQL at the bridge's address: its 127.0.0.1 is its own.
                for key in ("DATABASE_URL", "REDIS_URL"):
                    web_env[key] = web_env[key].replace("@127.0.0.1:", f"@{services}:")
                    web_env[key] = web_env[key].replace("//127.0.0.1:", f"//{services}:")
                prefix = self.network.exec_prefix(name)
            serve = ["-m", "inkwave.serve", "-b", host, "-p", str(port)]
            self.add(name, [*prefix, PYTHON, *serve, "inkwave.asgi:application"], web_env)
        celery = [PYTHON, "-m", "celery", "-A", "inkwave"]
        self.add(
            "worker",
            [*celery, "worker", "--loglevel=INFO", "--concurrency=2"],
            dict(env, INKWAVE_VAR_DIR=str(self.dir / "var-worker")),
        )
        self.add(
            "beat",
            [*celery, "beat", "--loglevel=INFO"],
            dict(env, INKWAVE_VAR_DIR=str(self.dir / "var-beat")),
        )
        state: dict[str, Any] = {
            "ports": ports,
            "hosts": self.hosts,
            "netns": [self.network.hosts[n].netns for n in self.names] if self.network else None,
            "pid": os.getpid(),
            "pids": {name: p.pid for name, p in self.processes.items()},
            "venue": venues[0]["venue"],
            "token": venues[0]["token"],
            "venues": venues,
            "slack_api_url": slack.api_url,
            "slack_webhook_url": slack.webhook_url(),
            "prefix": self.prefix,
            "database": self.args.database,
            "database_url": self.postgres.url(self.args.database)
            if self.postgres is not None
            else shared_database_url(self.args.database),
            "redis_url": self.redis_url,
            "monitoring_token": env["MONITORING_TOKEN"],
            "slack_signing_secret": env["SLACK_SIGNING_SECRET"],
        }
        (self.dir / "state.json").write_text(json.dumps(state, indent=2))
        return state

    def close(self) -> None:
        """Stops every process, then what it started for them; drops the database if asked."""
        self.stopping.set()
        self.stop_all()
        if self.recorder is not None:
            self.recorder.join(5)
        if self.redis is not None:
            self.redis.stop()
        else:
            delete_redis_keys(self.prefix, self.redis_url)
        if self.args.web2_redis_url:
            delete_redis_keys(self.prefix, self.args.web2_redis_url)
        if self.proxy is not None:
            self.proxy.close()
        if self.postgres is not None:
            self.postgres.remove()
        elif self.args.drop_database:
            drop_database(self.args.database)
        self.close_network()  # after its processes: a namespace lives while one is in it

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.close_network()  # also when the Slack server could not start

    def _run(self) -> int:
        with SlackServer(host=self.open_network()) as slack:
            try:
                state = self.start(slack)
                print(json.dumps(state), flush=True)

                def stop(signum: int, frame: object) -> None:
                    self.stopping.set()

                signal.signal(signal.SIGTERM, stop)
                signal.signal(signal.SIGINT, stop)
                deadline = time.monotonic() + self.args.minutes * 60
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    for name, process in self.processes.items():
                        if process.poll() is not None:
                            print(f"{name} exited with {process.returncode}", flush=True)
                            self.stopping.set()
                    self.stopping.wait(1)
            finally:
                self.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    return Topology(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
