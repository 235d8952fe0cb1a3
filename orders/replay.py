"""What a reconnecting room client missed: the venue's recorded events after a number.

Every event told to a venue's room is recorded with its number in the room's sequence
(orders.events); a client that says the last number it saw is sent the events after it, in
order, from those records. When that cannot be done from what is kept (too many, too old,
pruned, or a number the room never reached), the client is told to reload its state
instead (`resync`), from GET /api/v1/venues/<id>/orders, which carries the number to resume
after.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
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
    return states({venue_id: current_seq(venue_id)}, [(venue_id, after)], now)[0]


def states(
    current: dict[int, int], asks: Sequence[tuple[int, int | None]], now: datetime | None = None
) -> list[Replay]:
    """For each (venue, after), what a client that saw up to `after` is sent, given each
    venue's `current` number read (after the asking connections joined the room). `after`
    None: nothing to replay, only the number. One query for them all, whatever the number of
    venues: the events after the lowest `after` of each venue that can be replayed."""
    now = now or timezone.now()
    lowest: dict[int, int] = {}
    for venue_id, after in asks:
        if after is not None and _replayable(current[venue_id], after):
            lowest[venue_id] = min(after, lowest.get(venue_id, after))
    rows: dict[int, list[tuple[int, str, datetime]]] = {venue_id: [] for venue_id in lowest}
    if lowest:
        wanted = Q()
        for venue_id, after in lowest.items():
            wanted |= Q(venue_id=venue_id, seq__gt=after, seq__lte=current[venue_id])
        for venue_id, seq, event, data, created in (
            OrderEvent.objects.filter(wanted)
            .order_by("venue_id", "seq")
            .values_list("venue_id", "seq", "room_event", "room_data", "created_at")
        ):
            if seq is not None:
                rows[venue_id].append(
                    (seq, event_frame(event, data, seq, created.timestamp()), created)
                )
    return [_state(current[v], after, rows.get(v, []), now) for v, after in asks]


def _replayable(current: int, after: int) -> bool:
    return 0 < current - after <= settings.ROOM_REPLAY_MAX_EVENTS


def _state(
    current: int, after: int | None, rows: list[tuple[int, str, datetime]], now: datetime
) -> Replay:
    if after is None or after == current:
        return Replay(current)
    if after > current:
        return Replay(current, resync=ResyncReason.UNKNOWN)
    if not _replayable(current, after):
        return Replay(current, resync=ResyncReason.TOO_MANY)
    first = bisect_right(rows, after, key=lambda row: row[0])
    missing = rows[first:]
    if len(missing) != current - after:
        return Replay(current, resync=ResyncReason.PRUNED)
    if missing[0][2] < now - timedelta(seconds=settings.ROOM_REPLAY_MAX_AGE_SECONDS):
        return Replay(current, resync=ResyncReason.TOO_OLD)
    return Replay(current, [(seq, frame) for seq, frame, _ in missing])
