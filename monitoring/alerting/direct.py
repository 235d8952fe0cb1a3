"""Alerts about a dependency that must not depend on it (the database, Redis).

The process that notices the outage (a web process's flusher, a worker's alert cycle)
sends straight to Slack with the configuration from the environment: no database, no
broker. It sends at most once per DIRECT_ALERT_INTERVAL_SECONDS per dependency, and
appends every alert to a spool file. Once the dependency answers again, the spool is
taken into the database: an incident with its timeline, the direct message recorded in
the outbox as sent, and a resolved reply threaded under it through the normal outbox.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings

from notifications.formatting import compose, utc_time
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
            entry = _send(dependency, error, at)
            spool.seek(0, os.SEEK_END)
            spool.write(json.dumps(entry) + "\n")
        logger.error(
            "dependency_down_alerted", dependency=dependency, sent=entry["sent"], error=error
        )
        return bool(entry["sent"])

    def reset(self, dependency: str) -> None:
        with self._lock:
            self._last_sent.pop(dependency, None)


alerter = DirectAlerter()


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
    entry: dict[str, Any] = {
        "dependency": dependency,
        "error": error[:500],
        "at": at.isoformat(),
        "text": message.text,
        "blocks": message.blocks,
        "sent": False,
        "ts": "",
        "channel": "",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
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
    return len(entries)
