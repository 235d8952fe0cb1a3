"""Sending an event to every member of a venue's room, on every web process."""

from __future__ import annotations

import asyncio
import json
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
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    await layer.group_send(venue_group_name(venue_id), venue_event_message(event, data, seq))


async def _bounded_broadcast(venue_id: int, event: str, data: Any, seq: int | None) -> bool:
    try:
        async with asyncio.timeout(settings.ORDER_BROADCAST_TIMEOUT_SECONDS):
            await abroadcast_to_venue(venue_id, event, data, seq)
    except Exception as exc:
        # Runs on the server's event loop, the monitor's only writer.
        get_monitor().track_error("broadcast_failed")
        logger.warning(
            "venue_broadcast_failed",
            venue=venue_id,
            room_event=event,  # structlog's own first argument is called "event"
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        )
        return False
    return True


def broadcast_to_venue(
    venue_id: int, event: RoomEvent, data: Any, *, seq: int | None = None
) -> bool:
    """Send to the venue's room, waiting ORDER_BROADCAST_TIMEOUT_SECONDS at most.

    Called on a request's path (after the commit): a hung Redis must not hold the answer
    for its socket timeout. A broadcast that fails or times out is logged and counted
    (`broadcast_failed`); the event itself is recorded (OrderEvent) by the caller with its
    `seq`, and the room's clients get it when they resume. Returns whether the layer took it.
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
