"""Errors reach Sentry once, tagged with their feature and venue, and without a secret in them.

Everything is reported to a local Sentry (tests/local_sentry.py), through sentry-sdk's own
transport; what a test asserts about secrets it asserts on the raw bytes that arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sentry_sdk
import structlog
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core.asgi import get_asgi_application
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST

from inkwave.db import database_sync_to_async
from inkwave.routing import build_websocket_application
from inkwave.sentry import FILTERED, scrub, setup_sentry
from orders import api as orders_api
from orders.consumers import VenueRoomConsumer
from orders.groups import venue_group_name
from orders.models import Venue, VenueAccessToken
from tests.conftest import PatientCommunicator, session_cookie_for
from tests.local_sentry import SentryServer
from tests.sentry_celery import escapes, logged_and_escapes
from tests.servers import LOG_TAIL_CHARS, ROOT, server_env

logger = structlog.get_logger(__name__)


class ProbeFailedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Secrets:
    """One of each kind the scrubber must catch, new for each test."""

    venue_token: str
    slack_token: str
    webhook_url: str
    password: str  # no telling shape: only its name gives it away
    session_key: str  # the same

    @classmethod
    def new(cls) -> Secrets:
        alnum = string.ascii_lowercase + string.digits
        return cls(
            venue_token=VenueAccessToken.generate(),
            slack_token=f"xoxb-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}",
            webhook_url=f"https://hooks.slack.com/services/T0{secrets.token_hex(4).upper()}"
            f"/B0{secrets.token_hex(4).upper()}/{secrets.token_hex(12)}",
            password=secrets.token_hex(10),
            session_key="".join(secrets.choice(alnum) for _ in range(32)),
        )


def assert_none_arrived(raw: bytes, *values: str) -> None:
    """Neither a secret nor its random part is anywhere in `raw`."""
    parts = {part for value in values for part in _random_parts(value)}
    arrived = sorted(part for part in parts if part.encode() in raw)
    assert not arrived, f"secrets that reached Sentry: {arrived}"


def _random_parts(value: str) -> set[str]:
    """The value, and what of it is random: without its prefix, or the URL before it. Only
    long ones: a few characters could be in the bytes by chance."""
    parts = {value, value.removeprefix("iwv_"), value.rsplit("/", 1)[-1], value.rsplit("-", 1)[-1]}
    return {part for part in parts if len(part) >= 12}


@pytest.fixture
def secret() -> Secrets:
    return Secrets.new()


@pytest.fixture
def sentry_server() -> Iterator[SentryServer]:
    with SentryServer() as server:
        yield server


def reporting(server: SentryServer, traces_sample_rate: float = 0.0) -> Iterator[SentryServer]:
    """This process reports to `server`; afterwards it is flushed, closed and off again (the
    client is process-wide: the next test must find Sentry as the settings left it, off)."""
    assert setup_sentry(
        server.dsn,
        environment="test",
        release="inkwave@test",
        traces_sample_rate=traces_sample_rate,
    )
    try:
        yield server
    finally:
        sentry_sdk.get_client().close(timeout=10)  # sends what is queued, ends its threads
        sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def sentry(sentry_server: SentryServer) -> Iterator[SentryServer]:
    yield from reporting(sentry_server)


@pytest.fixture
def sentry_tracing(sentry_server: SentryServer) -> Iterator[SentryServer]:
    yield from reporting(sentry_server, traces_sample_rate=1.0)


async def flushed(server: SentryServer) -> SentryServer:
    """`server` once this process has sent everything it queued."""
    await asyncio.to_thread(sentry_sdk.flush, 10)
    return server


# --- configuration ----------------------------------------------------------------------


def run_configured(tmp_path: Path, code: str, **env: str) -> str:
    """Run `code` after django.setup() in a process configured by the environment alone."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    environ.update(DJANGO_SETTINGS_MODULE="inkwave.settings", INKWAVE_VAR_DIR=str(tmp_path), **env)
    result = subprocess.run(
        [sys.executable, "-c", f"import django\ndjango.setup()\n{code}"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_a_dsn_nothing_is_set_up(tmp_path: Path) -> None:
    code = """
import json, threading, sentry_sdk
from sentry_sdk import integrations
print(json.dumps({
    "active": sentry_sdk.get_client().is_active(),
    "integrations": sorted(integrations._installed_integrations),
    "threads": sorted(t.name for t in threading.enumerate()),
}))
"""
    assert "SENTRY_DSN" not in os.environ  # tests/settings.py keeps the caller's out
    state = json.loads(run_configured(tmp_path, code, SENTRY_ENVIRONMENT="staging"))
    assert state == {"active": False, "integrations": [], "threads": ["MainThread"]}
    assert setup_sentry("", environment="staging") is False


def test_a_process_with_a_dsn_reports_with_its_environment_and_release(
    tmp_path: Path, sentry_server: SentryServer
) -> None:
    code = """
import structlog, sentry_sdk
structlog.get_logger("inkwave.probe").error("probe_failed", step=3)
sentry_sdk.flush(10)
"""
    run_configured(
        tmp_path,
        code,
        SENTRY_DSN=sentry_server.dsn,
        SENTRY_ENVIRONMENT="staging",
        SENTRY_RELEASE="inkwave@1.2.3",
    )
    (event,) = sentry_server.events
    assert (event["environment"], event["release"]) == ("staging", "inkwave@1.2.3")
    assert event["level"] == "error"
    assert event["logentry"]["message"] == "probe_failed"  # the event's name, not its dict
    assert event["extra"]["step"] == 3
    assert {"django", "celery", "logging"} <= set(event["sdk"]["integrations"])


def test_it_sends_no_personal_data_and_filters_every_name_sentry_sdk_filters(
    sentry: SentryServer,
) -> None:
    """sentry-sdk's own scrubber is replaced by `scrub`, which must do its work too."""
    assert not sentry_sdk.get_client().should_send_default_pii()
    names = [*DEFAULT_DENYLIST, *DEFAULT_PII_DENYLIST]
    event: Any = {"extra": {name: secrets.token_hex(8) for name in names}}
    assert scrub(event, {}) == {"extra": {name: FILTERED for name in names}}


# --- the venue room ---------------------------------------------------------------------


def failing_ping(secret: Secrets) -> Callable[..., Awaitable[None]]:
    """A ping handler with a bug, holding secrets as a real one might."""

    async def on_ping(self: VenueRoomConsumer, message: dict[str, Any]) -> None:
        destination, bot = secret.webhook_url, secret.slack_token
        password, session_key = secret.password, secret.session_key
        logger.warning("probe_posting", url=destination)  # a breadcrumb
        raise ProbeFailedError(f"{destination} refused {bot} ({password} {session_key})")

    return on_ping


@pytest.fixture
def other_token(other_venue: Venue) -> str:
    return VenueAccessToken.issue(other_venue, "Bar screen")[1]


class ServedCommunicator(PatientCommunicator):
    """Starts the application as daphne does, in a copy of the caller's context (asgiref
    starts each in an empty one): whatever the server's context holds, every connection's
    task starts with."""

    _future: asyncio.Future[Any] | None

    @property
    def future(self) -> asyncio.Future[Any]:
        if self._future is None:
            self._future = asyncio.ensure_future(
                self.application(self.scope, self.input_queue.get, self.output_queue.put)
            )
        return self._future


async def enter(venue: Venue, token: str, cookie: bytes) -> PatientCommunicator:
    path = f"/ws/venues/{venue.pk}/?token={token}"
    room = ServedCommunicator(build_websocket_application(), path, headers=[(b"cookie", cookie)])
    connected, code = await room.connect()
    assert connected, code
    assert (await room.receive_json_from())["type"] == "welcome"
    return room


async def fail_a_frame(room: PatientCommunicator) -> None:
    await room.send_json_to({"type": "ping"})
    frame = await room.receive_json_from()
    assert (frame["type"], frame["code"]) == ("error", "internal_error")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_client")
async def test_an_error_in_a_venue_room_reaches_sentry_once_tagged_with_its_venue(
    sentry: SentryServer,
    venue: Venue,
    venue_token: str,
    other_venue: Venue,
    other_token: str,
    staff_user: Any,
    secret: Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(VenueRoomConsumer, "on_ping", failing_ping(secret))
    cookie = await database_sync_to_async(session_cookie_for)(staff_user)
    # A server's context has a scope before any connection (a log line at start-up makes
    # one), and each connection's task inherits it: tags set on that shared scope, rather
    # than on one of the connection's own, would name the venue that connected last.
    with sentry_sdk.isolation_scope():
        first = await enter(venue, venue_token, cookie)
        second = await enter(other_venue, other_token, cookie)
        await fail_a_frame(first)
        await fail_a_frame(second)
        for room in (first, second):
            await room.disconnect()

    events = (await flushed(sentry)).events
    assert [(e["tags"]["feature"], e["tags"]["venue_id"]) for e in events] == [
        ("venue_room", str(venue.pk)),
        ("venue_room", str(other_venue.pk)),
    ]
    session_id = cookie.decode().partition("=")[2]
    assert_none_arrived(sentry.raw, venue_token, other_token, session_id, *astuple(secret))
    event = events[0]
    assert event["logentry"]["message"] == "venue_room_frame_failed"
    assert event["extra"]["group"] == venue_group_name(venue.pk)
    assert event["contexts"]["venue_room"]["path"] == f"/ws/venues/{venue.pk}/"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ProbeFailedError"
    assert exception["value"].count(FILTERED) == 4  # arrived, with every secret filtered
    (crumb,) = [c for c in event["breadcrumbs"]["values"] if c["message"] == "probe_posting"]
    # The breadcrumb holds what its log line held: the field, and the connection's context.
    assert crumb["data"]["url"] == FILTERED
    assert crumb["data"]["venue"] == venue.pk


# --- HTTP -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("routes")
async def test_a_crashed_request_reaches_sentry_without_its_credentials_or_body_secrets(
    sentry_tracing: SentryServer,
    venue: Venue,
    venue_token: str,
    secret: Secrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(new: Any) -> Any:
        password = secret.password
        raise ProbeFailedError(f"could not store the order ({password})")

    monkeypatch.setattr(orders_api, "_create", crash)
    # A client that pasted a webhook URL into a field, and put its token everywhere.
    item = {"name": secret.webhook_url, "quantity": 1, "unitPrice": "3.50"}
    order = {"venue": venue.pk, "table": "Table 5", "currency": "USD", "items": [item]}
    request = HttpCommunicator(
        get_asgi_application(),
        "POST",
        f"/api/v1/orders?token={venue_token}&sessionid={secret.session_key}",
        body=json.dumps(order).encode(),
        headers=[
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {venue_token}".encode()),
            (b"cookie", f"sessionid={secret.session_key}".encode()),
        ],
    )
    response = await request.get_response(timeout=10)
    assert response["status"] == 500
    await request.wait(timeout=10)  # the request's transaction ends with the application

    server = await flushed(sentry_tracing)
    (event,) = server.events
    assert_none_arrived(server.raw, venue_token, *astuple(secret))
    assert event["logentry"]["message"] == "order_creation_crashed"
    assert event["request"]["url"].endswith("/api/v1/orders")
    assert event["request"]["data"]["items"][0]["name"] == FILTERED
    (transaction,) = server.items("transaction")
    assert transaction["transaction"] == "/api/v1/orders"


# --- Celery -----------------------------------------------------------------------------


@pytest.fixture
def worker_queue() -> Iterator[str]:
    """A queue of the test's own on the shared Redis; its keys are removed afterwards."""
    queue = f"sentry-test-{uuid.uuid4().hex[:8]}"
    yield queue
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


def start_worker(queue: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A worker as docker-compose.yml runs one, forking a child that runs the tasks."""
    command = [sys.executable, "-m", "celery", "-A", "tests.sentry_celery", "worker"]
    command += ["--concurrency=1", f"--queues={queue}", "--loglevel=INFO"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """A warm shutdown, as `docker compose stop` asks; its log shows if the test failed."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
    sys.stderr.write(f"----- worker log -----\n{log_path.read_text()[-LOG_TAIL_CHARS:]}\n")


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
def test_errors_in_celery_tasks_reach_sentry_once_each_with_their_tags(
    sentry_server: SentryServer, secret: Secrets, worker_queue: str, tmp_path: Path
) -> None:
    env = server_env(
        tmp_path / "var",
        {"SENTRY_DSN": sentry_server.dsn, "SENTRY_ENVIRONMENT": "test", "LOG_LEVEL": "info"},
    )
    (tmp_path / "var").mkdir()
    log_path = tmp_path / "worker.log"
    worker = start_worker(worker_queue, env, log_path)
    try:
        with escapes.app.connection_for_write(settings.REDIS_URL) as connection:
            options: dict[str, Any] = {"queue": worker_queue, "connection": connection}
            escapes.apply_async(
                (7, secret.webhook_url, secret.slack_token, secret.venue_token, secret.password),
                **options,
            )
            logged_and_escapes.apply_async((8, secret.session_key), **options)
        sentry_server.wait_for_events(2, timeout=90)
    finally:
        # Its child flushes what it queued as it exits: whatever was sent twice is in now.
        stop(worker, log_path)

    by_feature = {event["tags"]["feature"]: event for event in sentry_server.events}
    assert len(sentry_server.events) == len(by_feature) == 2
    escaped = by_feature["tests.sentry.escapes"]
    assert escaped["tags"]["venue_id"] == "7"
    assert escaped["exception"]["values"][-1]["mechanism"]["type"] == "celery"
    assert escaped["contexts"]["task"]["arguments"] == {
        "venue_id": "7",
        "destination": f"'{FILTERED}'",
        "bot": f"'{FILTERED}'",
        "device": f"'{FILTERED}'",
        "password": FILTERED,
    }
    logged = by_feature["tests.sentry.logged_and_escapes"]
    assert logged["tags"]["venue_id"] == "8"
    assert logged["logentry"]["message"] == "probe_delivery_failed"
    assert {e["environment"] for e in sentry_server.events} == {"test"}
    assert_none_arrived(sentry_server.raw, *astuple(secret))
