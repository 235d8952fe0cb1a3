"""Sending an event to every member of a venue's room, on every web process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, TypedDict, Unpack

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from monitoring.monitor import get_monitor
from orders.groups import room_user_group_name, venue_group_name
from orders.protocol import EventFrame, RoomEvent

logger = structlog.get_logger(__name__)


def event_frame(event: str, data: Any, seq: int | None, sent_at: float) -> str:
    body: EventFrame = {"type": "event", "event": str(event), "data": data, "sentAt": sent_at}
    if seq is not None:
        body["seq"] = seq
    # Serialised once here rather than once per member in each consumer.
    return json.dumps(
        body,
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
        allow_nan=False,  # NaN and Infinity are not JSON: a bug here must raise, not reach clients
    )


def venue_event_message(event: str, data: Any, seq: int | None = None) -> dict[str, Any]:
    sent_at = time.time()
    return {
        "type": "venue.event",
        "frame": event_frame(event, data, seq, sent_at),
        "sent_at": sent_at,
        "seq": seq,
    }


async def abroadcast_to_venue(venue_id: int, event: str, data: Any, seq: int | None = None) -> None:
    await _send_event(venue_id, venue_event_message(event, data, seq))


async def _bounded_broadcast(venue_id: int, event: str, data: Any, seq: int | None) -> bool:
    message = venue_event_message(event, data, seq)
    try:
        async with asyncio.timeout(settings.ORDER_BROADCAST_TIMEOUT_SECONDS):
            await _send_event(venue_id, message)
    except Exception as exc:
        # Runs on the server's event loop, the monitor's only writer.
        get_monitor().track_error("broadcast_failed")
        logger.warning(
            "venue_broadcast_failed",
            venue=venue_id,
            room_event=event,  # structlog's own first argument is called "event"
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        )
        retries.later(venue_id, event, message)
        return False
    return True


async def _send_event(venue_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    await layer.group_send(venue_group_name(venue_id), message)


class Retries:
    """Broadcasts that failed, sent again in the background after 1, 2, 4, 8 and 15 s.

    A screen that missed an event learns of it from the next one's `seq` (a gap it fills
    from the record) or when it reconnects: in a quiet room that can be minutes (the soak's
    attack made 0.5 s broadcasts time out, and screens got those orders up to 39 s late). The
    same frame is sent again, `seq` and `sentAt` included: a screen that has it already drops
    it by its `seq`. Its own thread and event loop, so that a retry outlives the request (and
    the temporary loop of a caller without one, such as a Celery task); at most MAX_PENDING
    wait, past that a failure is left to the screens' resume, as before.
    """

    DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
    MAX_PENDING = 1000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending = 0

    def later(self, venue_id: int, event: str, message: dict[str, Any]) -> None:
        with self.lock:
            if self.pending >= self.MAX_PENDING:
                logger.warning("venue_broadcast_retry_dropped", venue=venue_id, room_event=event)
                return
            self.pending += 1
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self.loop.run_forever, name="inkwave-broadcast-retry", daemon=True
                ).start()
            loop = self.loop
        asyncio.run_coroutine_threadsafe(self._retry(venue_id, event, message), loop)

    async def _retry(self, venue_id: int, event: str, message: dict[str, Any]) -> None:
        try:
            for attempt, delay in enumerate(self.DELAYS, start=1):
                await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(settings.ORDER_BROADCAST_TIMEOUT_SECONDS * 4):
                        await _send_event(venue_id, message)
                except Exception:  # noqa: S112 -- the next attempt, or the screens' resume
                    continue
                logger.info(
                    "venue_broadcast_retried", venue=venue_id, room_event=event, attempt=attempt
                )
                return
            logger.warning("venue_broadcast_given_up", venue=venue_id, room_event=event)
        finally:
            with self.lock:
                self.pending -= 1


retries = Retries()


def broadcast_to_venue(
    venue_id: int, event: RoomEvent, data: Any, *, seq: int | None = None
) -> bool:
    """Send to the venue's room, waiting ORDER_BROADCAST_TIMEOUT_SECONDS at most.

    Called on a request's path (after the commit): a hung Redis must not hold the answer
    for its socket timeout. A broadcast that fails or times out is logged and counted
    (`broadcast_failed`) and sent again in the background (`Retries`); the event itself is
    recorded (OrderEvent) by the caller with its `seq`, and the room's clients get it from a
    retry, from the next event's gap, or when they resume. Returns whether the layer took it.
    """
    return async_to_sync(_bounded_broadcast)(venue_id, event, data, seq)


class AccessFilter(TypedDict, total=False):
    """Which members of a group a re-check is for; none given means all of them."""

    token: int
    user: int


def _send_to_group(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(group, message)


def recheck_venue_access(venue_id: int, **only: Unpack[AccessFilter]) -> None:
    """Make a venue room's connections (those of one token or user) re-check their grant.

    Every web process gets it through the channel layer; each connection that matches asks
    its process's watch (orders/watch.py) to re-check it, and closes if its grant lapsed.
    """
    _send_to_group(venue_group_name(venue_id), {"type": "access.recheck", **only})


def recheck_user_access(user_id: int) -> None:
    """Make one signed-in user's room connections, in every venue, re-check their grant."""
    _send_to_group(room_user_group_name(user_id), {"type": "access.recheck"})


def end_session_access(user_id: int, session_key: str) -> None:
    """Close the room connections that this session (logged out now) authenticated."""
    message = {"type": "access.session_ended", "session": session_key}
    _send_to_group(room_user_group_name(user_id), message)
