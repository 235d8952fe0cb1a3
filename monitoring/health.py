"""Health checks: small classes run concurrently, each under its own timeout.

A hung dependency yields "unhealthy" after HEALTH_CHECK_TIMEOUT_SECONDS, never a hung
request. A check whose previous run is still stuck in its thread is not started again;
it reports a timeout at once, so a dead database cannot exhaust the thread pool.

The public /health goes through SharedChecks: however many probes arrive at once, one
run of the checks is in flight per process, and its result is reused for
HEALTH_CACHE_SECONDS, so anonymous traffic cannot turn into load on the dependencies
(or make a healthy instance look dead by queueing checks behind each other).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import redis.asyncio as aioredis
import structlog
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from inkwave.lib.redis_options import redis_options
from inkwave.logcontext import spawn

logger = structlog.get_logger(__name__)

T = TypeVar("T")


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DISABLED = "disabled"


class CheckFailed(Exception):
    """Raised by a check with a reason meant for logs and authenticated views only."""


class CheckDegraded(Exception):
    """Raised by a check that works but not fully ("degraded"), with the reason."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    required: bool
    latency_ms: float
    reason: str = ""


class HealthCheck:
    name: ClassVar[str]
    required: ClassVar[bool] = True

    def enabled(self) -> bool:
        return True

    async def check(self) -> Status:
        """Return a status or raise CheckFailed; a slow check is cut off by the runner."""
        raise NotImplementedError


# Blocking checks run on threads of their own, and the monitoring API's reads on others.
# On the event loop's default executor the checks queued behind everything else waiting
# there for the database (with it down, each read waits the pool's timeout), and /health
# took 2-6 s instead of its 1.5 s. A stuck check holds at most one thread per check (see
# ThreadedCheck), so one each is enough: five (database, migrations, table sizes, websocket,
# slack); reads beyond theirs wait and are cut by their timeout.
CHECK_THREADS = ThreadPoolExecutor(max_workers=5, thread_name_prefix="inkwave-health")
READ_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="inkwave-monitoring-read")


async def run_in_thread(func: Callable[[], T], executor: ThreadPoolExecutor = CHECK_THREADS) -> T:
    """Run `func` on `executor`; cancelling the await never waits for the thread, which
    finishes on its own (a blocking client cannot be interrupted)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor, context.run, func)


class ThreadedCheck(HealthCheck):
    """A check whose client blocks; runs in a thread.

    Concurrent callers (two probes a moment apart) each run it. Only when a run has been
    stuck for longer than the timeout does a new caller fail at once instead of starting
    yet another thread against a dependency that is known to hang.
    """

    _started: ClassVar[dict[str, float]] = {}

    def run_blocking(self) -> Status:
        raise NotImplementedError

    async def check(self) -> Status:
        started = self._started.get(self.name)
        if (
            started is not None
            and time.monotonic() - started > settings.HEALTH_CHECK_TIMEOUT_SECONDS
        ):
            raise CheckFailed("a previous run is still stuck")

        def run() -> Status:
            # Marked inside the thread: a run cancelled before it started leaves no mark.
            self._started.setdefault(self.name, time.monotonic())
            try:
                return self.run_blocking()
            finally:
                self._started.pop(self.name, None)

        return await run_in_thread(run)


class DatabaseCheck(ThreadedCheck):
    name = "database"

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias

    def run_blocking(self) -> Status:
        close_old_connections()
        try:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            connections[self.alias].close()
        return Status.HEALTHY


class RedisCheck(HealthCheck):
    """A PING on REDIS_URL, over one client per event loop that every run reuses."""

    name = "redis"

    # A redis.asyncio client belongs to the loop it first connected on.
    _clients: ClassVar[
        weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, float, aioredis.Redis]]
    ] = weakref.WeakKeyDictionary()

    def enabled(self) -> bool:
        return bool(settings.REDIS_URL)

    @classmethod
    def client(cls) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        url, timeout = settings.REDIS_URL, settings.HEALTH_CHECK_TIMEOUT_SECONDS
        cached = cls._clients.get(loop)
        if cached is not None and cached[:2] == (url, timeout):
            return cached[2]
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, **redis_options()
        )
        cls._clients[loop] = (url, timeout, client)
        return client

    async def check(self) -> Status:
        try:
            await self.client().ping()
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
        return Status.HEALTHY


def redis_reachable() -> bool:
    """A blocking PING with the health timeout, for threads without an event loop."""
    import redis

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **redis_options(),
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class ChannelLayerCheck(HealthCheck):
    """A message round trip through the layer that carries venue broadcasts.

    The round trip uses a normal channel (no "!"), never a process-local one:
    channels-redis serves every process-local channel of a process through one receive
    lock, and a connected consumer holds it for as long as it waits for its next message,
    so a process-local round trip waits behind the consumers and times out whenever
    clients are connected. A normal channel is read with its own BZPOPMIN, through the
    same pool, serializer and keys as the consumers' traffic. (channels-redis picks the
    host of a normal channel round robin; the settings configure one Redis host.)

    The channel's name is fixed per process, so a run cut off by the timeout leaves at most
    its ping behind in that one channel (channels-redis puts a ping cut off mid-receive
    back first); the next run reads it and skips it, as it is not its own nonce.
    """

    name = "channel_layer"
    channel = f"inkwave.health.{uuid.uuid4().hex}"
    # Pings left by runs that timed out before reading theirs; more means something else.
    MAX_STALE = 20

    async def check(self) -> Status:
        layer = get_channel_layer()
        if layer is None:
            raise CheckFailed("no channel layer configured")
        try:
            return await self._round_trip(layer)
        except CheckFailed:
            raise
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc

    async def _round_trip(self, layer: Any) -> Status:
        nonce = uuid.uuid4().hex
        await layer.send(self.channel, {"type": "health.ping", "nonce": nonce})
        for _ in range(self.MAX_STALE + 1):
            message = await layer.receive(self.channel)
            if message.get("nonce") == nonce:
                return Status.HEALTHY
        raise CheckFailed("the channel layer returned other messages than its ping")


class SlackDeliveryCheck(ThreadedCheck):
    """Slack refusing a destination for SLACK_OUTAGE_SECONDS or more degrades /health, never
    fails it: messages are kept and sent once it is back (notifications.delivery)."""

    name = "slack"
    required = False

    def run_blocking(self) -> Status:
        from notifications.models import Destination

        close_old_connections()
        try:
            now = timezone.now()
            cutoff = now - timedelta(seconds=settings.SLACK_OUTAGE_SECONDS)
            failing = list(
                Destination.objects.filter(enabled=True, failing_since__lte=cutoff)
                .order_by("failing_since")
                .values_list("name", "failing_since")
            )
        except DatabaseError as exc:
            raise CheckFailed(f"cannot read the destinations: {type(exc).__name__}") from exc
        finally:
            close_old_connections()
        if failing:
            where = ", ".join(
                f"#{name} for {(now - since).total_seconds():.0f}s"
                for name, since in failing
                if since is not None
            )
            raise CheckDegraded(f"Slack delivery failing: {where}")
        return Status.HEALTHY


class WebSocketCheck(ThreadedCheck):
    """The WebSocket service as the monitor sees it; degrades /health, never fails it."""

    name = "websocket"
    required = False

    # /health is public and probed often: the statistics behind it are reused this long.
    CACHE_SECONDS = 5.0
    _cached: ClassVar[tuple[float, Status] | None] = None

    def run_blocking(self) -> Status:
        from monitoring.stats import websocket_health

        cached = WebSocketCheck._cached
        if cached is not None and time.monotonic() - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        close_old_connections()
        try:
            status = Status(websocket_health()["status"])
        finally:
            close_old_connections()
        WebSocketCheck._cached = (time.monotonic(), status)
        return status


async def _run_one(check: HealthCheck, limit: float) -> CheckResult:
    started = time.perf_counter()

    def result(status: Status, reason: str = "") -> CheckResult:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return CheckResult(check.name, status, check.required, elapsed, reason)

    if not check.enabled():
        return result(Status.DISABLED)
    try:
        return result(await asyncio.wait_for(check.check(), limit))
    except TimeoutError:
        reason = f"timed out after {limit}s"
    except CheckDegraded as exc:
        logger.warning("health_check_degraded", check=check.name, reason=str(exc))
        return result(Status.DEGRADED, str(exc))
    except CheckFailed as exc:
        reason = str(exc)
    except Exception as exc:
        logger.exception("health_check_crashed", check=check.name)
        reason = f"{type(exc).__name__}: {exc}"
    logger.warning("health_check_failed", check=check.name, reason=reason)
    return result(Status.UNHEALTHY, reason)


async def run_checks(checks: list[HealthCheck], limit: float | None = None) -> list[CheckResult]:
    """Run every check at once; each gets `limit` seconds (HEALTH_CHECK_TIMEOUT_SECONDS)."""
    limit = settings.HEALTH_CHECK_TIMEOUT_SECONDS if limit is None else limit
    return list(await asyncio.gather(*(_run_one(check, limit) for check in checks)))


def overall_status(results: list[CheckResult]) -> Status:
    if any(r.required and r.status == Status.UNHEALTHY for r in results):
        return Status.UNHEALTHY
    if any(r.status in (Status.UNHEALTHY, Status.DEGRADED) for r in results):
        return Status.DEGRADED
    return Status.HEALTHY


def default_checks() -> list[HealthCheck]:
    return [
        DatabaseCheck(),
        WebSocketCheck(),
        RedisCheck(),
        ChannelLayerCheck(),
        SlackDeliveryCheck(),
    ]


class SharedChecks:
    """One run of the checks in flight per event loop, its result reused while fresh.

    Probes that arrive while a run is in flight wait for that run instead of starting
    their own; a result younger than HEALTH_CACHE_SECONDS (counted from when its run
    finished) is answered at once. A failure therefore shows within HEALTH_CACHE_SECONDS
    plus HEALTH_CHECK_TIMEOUT_SECONDS, and no probe waits longer than one timeout.
    """

    _result: tuple[float, list[CheckResult]] | None  # (finished, results)
    _inflight: tuple[asyncio.AbstractEventLoop, asyncio.Task[list[CheckResult]]] | None

    def __init__(
        self,
        checks: Callable[[], list[HealthCheck]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = checks
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._result = None
        self._inflight = None

    async def results(self) -> list[CheckResult]:
        if self._result is not None:
            finished, results = self._result
            if self.clock() - finished < settings.HEALTH_CACHE_SECONDS:
                return results
        loop = asyncio.get_running_loop()
        if self._inflight is None or self._inflight[0] is not loop:
            self._inflight = (loop, spawn(self._run()))
        # Shielded: a probe whose client went away must not cancel the others' run.
        return await asyncio.shield(self._inflight[1])

    async def _run(self) -> list[CheckResult]:
        try:
            results = await run_checks(self.checks())
            self._result = (self.clock(), results)
            return results
        finally:
            if self._inflight is not None and self._inflight[1] is asyncio.current_task():
                self._inflight = None


# What GET /health answers; tests reset it between cases (tests/conftest.py).
public_checks = SharedChecks(default_checks)
