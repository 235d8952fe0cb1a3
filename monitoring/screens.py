"""Screens online per venue: recorded by each web process at its flush, summed at read time.

The process's room hub (orders.hub, above this app) knows how many connections each venue's
room has in this process; it is handed in at start-up (`count_screens_with`) and read once
per flush, never per connection (invariant 1). Each process writes a row per venue it
holds a screen of, and a 0 for a venue whose last screen left since the flush before,
so a process's latest row for a venue says how many it holds. A count is written when it
changes and every KEEPALIVE_SECONDS otherwise. A process that died writes nothing more, and
its rows stop counting once it is no longer live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Min

from monitoring import figures
from monitoring.alerting.replay import EpochBucket
from monitoring.models import VenueScreenSample, WebSocketSample

# venue id -> screens connected to this process now.
ScreenCounter = Callable[[], dict[int, int]]


def _nothing() -> dict[int, int]:
    return {}


_counter: ScreenCounter = _nothing


def count_screens_with(counter: ScreenCounter) -> None:
    """Called once at start-up by the app that holds the rooms."""
    global _counter
    _counter = counter


# A venue's count is written when it changes, and at least this often while it holds screens
# (at most half of screens_over's minute, so every minute has a row of every process that
# held a screen in it): a kitchen's two screens all evening are not a row per flush.
KEEPALIVE_SECONDS = 30


class ScreenRecorder:
    """One per web process (the flusher's): what it wrote last for each venue, and when."""

    def __init__(self) -> None:
        self.written: dict[int, tuple[int, datetime]] = {}

    def flush(self, sample: WebSocketSample) -> None:
        counts = {venue: n for venue, n in _counter().items() if n > 0}
        at = sample.recorded_at
        due = {venue: n for venue, n in counts.items() if self._due(venue, n, at)}
        left = set(self.written) - set(counts)  # their last screen left: a 0, once
        record(sample.worker_id, at, {**due, **dict.fromkeys(left, 0)})
        # Only once written: after a failed flush the next one writes what changed.
        for venue in left:
            del self.written[venue]
        self.written.update((venue, (n, at)) for venue, n in due.items())

    def _due(self, venue: int, screens: int, at: datetime) -> bool:
        last = self.written.get(venue)
        return (
            last is None
            or last[0] != screens
            or at - last[1] >= timedelta(seconds=KEEPALIVE_SECONDS)
        )


def record(worker_id: int, at: datetime, counts: dict[int, int]) -> None:
    VenueScreenSample.objects.bulk_create(
        VenueScreenSample(worker_id=worker_id, recorded_at=at, venue_id=venue, screens=n)
        for venue, n in counts.items()
    )


def screens_now(venue_id: int, now: datetime) -> int:
    """The venue's screens on every live web process: each one's latest row for the venue."""
    live = [worker.pk for worker in figures.live_workers(now)]
    if not live:
        return 0
    cutoff = now - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS + KEEPALIVE_SECONDS)
    latest: dict[int, tuple[datetime, int]] = {}
    rows = VenueScreenSample.objects.filter(
        venue_id=venue_id, worker_id__in=live, recorded_at__gt=cutoff, recorded_at__lte=now
    ).values_list("worker_id", "recorded_at", "screens")
    for worker, at, screens in rows:
        if worker not in latest or at > latest[worker][0]:
            latest[worker] = (at, screens)
    return sum(screens for _, screens in latest.values())


def screens_over(
    venue_id: int, start: datetime, end: datetime, minutes: int = 1
) -> list[tuple[datetime, int]]:
    """Screens online in each `minutes`-long bucket of (start, end], summed over processes.

    Each process counts with the fewest screens it held in the bucket (so a screen that
    dropped off shows in the bucket it dropped in, not a bucket later); a process with no
    row in a bucket held none (it writes one at least every KEEPALIVE_SECONDS while it
    holds one). `minutes` must be at least a minute for that to hold.
    """
    seconds = 60 * minutes
    rows = (
        VenueScreenSample.objects.filter(
            venue_id=venue_id, recorded_at__gt=start, recorded_at__lte=end
        )
        .annotate(bucket=EpochBucket("recorded_at", seconds))
        .values("bucket", "worker_id")
        .annotate(fewest=Min("screens"))
        .order_by()
    )
    totals: dict[int, int] = defaultdict(int)
    for row in rows:
        totals[row["bucket"]] += row["fewest"]
    # Bucket b holds (b·R, (b+1)·R] (EpochBucket) and is drawn at its start.
    first = int(start.timestamp()) // seconds
    last = -(-int(end.timestamp()) // seconds) - 1
    return [
        (datetime.fromtimestamp(b * seconds, tz=start.tzinfo), totals.get(b, 0))
        for b in range(first, last + 1)
    ]
