"""The load generators of a scenario: `python -m bench.client` processes, spoken to over pipes
(bench/client.py says the protocol), holding the scenario's connections."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.common import ROOT, raise_nofile_limit
from bench.rooms.plan import Plan
from bench.server import Server


class ClientProcess:
    """One `python -m bench.client` process, spoken to with JSON lines over its pipes."""

    def __init__(self, spec: dict[str, Any], log: IO[bytes], module: str = "bench.client") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=raise_nofile_limit,  # the parent has no threads of its own here
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(json.dumps(spec))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it exited; expect() reports why

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        """The next message of kind `event`; raises if the client dies or the deadline passes."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"bench client sent no {event!r} in time") from None
            if line is None:
                self.process.wait(5)
                raise RuntimeError(
                    f"bench client exited ({self.process.returncode}) before {event!r}"
                )
            message = json.loads(line)
            if message.get("event") == event:
                return message

    def finish(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class ClientGroup:
    """The client processes of one scenario, started together and released together."""

    def __init__(self, specs: list[dict[str, Any]], log: IO[bytes]) -> None:
        self.members = [ClientProcess(spec, log) for spec in specs]

    def __enter__(self) -> ClientGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for member in self.members:
            member.finish()

    def ready(self, timeout: float = 180.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [member.expect("ready", deadline) for member in self.members]

    def go(self, lead: float = 0.3) -> float:
        t0 = time.time() + lead
        for member in self.members:
            member.send(f"go {t0!r}")
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [member.expect("result", deadline) for member in self.members]

    def send_all(self, line: str) -> None:
        for member in self.members:
            member.send(line)


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


@dataclass
class Context:
    plan: Plan
    venue: int
    token: str
    base_env: dict[str, str]
    work: Path
    client_log: IO[bytes]

    def url(self, server: Server) -> str:
        return f"{server.ws_base}/ws/venues/{self.venue}/?token={self.token}"


def client_specs(
    ctx: Context, server: Server, connections: int, steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One spec per client process; the connections are numbered across all of them."""
    specs = []
    base = 0
    for count in split(connections, ctx.plan.clients):
        specs.append(
            {
                "url": ctx.url(server),
                "connections": count,
                "connect_concurrency": 50,
                "index_base": base,
                "total_connections": connections,
                "steps": steps,
            }
        )
        base += count
    return specs


def start_clients(
    ctx: Context, server: Server, connections: int, steps: list[dict[str, Any]]
) -> tuple[ClientGroup, float]:
    """Client processes holding `connections` open connections, ready to run `steps`."""
    specs = client_specs(ctx, server, connections, steps)
    group = ClientGroup(specs, ctx.client_log)
    try:
        ready = group.ready()
        got = sum(r["connections"] for r in ready)
        if got != connections:
            raise RuntimeError(f"only {got} of {connections} connections opened")
    except BaseException:
        group.__exit__()
        raise
    return group, max(r["connect_seconds"] for r in ready)
