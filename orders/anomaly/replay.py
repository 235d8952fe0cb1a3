"""The venue metrics over a past period, one value per evaluation step (preview, benchmark).

The rows of the period are loaded once (orders, screen samples, activity rows, the other
venues' payments in buckets); at each step the same formulas as the live metrics are fed
with what the live queries would have returned at that moment:

- the opening, the warm-up and the week slot from the venue's schedule;
- the baseline of a slot from the activity rows the baseline query reads at that moment;
- an order still waiting at a moment: not yet taken then (accepted_at later or never),
  nor cancelled (a cancelled order that was never taken stopped waiting at its last
  change). A payment counts with its final state (the history keeps no earlier one).

A test checks the replay against the live metrics at the same moments.
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q

from monitoring.alerting.metrics import Point, ScopedHistory
from monitoring.alerting.replay import EpochBucket, Grid, moments
from monitoring.models import VenueScreenSample
from orders import hours
from orders.activity import quarter_floor, week_slot
from orders.anomaly import formulas
from orders.anomaly.formulas import OpenVenue
from orders.baseline import ROW_FIELDS, ActivityRow, SlotBaseline, since, summarize, until
from orders.models import Order, OrderStatus, PaymentStatus, Venue, VenueActivity

SlotKey = tuple[int, int]
BUCKET = 10  # seconds: the other venues' payments are counted in buckets this long


class _BaselinesAt:
    """The baselines a live cycle at `now` would read, from rows held in memory."""

    def __init__(self, rows: dict[SlotKey, tuple[list[datetime], list[ActivityRow]]]) -> None:
        self._rows = rows
        self._cache: dict[tuple[SlotKey, int, int], SlotBaseline] = {}
        self.now = datetime.min.replace(tzinfo=UTC)

    def get(self, key: SlotKey, /) -> SlotBaseline | None:
        found = self._rows.get(key)
        if found is None:
            return None
        starts, rows = found
        lo, hi = bisect_left(starts, since(self.now)), bisect_left(starts, until(self.now))
        if hi <= lo:
            return None
        cached = self._cache.get((key, lo, hi))
        if cached is None:
            cached = self._cache[(key, lo, hi)] = summarize(rows[lo:hi])
        return cached


@dataclass
class VenueRows:
    created: list[datetime] = field(default_factory=list)
    accepted: list[datetime | None] = field(default_factory=list)
    left: list[datetime | None] = field(default_factory=list)  # stopped waiting
    cancelled: list[bool] = field(default_factory=list)  # cancelled before anyone took it
    paid: list[int] = field(default_factory=lambda: [0])  # prefix sums by creation
    failed: list[int] = field(default_factory=lambda: [0])
    screens_at: list[datetime] = field(default_factory=list)
    screens: list[int] = field(default_factory=list)


@dataclass
class Period:
    """What the replay of [start, end] needs, loaded once for the venues asked."""

    start: datetime
    end: datetime
    window: int
    venues: dict[int, VenueRows]
    baselines: _BaselinesAt
    # Every venue's payments in `bucket`-second buckets from `first_bucket` on, as prefix
    # sums (10 s, or less when the window or the step is not a multiple of 10 s).
    first_bucket: int
    paid_prefix: list[int]
    failed_prefix: list[int]
    bucket: int = BUCKET


LOOKBACK = max(formulas.SILENCE_LOOKBACK, formulas.WAITING_LOOKBACK) + formulas.LEVEL_LOOKBACK


def load(start: datetime, end: datetime, window: int, venue_ids: Iterable[int]) -> Period:
    ids = list(venue_ids)
    first = start - max(LOOKBACK, timedelta(seconds=window) + formulas.LEVEL_LOOKBACK)
    venues = {v: VenueRows() for v in ids}
    for venue_id, created, accepted, status, updated, payment in (
        Order.objects.filter(venue_id__in=ids, created_at__gt=first, created_at__lte=end)
        .order_by("created_at")
        .values_list(
            "venue_id", "created_at", "accepted_at", "status", "updated_at", "payment_status"
        )
    ):
        rows = venues[venue_id]
        rows.created.append(created)
        rows.accepted.append(accepted)
        cancelled = status == OrderStatus.CANCELLED and accepted is None
        rows.left.append(accepted if accepted is not None else updated if cancelled else None)
        rows.cancelled.append(cancelled)
        rows.paid.append(rows.paid[-1] + (payment == PaymentStatus.PAID))
        rows.failed.append(rows.failed[-1] + (payment == PaymentStatus.FAILED))
    for venue_id, at, screens in (
        VenueScreenSample.objects.filter(
            venue_id__in=ids,
            recorded_at__gt=start - timedelta(seconds=window),
            recorded_at__lte=end,
        )
        .order_by("recorded_at")
        .values_list("venue_id", "recorded_at", "screens")
    ):
        venues[venue_id].screens_at.append(at)
        venues[venue_id].screens.append(screens)
    activity: dict[SlotKey, tuple[list[datetime], list[ActivityRow]]] = defaultdict(
        lambda: ([], [])
    )
    for venue_id, slot, starts_at, *values in (
        VenueActivity.objects.filter(
            venue_id__in=ids, open=True, starts_at__gte=since(first), starts_at__lt=until(end)
        )
        .order_by("starts_at")
        .values_list("venue_id", "week_slot", "starts_at", *ROW_FIELDS)
    ):
        starts, rows_ = activity[(venue_id, slot)]
        starts.append(starts_at)
        rows_.append(ActivityRow(*values))
    size = math.gcd(BUCKET, window, Grid.for_window(window).step)
    buckets = {
        row["bucket"]: (row["paid"], row["failed"])
        for row in Order.objects.filter(
            created_at__gt=start - timedelta(seconds=window), created_at__lte=end
        )
        .annotate(bucket=EpochBucket("created_at", size))
        .values("bucket")
        .annotate(
            paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
            failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
        )
        .order_by()
    }
    first_bucket = int(start.timestamp() - window) // size - 1
    paid, failed = [0], [0]
    for bucket in range(first_bucket, int(end.timestamp()) // size + 1):
        found = buckets.get(bucket, (0, 0))
        paid.append(paid[-1] + found[0])
        failed.append(failed[-1] + found[1])
    return Period(
        start, end, window, venues, _BaselinesAt(dict(activity)), first_bucket, paid, failed, size
    )


def platform_between(period: Period, start: datetime, end: datetime) -> tuple[int, int]:
    """(paid, failed) of every venue's orders placed in (start, end]: the buckets from
    start / 10 s to end / 10 s - 1 (both are whole multiples of 10 s at every step)."""
    lo = int(start.timestamp()) // period.bucket - period.first_bucket
    hi = int(end.timestamp()) // period.bucket - period.first_bucket
    return (
        period.paid_prefix[hi] - period.paid_prefix[lo],
        period.failed_prefix[hi] - period.failed_prefix[lo],
    )


Formula = Callable[[Period, VenueRows, OpenVenue, datetime, "WaitingSweep"], float | None]


class WaitingSweep:
    """The oldest order still waiting, as time moves forward (each order enters once)."""

    def __init__(self, rows: VenueRows) -> None:
        self.rows = rows
        self.next = 0
        self.heap: list[tuple[datetime, int]] = []

    def oldest(self, now: datetime) -> datetime | None:
        rows = self.rows
        while self.next < len(rows.created) and rows.created[self.next] <= now:
            heapq.heappush(self.heap, (rows.created[self.next], self.next))
            self.next += 1
        cutoff = now - formulas.WAITING_LOOKBACK
        while self.heap:
            created, i = self.heap[0]
            left = rows.left[i]
            if created > cutoff and (left is None or left > now):
                return created
            heapq.heappop(self.heap)  # taken (or too old): it never waits again later
        return None


def first_after(rows: VenueRows, start: datetime) -> int:
    """The index of the first order placed after `start`."""
    return bisect_right(rows.created, start)


def _silence(
    p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
) -> float | None:
    hi = bisect_right(rows.created, now)
    i = hi - 1
    last = rows.created[i] if i >= 0 and rows.created[i] > now - formulas.SILENCE_LOOKBACK else None
    seen = hi - first_after(rows, formulas.pace_start(venue, now))
    return formulas.silence_value(venue, last, seen, now, p.baselines)


def window_start(p: Period, now: datetime) -> datetime:
    return now - timedelta(seconds=p.window)


def scan_starts(p: Period, now: datetime) -> list[datetime]:
    """The starts of the windows of formulas.scan_windows(), in its order."""
    return [now - timedelta(seconds=s) for s in formulas.scan_windows(p.window)]


def windows_formula(
    value: Callable[..., float | None],
) -> Callable[[Period, VenueRows, OpenVenue, datetime, WaitingSweep], float | None]:
    """A formula over the orders of each window of scan_windows() and today's pace before the
    longest (formulas.volume_value, formulas.surge_value)."""

    def formula(
        p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
    ) -> float | None:
        start = window_start(p, now)
        hi = bisect_right(rows.created, now)
        seen = [hi - first_after(rows, formulas.span_start(venue, s)) for s in scan_starts(p, now)]
        paced = formulas.pace_start(venue, start)
        before = max(0, first_after(rows, start) - first_after(rows, paced))
        return value(venue, seen, before, start, now, p.baselines)

    return formula


_volume = windows_formula(formulas.volume_value)
_surge = windows_formula(formulas.surge_value)


def _screens(
    p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
) -> float | None:
    lo = bisect_right(rows.screens_at, window_start(p, now))
    hi = bisect_right(rows.screens_at, now)
    return formulas.screens_value(venue, max(rows.screens[lo:hi], default=0), p.baselines)


def _waiting(p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, w: WaitingSweep) -> float:
    return formulas.waiting_value(venue, w.oldest(now), now)


def _waiting_ratio(
    p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, w: WaitingSweep
) -> float | None:
    return formulas.waiting_ratio_value(venue, w.oldest(now), now, p.baselines)


def _accept(
    p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
) -> float | None:
    start = window_start(p, now)
    lo = first_after(rows, formulas.span_start(venue, start))
    hi = bisect_right(rows.created, now)
    waits = []
    for i in range(lo, hi):
        taken = rows.accepted[i]
        if rows.cancelled[i]:
            continue  # cancelled before anyone took it (as live: orders.anomaly.live)
        waits.append((taken if taken is not None and taken <= now else now) - rows.created[i])
    if len(waits) < formulas.ACCEPT_MIN_ORDERS:
        return None
    median = statistics.median(w.total_seconds() for w in waits)
    return formulas.accept_value(venue, median, len(waits), start, now, p.baselines)


def kitchen_formula(slowdown: float = formulas.KITCHEN_SLOWDOWN) -> Formula:
    """formulas.kitchen_value of the orders placed over the last KITCHEN_LOOKBACK (of this
    opening), cancelled ones left out (as live)."""

    def formula(
        p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
    ) -> float | None:
        waits = kitchen_waits(rows, max(venue.since, now - formulas.KITCHEN_LOOKBACK), now)
        return formulas.kitchen_value(venue, waits, now, p.baselines, slowdown)

    return formula


def kitchen_waits(rows: VenueRows, since: datetime, now: datetime) -> list[tuple[float, bool]]:
    """(seconds, taken by now) of the orders placed after `since`, in the order placed, as
    formulas.kitchen_value takes them; cancelled ones left out."""
    waits = []
    for i in range(first_after(rows, since), bisect_right(rows.created, now)):
        if rows.cancelled[i]:
            continue
        taken = rows.accepted[i]
        if taken is not None and taken <= now:
            waits.append(((taken - rows.created[i]).total_seconds(), True))
        else:
            waits.append(((now - rows.created[i]).total_seconds(), False))
    return waits


def _payments(
    p: Period, rows: VenueRows, venue: OpenVenue, now: datetime, _: WaitingSweep
) -> float | None:
    start = window_start(p, now)
    lo = first_after(rows, formulas.span_start(venue, start))
    hi = bisect_right(rows.created, now)
    own = (rows.paid[hi] - rows.paid[lo], rows.failed[hi] - rows.failed[lo])
    platform = platform_between(p, start, now)
    return formulas.payment_value(venue, own, platform, start, now, p.baselines)


FORMULAS: dict[str, Formula] = {
    "venue.orders_silence_chance": _silence,
    "venue.order_volume_chance": _volume,
    "venue.order_surge_chance": _surge,
    "venue.screens_online": _screens,
    "venue.oldest_waiting_minutes": _waiting,
    "venue.oldest_waiting_ratio": _waiting_ratio,
    "venue.accept_time_ratio": _accept,
    "venue.kitchen_slowdown_evidence": kitchen_formula(),
    "venue.payment_failure_chance": _payments,
}


def history(
    metric: str, start: datetime, end: datetime, window: int, venue_ids: Iterable[int]
) -> dict[str, list[Point]]:
    """{venue id: the metric at every evaluation step in (start, end]} for those venues."""
    return replay_formula(FORMULAS[metric], start, end, window, venue_ids)


def replay_formula(
    formula: Formula,
    start: datetime,
    end: datetime,
    window: int,
    venue_ids: Iterable[int],
    period: Period | None = None,
) -> dict[str, list[Point]]:
    """`formula` at every step, for venues open then and past their warm-up (None else)."""
    period = period or load(start, end, window, venue_ids)
    schedules = hours.schedules()
    warmup = timedelta(minutes=settings.VENUE_WARMUP_MINUTES)
    step = Grid.for_window(window).step
    steps = [datetime.fromtimestamp(m, tz=UTC) for m in moments(start, end, step)]
    found: dict[str, list[Point]] = {}
    for venue_id, rows in period.venues.items():
        schedule = schedules.get(venue_id)
        points: list[Point] = []
        found[str(venue_id)] = points
        if schedule is None:
            points.extend((t, None) for t in steps)
            continue
        spans = schedule.spans(start - timedelta(days=2), end + timedelta(seconds=1))
        begins = [b for b, _ in spans]
        waiting = WaitingSweep(rows)
        slot_quarter, slot = None, 0
        for t in steps:
            opened = opened_at(schedule, spans, begins, t)
            if opened is None or t - opened < warmup:
                waiting.oldest(t)  # keeps the sweep moving
                points.append((t, None))
                continue
            quarter = quarter_floor(t)
            if quarter != slot_quarter:
                slot_quarter, slot = quarter, week_slot(quarter, schedule)
            period.baselines.now = t
            venue = OpenVenue(venue_id, opened, slot, quarter, schedule.zone)
            points.append((t, formula(period, rows, venue, t, waiting)))
    return found


def opened_at(
    schedule: hours.Schedule, spans: list[hours.Span], begins: list[datetime], t: datetime
) -> datetime | None:
    """Schedule.open_since(t), from spans computed once for the period."""
    if not schedule.active:
        return None
    if schedule.always_open:
        return t - timedelta(days=2)
    i = bisect_right(begins, t) - 1
    if i >= 0 and spans[i][0] <= t < spans[i][1]:
        return spans[i][0]
    return None


# The preview replays a per-venue rule for this many venues, the busiest of the period.
PREVIEW_VENUES = 20


def busiest_venues(start: datetime, end: datetime, limit: int = PREVIEW_VENUES) -> list[int]:
    busiest = list(
        Order.objects.filter(created_at__gt=start, created_at__lte=end)
        .values_list("venue_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "venue_id")
        .values_list("venue_id", flat=True)[:limit]
    )
    if len(busiest) < limit:  # then venues without orders (screens may still matter)
        busiest += list(
            Venue.objects.filter(is_active=True)
            .exclude(pk__in=busiest)
            .order_by("pk")
            .values_list("pk", flat=True)[: limit - len(busiest)]
        )
    return busiest


def scoped_history(metric: str) -> ScopedHistory:
    """The metric's replay as the registry's per-scope history."""

    def replayed(
        start: datetime, end: datetime, window: int, scopes: list[str] | None
    ) -> dict[str, list[Point]]:
        if scopes is None:
            venues = busiest_venues(start, end)
        else:
            venues = [int(s) for s in scopes if s.isdigit() and len(s) <= 18]
        return history(metric, start, end, window, venues)

    return replayed
