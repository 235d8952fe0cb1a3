"""Health checks: small classes run concurrently, each under its own timeout.

A hung dependency yields "unhealthy" after HEALTH_CHECK_TIMEOUT_SECONDS, never a hung
request. A check whose previous run is still stuck in its thread is not started again;
it reports a timeout at once, so a dead database cannot exhaust the thread pool.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import redis.asyncio as aioredis
import structlog
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections

logger = structlog.get_logger(__name__)


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DISABLED = "disabled"


class CheckFailed(Exception):
    """Raised by a check with a reason meant for logs and authenticated views only."""


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

        return await sync_to_async(run, thread_sensitive=False)()


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
    name = "redis"

    def enabled(self) -> bool:
        return bool(settings.REDIS_URL)

    async def check(self) -> Status:
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        client = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            await client.ping()
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            await client.aclose()
        return Status.HEALTHY


def redis_reachable() -> bool:
    """A blocking PING with the health timeout, for threads without an event loop."""
    import redis

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class ChannelLayerCheck(HealthCheck):
    """A message round trip through the layer that carries venue broadcasts."""

    name = "channel_layer"

    async def check(self) -> Status:
        layer = get_channel_layer()
        if layer is None:
            raise CheckFailed("no channel layer configured")
        try:
            channel = await layer.new_channel("health.")
            await layer.send(channel, {"type": "health.ping"})
            message = await layer.receive(channel)
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
        if message.get("type") != "health.ping":
            raise CheckFailed("the channel layer returned another message")
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
    return [DatabaseCheck(), WebSocketCheck(), RedisCheck(), ChannelLayerCheck()]
