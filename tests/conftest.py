from __future__ import annotations

import asyncio
import io
import traceback
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.backends.postgresql.operations import DatabaseOperations
from django.test import Client

from monitoring.monitor import WebSocketMonitor, reset_monitor
from notifications.defaults import create_default_routes
from notifications.local_slack import TOKEN, SlackServer
from notifications.models import Destination, Route
from orders.models import Venue, VenueAccessToken
from tests.servers import ROOT, RedisServer, ServerGroup

# --- the flush after each transactional test -----------------------------------------------

_truncate = DatabaseOperations.sql_flush


def _sql_flush_by_delete(
    self: Any,
    style: Any,
    tables: Sequence[str],
    *,
    reset_sequences: bool = False,
    allow_cascade: bool = False,
) -> list[str]:
    """Django's flush after a transactional test, with DELETE instead of TRUNCATE.

    PostgreSQL's TRUNCATE gives each of the ~50 tables new files, synced at commit: 0.3 to 1.4 s
    a flush, after each of about 250 tests. A DELETE of a test's few rows takes milliseconds.
    The tables are locked first, as TRUNCATE locks them (a connection still writing is waited
    for, none writes meanwhile), and the foreign keys (Django's are deferrable) are checked at
    the commit, when every table is empty. Resetting sequences or cascading: TRUNCATE, as ever.
    """
    if not tables or reset_sequences or allow_cascade:
        return _truncate(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
    names = [style.SQL_FIELD(self.quote_name(table)) for table in tables]
    return [
        f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE;",
        "SET CONSTRAINTS ALL DEFERRED;",
        *(f"DELETE FROM {name};" for name in names),  # noqa: S608 (quoted table names)
        *_restore_migrated_rows(self, tables),
    ]


DatabaseOperations.sql_flush = _sql_flush_by_delete  # type: ignore[method-assign]

# The rows the migrations installed (the shipped rules, destinations, routes, inhibitions,
# status components, content types), copied once the test database is migrated and put back
# by every flush: each test starts from the migrated database whatever ran before it on its
# worker, as a deployment does (pytest-django runs the transactional tests last, so the order
# of a single process hid that the flush took them away).
SNAPSHOT_SCHEMA = "inkwave_test_migrated"
_migrated_tables: set[str] = set()


def _restore_migrated_rows(ops: Any, tables: Sequence[str]) -> list[str]:
    return [
        f"INSERT INTO {ops.quote_name(t)} SELECT * FROM {SNAPSHOT_SCHEMA}.{ops.quote_name(t)};"  # noqa: S608
        for t in tables
        if t in _migrated_tables
    ]


@pytest.fixture(scope="session", autouse=True)
def migrated_rows(django_db_setup: None, django_db_blocker: Any) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SNAPSHOT_SCHEMA} CASCADE")
        cursor.execute(f"CREATE SCHEMA {SNAPSHOT_SCHEMA}")
        for table in connection.introspection.django_table_names(only_existing=True):
            name = connection.ops.quote_name(table)
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {name})")  # noqa: S608
            if cursor.fetchone()[0]:
                cursor.execute(f"CREATE TABLE {SNAPSHOT_SCHEMA}.{name} AS TABLE {name}")
                _migrated_tables.add(table)


# The test running now, for the leak report below.
_current_test: list[str] = [""]
# Leaks a whole run may show before it fails: a few come from threads of the test clients
# (Django's test clients keep a request's connection open); a regression that leaks per
# request or per connection (the pool's 20, as channels' database_sync_to_async did) fails.
POOL_LEAKS_TOLERATED = 4


@pytest.fixture(autouse=True)
def _name_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    _current_test[0] = request.node.nodeid
    yield
    _current_test[0] = ""


TASKS_END_SECONDS = 30.0


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> None:
    """Each test's event loop gets a channel layer object of its own. channels-redis keeps
    its receive lock and receive count on the layer object, for one event loop at a time (a
    server process runs one): a receive that a test's loop left behind, collected during a
    later test, ran its clean-up against that test's lock and count ("Lock is bound to a
    different event loop" in the hub's pump, 3 tests of one full run)."""
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
async def no_task_outlives_its_test() -> AsyncIterator[None]:
    """What a test leaves running is cancelled here, and must end: one that does not would
    hang the run at the loop's close with no word of which (pytest-asyncio cancels once and
    waits). It fails the test instead, with where each stuck task waits."""
    yield
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + TASKS_END_SECONDS
    stuck = {task for task in asyncio.all_tasks() if task is not current and not task.done()}
    # Cancelled again each second: a Redis read can swallow one (orders.hub.reap).
    while stuck and asyncio.get_running_loop().time() < deadline:
        for task in stuck:
            task.cancel()
        _, stuck = await asyncio.wait(stuck, timeout=1.0)
    if stuck:
        stacks = io.StringIO()
        for task in stuck:
            stacks.write(f"{task!r}\n{awaiting(task.get_coro())}\n")
        pytest.fail(f"{len(stuck)} tasks did not end when cancelled:\n{stacks.getvalue()}")


def awaiting(coro: Any) -> str:
    """Where a coroutine waits, down its chain of awaits (a task's stack shows only its top)."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def no_pooled_connection_leaks(django_db_setup: Any) -> Iterator[None]:
    """Connections taken from this process's pool are given back. One that is not (a thread
    or a task context that opened it and went away) is gone for good, and after as many as
    the pool's size every query waits and fails: inkwave/db.py says how it happened once.
    """
    from django.db import connections

    pool = getattr(connections["default"], "pool", None)
    if pool is None:  # SQLite, or a run without a pool
        yield
        return
    taken: dict[int, str] = {}
    real_get, real_put = pool.getconn, pool.putconn
    ours = (
        str(ROOT / "tests"),
        str(ROOT / "orders"),
        str(ROOT / "monitoring"),
        str(ROOT / "inkwave"),
    )

    def getconn(timeout: float | None = None) -> Any:
        conn = real_get(timeout)
        here = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(ours)]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in here[-3:])
        taken[id(conn)] = f"{_current_test[0]} ({where})"
        return conn

    def putconn(conn: Any) -> None:
        taken.pop(id(conn), None)
        real_put(conn)

    pool.getconn, pool.putconn = getconn, putconn
    yield
    pool.getconn, pool.putconn = real_get, real_put
    leaks = list(taken.values())
    if leaks:
        print(f"\npooled connections never given back: {leaks}")
    assert len(leaks) <= POOL_LEAKS_TOLERATED, f"{len(leaks)} pooled connections leaked: {leaks}"


@pytest.fixture(autouse=True)
def fresh_venue_baselines() -> None:
    """Each test's venue baselines are read from its own rows (a process keeps them from one
    quarter hour to the next)."""
    from orders import hours
    from orders.anomaly.live import forget_baselines

    forget_baselines()
    hours.forget()  # a rolled-back venue sends no signal


@pytest.fixture(autouse=True)
def fresh_monitor() -> Iterator[WebSocketMonitor]:
    """Each test counts from zero in this process, with no cached health."""
    from monitoring.health import WebSocketCheck, public_checks

    WebSocketCheck._cached = None
    public_checks.reset()
    yield reset_monitor()
    reset_monitor()
    WebSocketCheck._cached = None
    public_checks.reset()


@pytest.fixture(autouse=True)
def empty_task_queue() -> None:
    """Each test's Celery workers start with no task queued: the servers of earlier tests on
    this xdist worker queue tasks on its Redis broker that no worker took, and a worker a
    test started worked through hundreds of them before the test's own (the log
    correlation test timed out waiting for its task's line, once)."""
    if not settings.REDIS_URL:
        return
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.delete("celery")  # kombu's default queue: the one the workers read
    except redis.RedisError:
        pass  # a test with no Redis needs no queue emptied
    finally:
        client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    # Leave nothing of this run's channel layer behind.
    for key in client.scan_iter(f"{settings.CHANNEL_LAYER_PREFIX}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def venue(db: Any) -> Venue:
    return Venue.objects.create(name="Main Branch", slug="main-branch", timezone="Europe/London")


@pytest.fixture
def other_venue(db: Any) -> Venue:
    return Venue.objects.create(name="Harbour", slug="harbour")


@pytest.fixture
def venue_token(venue: Venue) -> str:
    _, raw = VenueAccessToken.issue(venue, "Kitchen screen")
    return raw


@pytest.fixture
def device(venue: Venue, venue_token: str) -> Client:
    """An HTTP client that speaks for the venue's device (its token as a bearer)."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}")


@pytest.fixture
def staff_user(db: Any) -> Any:
    return get_user_model().objects.create_user(
        "ops", "ops@example.com", "pw-ops-123", is_staff=True
    )


@pytest.fixture
def plain_user(db: Any) -> Any:
    return get_user_model().objects.create_user("waiter", "waiter@example.com", "pw-waiter-123")


def session_cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


# How long a test waits for the application to answer before calling it a failure. channels'
# 1 s default is a latency assertion in disguise: a loaded CI machine misses it now and then
# (admission runs database queries in a thread). Waiting longer costs nothing when it works.
ANSWER_TIMEOUT = 10.0


class PatientCommunicator(WebsocketCommunicator):
    """channels' WebsocketCommunicator whose waits fail only when nothing comes (its methods
    keep channels' signatures, `timeout` parameters included)."""

    async def connect(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().connect(timeout)

    async def receive_output(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_output(timeout)

    async def receive_from(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_json_from(timeout)

    async def wait(self, timeout: float = ANSWER_TIMEOUT) -> None:  # noqa: ASYNC109
        await super().wait(timeout)

    async def disconnect(
        self,
        code: int = 1000,
        timeout: float = ANSWER_TIMEOUT,  # noqa: ASYNC109
    ) -> None:
        await super().disconnect(code, timeout)


# --- notifications: routes and the local Slack server -------------------------------------


@pytest.fixture
def routes(db: Any) -> None:
    """The shipped routes (the data migration's), which a transactional test's flush removed."""
    create_default_routes(Destination, Route)


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    """The local Slack server, this process's settings untouched: for processes started with an
    environment of their own that names it."""
    with SlackServer() as server:
        yield server


@pytest.fixture
def slack(settings: Any, slack_server: SlackServer) -> SlackServer:
    """The local Slack server as this process's Slack Web API (bot token), with a 1 s timeout so
    that a hung reply fails a send quickly."""
    settings.SLACK_BOT_TOKEN = TOKEN
    settings.SLACK_API_URL = slack_server.api_url
    settings.SLACK_TIMEOUT_SECONDS = 1
    return slack_server


@pytest.fixture
def slack_channels(slack: SlackServer, routes: None) -> SlackServer:
    """`slack`, with the shipped destinations posting to #C0OPS (operations) and #C0ORD (orders)."""
    Destination.objects.filter(name="operations").update(slack_channel_id="C0OPS")
    Destination.objects.filter(name="orders").update(slack_channel_id="C0ORD")
    return slack


# --- real processes -----------------------------------------------------------------------


@pytest.fixture
def servers(
    transactional_db: None, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ServerGroup]:
    """Real daphne processes, started by the test (`servers.start(**env)`)."""
    # Stopped before the tables are flushed and before redis_client deletes the layer's keys.
    with ServerGroup(tmp_path / "servers") as group:
        yield group


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop or hang without touching the shared one."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(autouse=True)
def no_direct_alert_claims() -> None:
    """A direct alert claims its outage in Redis for DIRECT_ALERT_INTERVAL_SECONDS (so that
    processes on other hosts stay quiet); a claim left by an earlier test (or its server
    processes) would silence this test's first alert."""
    url = settings.REDIS_URL
    if not url:
        return
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter("inkwave:*:direct-alert:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
