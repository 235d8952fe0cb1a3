"""Order requests while the database is unreachable: answered at once, recorded later.

A request that meets the outage waits for the database once, at most the connection
timeout (DATABASE_CONNECT_TIMEOUT, the pool's wait), and is answered 503 with
`Retry-After: API_RETRY_AFTER_SECONDS`. From then on the process holds the database for
down: every order request is answered 503 at once, without touching it, while a thread
probes the database about once a second (never on a request's time). The first probe that
gets an answer opens the gate again.

A write that could not be recorded (POST, PATCH) is appended to a spool file in
INKWAVE_VAR_DIR, which survives a restart of the process. Once the database answers (the
probe, or the first request that gets through after a restart), the spool is taken into
the database: an OrderEvent per refused request (`order.creation_failed` or
`order.update_failed`, with `refusedAt`), attributed to a venue only where the request's
device token proves it (a session cannot be checked without the database), and one
message to Slack that counts them. A refusal that could not even be spooled (a full disk)
is counted in memory and announced with the next batch.

Recording is idempotent: each spooled refusal carries an id, stored in its event's payload
(`spoolId`). A commit whose answer was lost (the connection cut after COMMIT was sent) puts
the entries back, and the next drain skips those the database already holds, so nothing is
recorded or announced twice.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import structlog
from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    transaction,
)
from django.db import connection as db_connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from inkwave.api_errors import is_database_unreachable
from inkwave.lib.formats import plural, utc_time
from notifications.formatting import compose
from notifications.models import NotificationKind
from notifications.outbox import enqueue
from orders.models import Order, OrderEvent, OrderEventKind, Venue, VenueAccessToken, hash_token

logger = structlog.get_logger(__name__)

# How often a process whose database is down tries it again, in the background.
PROBE_INTERVAL_SECONDS = 1.0
REASON = "database unavailable"


class RefusedRequest(TypedDict, total=False):
    id: str  # unique per refusal; absent in spools written before ids were kept
    at: str
    method: str
    venue: int | None
    order: int | None
    table: str
    changes: dict[str, str]
    token: str | None  # the SHA-256 of the device token, as the database stores it


def unavailable_response() -> JsonResponse:
    retry_after = settings.API_RETRY_AFTER_SECONDS
    response = JsonResponse(
        {
            "error": {
                "code": "unavailable",
                "message": f"The database is unavailable; retry in {retry_after} s.",
                "retryAfter": retry_after,
            }
        },
        status=503,
    )
    response["Retry-After"] = str(retry_after)
    return response


# --- the spool ----------------------------------------------------------------------------


def spool_path() -> Path:
    return Path(settings.VAR_DIR) / "orders-refused.jsonl"


@contextmanager
def _locked_spool() -> Iterator[Any]:
    # Readable by this user only (it holds venue and table names); a planted symlink is refused.
    fd = os.open(spool_path(), os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(handle: Any) -> list[RefusedRequest]:
    handle.seek(0)
    entries = []
    for line in handle:
        try:
            entries.append(json.loads(line))
        except ValueError:
            logger.warning("orders_refused_spool_line_skipped", line=line[:200])
    return entries


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def refused_request(request: HttpRequest, order_id: int | None) -> RefusedRequest:
    """What the refused request asked for, read without the database (the body unchecked)."""
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    data = data if isinstance(data, dict) else {}
    venue = data.get("venue")
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    token = raw.strip() if scheme.lower() == "bearer" and 0 < len(raw.strip()) <= 100 else ""
    return {
        "id": f"{random.getrandbits(96):024x}",
        "at": datetime.now(UTC).isoformat(),
        "method": request.method or "",
        "venue": venue if isinstance(venue, int) and not isinstance(venue, bool) else None,
        "order": order_id,
        "table": _text(data.get("table"), 50),
        "changes": {k: _text(data.get(k), 20) for k in ("status", "paymentStatus") if k in data},
        "token": hash_token(token) if token else None,
    }


# --- the gate -----------------------------------------------------------------------------


class DatabaseGate:
    """Per process: whether order requests may try the database, and what waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = False
        self._probing = False
        self._next_probe = 0.0
        self._unspooled = 0
        # None: not looked at yet since the process started (a spool may be left over).
        self._spool_pending: bool | None = None
        self._draining = False

    def admits(self) -> bool:
        if not self.down:
            return True
        with self._lock:
            if self.down and not self._probing and time.monotonic() >= self._next_probe:
                self._probing = True
                threading.Thread(target=self._probe, name="orders-db-probe", daemon=True).start()
        return not self.down

    def trip(self, exc: BaseException) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
            self._next_probe = time.monotonic() + PROBE_INTERVAL_SECONDS
        logger.error("orders_database_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])

    def refuse(self, entry: RefusedRequest) -> None:
        try:
            with _locked_spool() as spool:
                spool.write(json.dumps(entry) + "\n")
        except OSError:
            logger.exception("orders_refused_spool_failed")
            with self._lock:
                self._unspooled += 1
            return
        self._spool_pending = True

    def got_through(self) -> None:
        """A request used the database: record what the spool holds, if anything."""
        if self._spool_pending is False or self._draining:
            return
        if self._spool_pending is None:
            self._spool_pending = _spool_size() > 0 or self._unspooled > 0
            if not self._spool_pending:
                return
        self._start_drain()

    def _start_drain(self) -> None:
        with self._lock:
            if self._draining:
                return
            self._draining = True
        threading.Thread(target=self._drain, name="orders-refused-drain", daemon=True).start()

    def _probe(self) -> None:
        close_old_connections()
        try:
            db_connection.ensure_connection()
            with db_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            with self._lock:
                self._next_probe = time.monotonic() + PROBE_INTERVAL_SECONDS
                self._probing = False
            return
        finally:
            db_connection.close()  # this thread ends: its connection must not outlive it
        with self._lock:
            self.down = False
            self._probing = False
        logger.info("orders_database_available")
        self._drain()

    def _drain(self) -> None:
        with self._lock:
            self._draining = True
            unspooled, self._unspooled = self._unspooled, 0
        close_old_connections()
        try:
            recorded = record_refused(unspooled)
            self._spool_pending = False
            if recorded:
                logger.warning("orders_refused_recorded", requests=recorded)
        except Exception:
            logger.warning("orders_refused_record_failed", exc_info=True)
            with self._lock:
                self._unspooled += unspooled
        finally:
            db_connection.close()
            with self._lock:
                self._draining = False


gate = DatabaseGate()


def rides_through_database_outages(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """An order view answers 503 + Retry-After at once while the database is down."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not gate.admits():
            return _refused(request, kwargs.get("order_id"))
        try:
            response = view(request, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if not is_database_unreachable(exc):
                raise
            gate.trip(exc)
            return _refused(request, kwargs.get("order_id"))
        gate.got_through()
        return response

    return wrapper


def _refused(request: HttpRequest, order_id: int | None) -> JsonResponse:
    if request.method in ("POST", "PATCH"):
        gate.refuse(refused_request(request, order_id))
    return unavailable_response()


# --- recording what was refused, once the database answers --------------------------------


def _spool_size() -> int:
    try:
        return spool_path().stat().st_size
    except FileNotFoundError:
        return 0


def take_spool() -> list[RefusedRequest]:
    if not _spool_size():
        return []
    with _locked_spool() as spool:
        entries = _read(spool)
        spool.seek(0)
        spool.truncate()
    return entries


def _put_back(entries: list[RefusedRequest]) -> None:
    with _locked_spool() as spool:
        for entry in entries:
            spool.write(json.dumps(entry) + "\n")


def record_refused(unspooled: int = 0) -> int:
    """Record the spooled refusals (and announce them with `unspooled` more); needs the
    database. Returns how many were recorded. On failure they are put back for next time;
    those a lost commit did record are skipped then."""
    entries = take_spool()
    if not entries and not unspooled:
        return 0
    try:
        with transaction.atomic():
            entries = _not_yet_recorded(entries)
            if entries or unspooled:
                _record(entries, unspooled)
    except Exception:
        _put_back(entries)
        raise
    return len(entries)


def _not_yet_recorded(entries: list[RefusedRequest]) -> list[RefusedRequest]:
    ids = [e["id"] for e in entries if isinstance(e.get("id"), str)]
    if not ids:
        return entries
    found = OrderEvent.objects.filter(
        kind__in=[OrderEventKind.CREATION_FAILED, OrderEventKind.UPDATE_FAILED],
        payload__spoolId__in=ids,
    )
    # An event is written after its refusal: the (kind, created_at) index bounds the search
    # (with a day's margin for another host's clock).
    times = [_parsed(e.get("at")) for e in entries]
    if all(times):
        found = found.filter(created_at__gte=min(t for t in times if t) - timedelta(days=1))
    recorded = set(found.values_list("payload__spoolId", flat=True))
    return [e for e in entries if e.get("id") not in recorded]


def _parsed(at: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        return None


def _record(entries: list[RefusedRequest], unspooled: int) -> None:
    hashes = {e["token"] for e in entries if e.get("token")}
    token_venues = dict(
        VenueAccessToken.objects.filter(token_hash__in=hashes, revoked_at__isnull=True).values_list(
            "token_hash", "venue_id"
        )
    )
    order_ids = {e["order"] for e in entries if e.get("order") is not None}
    order_venues = dict(Order.objects.filter(pk__in=order_ids).values_list("pk", "venue_id"))
    per_venue: Counter[int | None] = Counter()
    events = []
    for entry in entries:
        token_venue = token_venues.get(entry.get("token") or "")
        order_id = entry.get("order")
        claimed = order_venues.get(order_id) if order_id is not None else entry.get("venue")
        # Attributed only where the device's token proves the venue; unchecked otherwise.
        venue_id = claimed if claimed is not None and claimed == token_venue else None
        per_venue[venue_id] += 1
        payload: dict[str, Any] = {"reason": REASON, "refusedAt": entry.get("at", "")}
        if entry.get("id"):
            payload["spoolId"] = entry["id"]
        if entry.get("method") == "PATCH":
            kind = OrderEventKind.UPDATE_FAILED
            payload["changes"] = entry.get("changes", {})
        else:
            kind = OrderEventKind.CREATION_FAILED
            payload.update(errors={}, table=entry.get("table", ""))
        events.append(
            OrderEvent(
                kind=kind,
                venue_id=venue_id,
                order_id=order_id if venue_id is not None else None,
                payload=payload,
            )
        )
    OrderEvent.objects.bulk_create(events)
    _announce(entries, per_venue, unspooled)


def _announce(
    entries: list[RefusedRequest], per_venue: Counter[int | None], unspooled: int
) -> None:
    names = dict(
        Venue.objects.filter(pk__in=[v for v in per_venue if v is not None]).values_list(
            "pk", "name"
        )
    )
    # "unchecked": a session's request, or a token that does not prove the venue it named.
    by_venue = ", ".join(
        f"{names.get(v, 'unchecked') if v is not None else 'unchecked'}: {n}"
        for v, n in sorted(per_venue.items(), key=lambda item: -item[1])
    )
    creations = sum(1 for e in entries if e.get("method") != "PATCH")
    times = sorted(e["at"] for e in entries if e.get("at"))
    fields = [
        ("New orders", str(creations)),
        ("Order updates", str(len(entries) - creations)),
        *([("By venue", by_venue)] if by_venue else []),
        *([("Not spooled (counted only)", str(unspooled))] if unspooled else []),
    ]
    if times:
        fields.append(("From", utc_time(datetime.fromisoformat(times[0]))))
        fields.append(("To", utc_time(datetime.fromisoformat(times[-1]))))
    enqueue(
        NotificationKind.ORDER_FAILED,
        compose(
            f"❌ {plural(len(entries) + unspooled, 'order request')} refused: database unavailable",
            fields,
            note=(
                "Each was answered 503 with Retry-After and changed nothing; devices that "
                "retried went through then. Each is recorded in the order history."
            ),
        ),
        context={"reason": REASON, "refused": len(entries) + unspooled},
    )
