"""What a reconnecting room client missed: the venue's recorded events after a number.

Every event told to a venue's room is recorded with its number in the room's sequence
(orders.events); a client that says the last number it saw is sent the events after it, in
order, from those records. When that cannot be done from what is kept (too many, too old,
pruned, or a number the room never reached), the client is told to reload its state
instead (`resync`), from GET /api/v1/venues/<id>/orders, which carries the number to resume
after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from orders.broadcast import event_frame
from orders.models import OrderEvent, Venue
from orders.protocol import ResyncReason


@dataclass(frozen=True)
class Replay:
    current: int  # the room's number when read: what a client is up to date with after this
    frames: list[tuple[int, str]] = field(default_factory=list)  # (seq, the event frame)
    resync: ResyncReason | None = None  # why the events cannot be replayed


def current_seq(venue_id: int) -> int:
    return Venue.objects.values_list("room_seq", flat=True).get(pk=venue_id)


def since(venue_id: int, after: int, now: datetime | None = None) -> Replay:
    """The events of the venue's room numbered after `after`, up to the current number."""
    now = now or timezone.now()
    current = current_seq(venue_id)
    if after > current:
        return Replay(current, resync=ResyncReason.UNKNOWN)
    missing = current - after
    if missing == 0:
        return Replay(current)
    if missing > settings.ROOM_REPLAY_MAX_EVENTS:
        return Replay(current, resync=ResyncReason.TOO_MANY)
    rows = list(
        OrderEvent.objects.filter(venue_id=venue_id, seq__gt=after, seq__lte=current)
        .order_by("seq")
        .values_list("seq", "room_event", "room_data", "created_at")
    )
    if len(rows) != missing:
        return Replay(current, resync=ResyncReason.PRUNED)
    if rows[0][3] < now - timedelta(seconds=settings.ROOM_REPLAY_MAX_AGE_SECONDS):
        return Replay(current, resync=ResyncReason.TOO_OLD)
    frames = [
        (seq, event_frame(event, data, seq, created.timestamp()))
        for seq, event, data, created in rows
        if seq is not None
    ]
    return Replay(current, frames)
