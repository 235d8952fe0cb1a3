"""The README's first command: the whole system on embedded defaults, with nothing configured.

No PostgreSQL, no Redis: SQLite, the in-memory channel layer, and kombu's SQLAlchemy
transport on a SQLite file carrying beat's tasks to a separate worker process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from notifications.local_slack import TOKEN, SlackServer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 -- not up yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 -- loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def module_slack() -> Iterator[SlackServer]:
    """The local Slack server, for the whole module's one run of the system."""
    with SlackServer() as server:
        yield server


@pytest.fixture(scope="module")
def embedded(
    tmp_path_factory: pytest.TempPathFactory, module_slack: SlackServer
) -> Iterator[tuple[int, dict[str, str], Path]]:
    """scripts/run, started once for the module's tests (about 15 s of start and stop each):
    they add their own venues and read back only what they made, and the stop on Ctrl-C is
    checked once, after both."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    slack_server = module_slack
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE", "REDIS", "CELERY", "CHANNEL_LAYER", "DJANGO"))
    }
    port = free_port()
    env.update(
        INKWAVE_VAR_DIR=str(tmp_path),
        PORT=str(port),
        PYTHON=sys.executable,
        METRICS_FLUSH_SECONDS="0.5",
        METRICS_PRUNE_SECONDS="1",
        LOG_LEVEL="warning",
        # Slack is the local test server; the channels fill the default destinations.
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_API_URL=slack_server.api_url,
        SLACK_OPERATIONS_CHANNEL_ID="C0OPS",
        SLACK_ORDERS_CHANNEL_ID="C0ORD",
    )
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "run")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # An operator's terminal delivers Ctrl-C; a test runner started in the background
        # may have SIGINT ignored, which the script would inherit and could not trap.
        preexec_fn=_deliver_sigint,
    )
    try:
        wait_until(
            lambda: get_json(f"http://127.0.0.1:{port}/health/live")[0] == 200, 90, "the server"
        )
        yield port, env, tmp_path
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as an operator stops it
        try:
            process.wait(timeout=45)
            stopped = True
        except subprocess.TimeoutExpired:
            stopped = False
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        # Nothing of it may be left running. The script exits once its own children have;
        # theirs (Celery's pool processes) finish exiting on their own a moment later.
        leftover = _group_members(process.pid)
        deadline = time.monotonic() + 15
        while leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            leftover = _group_members(process.pid)
        if leftover:
            os.killpg(process.pid, signal.SIGKILL)
        assert stopped, "scripts/run did not stop within 45 s of Ctrl-C"
        assert not leftover, f"processes left behind: {leftover}"


def _deliver_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_members(group: int) -> str:
    """The processes still in the session it started (zombies not counted: they are gone)."""
    found = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "--sid", str(group)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "\n".join(
        line for line in found.stdout.splitlines() if line.split()[1:2] != ["Z"]
    ).strip()


def manage(env: dict[str, str], code: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_the_whole_system_runs_on_embedded_defaults(
    embedded: tuple[int, dict[str, str], Path],
) -> None:
    port, env, var_dir = embedded
    status, body = get_json(f"http://127.0.0.1:{port}/health")
    assert status == 200
    assert body["checks"] == {
        "database": "healthy",
        "websocket": "healthy",
        "redis": "disabled",
        "channel_layer": "healthy",
        "slack": "healthy",
    }

    token = manage(
        env,
        "from orders.models import Venue, VenueAccessToken\n"
        "v = Venue.objects.create(name='Harbour', slug='harbour')\n"
        "print(v.pk, VenueAccessToken.issue(v, 'kitchen')[1])",
    )
    venue_id, raw = token.split()
    with connect(f"ws://127.0.0.1:{port}/ws/venues/{venue_id}/?token={raw}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        ws.send(json.dumps({"type": "ping", "ts": 7}))
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "pong",
            "ts": 7,
            "serverTime": pytest.approx(time.time(), abs=5),
        }

    # Beat schedules the pruning task; the worker, another process, runs it through the
    # SQLite broker and deletes a sample older than the retention. Beat prunes every second,
    # so the rows are made and counted in one transaction: a prune that runs meanwhile cannot
    # see them (nor delete the worker row before its sample is added), and one that runs
    # after the commit must find and delete them.
    assert (
        manage(
            env,
            "from datetime import timedelta\n"
            "from django.db import transaction\n"
            "from django.utils import timezone\n"
            "from monitoring.models import Worker, WebSocketSample\n"
            "old = timezone.now() - timedelta(days=60)\n"
            "with transaction.atomic():\n"
            "    w = Worker.objects.create(name='ancient', hostname='h', pid=1, started_at=old,"
            " last_seen_at=old)\n"
            "    WebSocketSample.objects.create(worker=w, recorded_at=old, interval_seconds=10)\n"
            "    print(WebSocketSample.objects.filter(worker=w).count())",
        )
        == "1"
    )
    database = var_dir / "db.sqlite3"

    def ancient_samples() -> int:
        with sqlite3.connect(database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM monitoring_websocketsample s "
                "JOIN monitoring_worker w ON w.id = s.worker_id WHERE w.name = 'ancient'"
            ).fetchone()
        return int(row[0])

    wait_until(lambda: ancient_samples() == 0, 30, "beat's pruning task to run in the worker")
    assert (var_dir / "celery-broker.sqlite3").exists()


def post_order(port: int, token: str, venue_id: str) -> int:
    body = json.dumps(
        {
            "venue": int(venue_id),
            "table": "Table 5",
            "currency": "USD",
            "items": [{"name": "Soup", "quantity": 3, "unitPrice": "4.50"}],
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/orders",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(json.loads(response.read())["number"])


def test_an_order_reaches_the_room_and_slack_through_the_real_worker(
    embedded: tuple[int, dict[str, str], Path], module_slack: SlackServer
) -> None:
    slack_server = module_slack
    port, env, _ = embedded
    venue_id, raw = manage(
        env,
        "from orders.models import Venue, VenueAccessToken\n"
        "v = Venue.objects.create(name='Main Branch', slug='main', timezone='America/New_York')\n"
        "print(v.pk, VenueAccessToken.issue(v, 'kitchen')[1])",
    ).split()
    with connect(f"ws://127.0.0.1:{port}/ws/venues/{venue_id}/?token={raw}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        number = post_order(port, raw, venue_id)
        frame = json.loads(ws.recv(timeout=5))
    assert frame["event"] == "order.placed"
    assert frame["data"]["number"] == number
    wait_until(
        lambda: any(p.body.get("channel") == "C0ORD" for p in slack_server.posts),
        30,
        "the Slack message",
    )
    (order_post,) = [p for p in slack_server.posts if p.body.get("channel") == "C0ORD"]
    lines = order_post.body["text"].splitlines()
    assert lines[:5] == [
        f"🛒 New Order #{number}",
        "Venue: Main Branch",
        "Table: Table 5",
        "Items: 3 items",
        "Total: $13.50",
    ]
    assert order_post.body["blocks"][0]["type"] == "header"
    # The sign-up of the new venue went to #operations, through the same worker.
    assert any(
        p.body.get("channel") == "C0OPS" and p.body["text"].startswith("🎉 New Venue: Main Branch")
        for p in slack_server.posts
    )
