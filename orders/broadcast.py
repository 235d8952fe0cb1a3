"""Sending an event to every member of a venue's room, on every web process."""

from __future__ import annotations

import json
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder

from orders.groups import venue_group_name


def venue_event_message(event: str, data: Any) -> dict[str, Any]:
    sent_at = time.time()
    # Serialised once here rather than once per member in each consumer.
    frame = json.dumps(
        {"type": "event", "event": event, "data": data, "sentAt": sent_at},
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
    )
    return {"type": "venue.event", "frame": frame, "sent_at": sent_at}


async def abroadcast_to_venue(venue_id: int, event: str, data: Any) -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    await layer.group_send(venue_group_name(venue_id), venue_event_message(event, data))


def broadcast_to_venue(venue_id: int, event: str, data: Any) -> None:
    async_to_sync(abroadcast_to_venue)(venue_id, event, data)


def revoke_in_venue(
    venue_id: int, *, token_id: int | None = None, user_id: int | None = None
) -> None:
    """Close the room connections of a revoked token or of a person who lost access."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "venue.revoke", "token": token_id, "user": user_id}
    async_to_sync(layer.group_send)(venue_group_name(venue_id), message)
