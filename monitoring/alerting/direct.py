"""Alerts about a dependency that must not depend on it (the database, Redis).

The process that notices the outage (a web process's flusher, a worker's alert cycle)
sends straight to Slack with the configuration from the environment: no database, no
broker. It sends at most once per DIRECT_ALERT_INTERVAL_SECONDS per dependency, and
appends every alert to a spool file. Once the dependency answers again, the spool is
taken into the database: an incident with its timeline, the direct message recorded in
the outbox as sent, and a resolved reply threaded under it through the normal outbox.

Processes on other hosts (containers) share no spool: they agree on who sends through the
store that is *not* down (Redis for a database outage, the database for a Redis outage),
so one outage is one message. With both down, or no Redis configured, each host sends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings

from inkwave.lib.formats import utc_time
from inkwave.lib.redis_options import redis_options
from notifications.formatting import compose
from notifications.slack import SlackMessage, TransportError, transport_from_settings

logger = structlog.get_logger(__name__)

TITLES = {"database": "Database connection lost", "redis": "Redis unreachable"}


def spool_path() -> Path:
    return Path(settings.VAR_DIR) / "direct-alerts.jsonl"


def _open_spool(path: Path) -> Any:
    """Open (creating) the spool for reading and appending, readable by this user only.

    It holds error text and message contents, like the secret key beside it. O_NOFOLLOW
    refuses a symlink planted in its place; a spool left 0644 by an older version is
    narrowed on first use.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a+")


@contextmanager
def _locked_spool() -> Iterator[Any]:
    path = spool_path()
    with _open_spool(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DirectAlerter:
    def __init__(self) -> None:
        self._last_sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def alert(self, dependency: str, error: str) -> bool:
        """Send now unless this host did within the interval; spool it either way.

        The spool, under its file lock, is what every process on the host consults, so
        several web processes and workers noticing one outage send one message.
        """
        with self._lock:
            now = time.monotonic()
            last = self._last_sent.get(dependency)
            if last is not None and now - last < settings.DIRECT_ALERT_INTERVAL_SECONDS:
                return False
            self._last_sent[dependency] = now
        at = datetime.now(UTC)
        with _locked_spool() as spool:
            if _sent_recently(_read(spool), dependency, at):
                return False
            if claim(dependency):
                entry = _send(dependency, error, at)
            else:
                # Another host told Slack: this one only says it saw the outage too.
                entry = {**_entry(dependency, error, at), "elsewhere": True}
            spool.seek(0, os.SEEK_END)
            spool.write(json.dumps(entry) + "\n")
        logger.error(
            "dependency_down_alerted",
            dependency=dependency,
            sent=entry["sent"],
            by_another_host=bool(entry.get("elsewhere")),
            error=error,
        )
        return bool(entry["sent"])

    def reset(self, dependency: str) -> None:
        with self._lock:
            self._last_sent.pop(dependency, None)


alerter = DirectAlerter()


def claim_key(dependency: str) -> str:
    database = settings.DATABASES["default"].get("NAME", "")
    return f"inkwave:{database}:direct-alert:{dependency}"


def claim(dependency: str) -> bool:
    """Whether this process should send: the first to claim the outage in the other store
    within DIRECT_ALERT_INTERVAL_SECONDS does. If that store cannot be asked either, send:
    a duplicate is better than silence."""
    interval = settings.DIRECT_ALERT_INTERVAL_SECONDS
    try:
        if dependency == "redis":
            return _claim_in_database(claim_key(dependency), interval)
        if dependency == "database" and settings.REDIS_URL:
            return _claim_in_redis(claim_key(dependency), interval)
    except Exception as exc:
        logger.warning("direct_alert_claim_unavailable", dependency=dependency, error=str(exc))
    return True


def release(dependency: str) -> None:
    """The outage is over: the next one is news again. Best effort; the claim expires."""
    try:
        if dependency == "redis":
            from notifications.models import RateLimitSlot

            RateLimitSlot.objects.filter(key=claim_key(dependency)).delete()
        elif dependency == "database" and settings.REDIS_URL:
            with _redis() as client:
                client.delete(claim_key(dependency))
    except Exception as exc:
        logger.warning("direct_alert_release_failed", dependency=dependency, error=str(exc))


def _claim_in_database(key: str, interval: int) -> bool:
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from notifications.models import RateLimitSlot

    now = timezone.now()
    until = now + timedelta(seconds=interval)
    if RateLimitSlot.objects.filter(key=key, next_free_at__lte=now).update(next_free_at=until):
        return True
    try:
        with transaction.atomic():
            RateLimitSlot.objects.create(key=key, next_free_at=until)
    except IntegrityError:
        return False  # claimed, and not yet expired
    return True


@contextmanager
def _redis() -> Iterator[Any]:
    import redis

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **redis_options(),
    )
    try:
        yield client
    finally:
        client.close()


def _claim_in_redis(key: str, interval: int) -> bool:
    with _redis() as client:
        return bool(client.set(key, f"{socket.gethostname()}:{os.getpid()}", nx=True, ex=interval))


def _entry(dependency: str, error: str, at: datetime) -> dict[str, Any]:
    return {
        "dependency": dependency,
        "error": error[:500],
        "at": at.isoformat(),
        "text": "",
        "blocks": [],
        "sent": False,
        "ts": "",
        "channel": "",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _send(dependency: str, error: str, at: datetime) -> dict[str, Any]:
    title = TITLES.get(dependency, f"{dependency} unreachable")
    message = compose(
        f"🔴 {title}",
        [
            ("Detected by", f"{socket.gethostname()} (pid {os.getpid()})"),
            ("Error", error[:500] or "no answer"),
            ("Time", utc_time(at)),
            ("Action Required", f"Check {dependency}; this was sent without it."),
        ],
    )
    entry = {**_entry(dependency, error, at), "text": message.text, "blocks": message.blocks}
    try:
        delivered = transport_from_settings().notify(
            SlackMessage(
                text=message.text,
                blocks=message.blocks,
                channel=settings.SLACK_OPERATIONS_CHANNEL_ID,
            ),
            webhook_url=settings.SLACK_WEBHOOK_URL,
        )
        entry.update(sent=True, ts=delivered.ts, channel=delivered.channel)
    except TransportError as exc:
        logger.error("direct_alert_failed", dependency=dependency, error=str(exc))
    return entry


def _read(spool: Any) -> list[dict[str, Any]]:
    spool.seek(0)
    entries = []
    for line in spool:
        try:
            entries.append(json.loads(line))
        except ValueError:
            # A line cut short (a process killed mid-write, a full disk): not an alert.
            logger.warning("direct_alert_spool_line_skipped", line=line[:200])
    return entries


def _sent_recently(entries: list[dict[str, Any]], dependency: str, at: datetime) -> bool:
    interval = settings.DIRECT_ALERT_INTERVAL_SECONDS
    for entry in entries:
        if entry.get("dependency") != dependency or not entry.get("sent"):
            continue
        try:
            when = datetime.fromisoformat(entry["at"])
        except (KeyError, TypeError, ValueError):
            continue
        if (at - when).total_seconds() < interval:
            return True
    return False


def take_spool(dependency: str) -> list[dict[str, Any]]:
    """Remove and return the spooled alerts about one dependency."""
    with _locked_spool() as spool:
        entries = _read(spool)
        mine = [e for e in entries if e.get("dependency") == dependency]
        if mine:
            spool.seek(0)
            spool.truncate()
            for entry in entries:
                if entry.get("dependency") != dependency:
                    spool.write(json.dumps(entry) + "\n")
    return mine


def record_recovery(dependency: str, now: datetime | None = None) -> int:
    """The dependency answers again: record what was sent without it, and say it recovered.

    Needs the database; call it only when the database works. Returns the alerts recorded.
    """
    entries = take_spool(dependency)
    if not entries:
        return 0
    from monitoring.alerting.recovery import record

    try:
        record(dependency, entries, now or datetime.now(UTC))
    except Exception:
        # Put them back for the next try rather than lose them.
        with _locked_spool() as spool:
            for entry in entries:
                spool.write(json.dumps(entry) + "\n")
        raise
    alerter.reset(dependency)
    release(dependency)
    return len(entries)


def on_dependency_down(dependency: str, error: str) -> None:
    """The sampler's hook: a flush failed for want of `dependency`."""
    alerter.alert(dependency, error)


def on_flushed(redis_answers: bool) -> None:
    """The sampler's hook: the database works (a flush wrote to it), and Redis too if it
    answered: record what was sent without them."""
    try:
        record_recovery("database")
        if redis_answers:
            record_recovery("redis")
    except Exception:
        logger.warning("direct_alert_recovery_failed", exc_info=True)
