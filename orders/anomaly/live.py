"""The venue metrics now: a few SQL aggregates over every open venue, then the formulas.

Every value of a cycle shares what it can through the window's memo: the open venues, the
baselines of their slots, the orders of the window.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DateTimeField,
    F,
    FloatField,
    Max,
    Min,
    Q,
    Value,
)
from django.db.models.functions import Coalesce

from monitoring.alerting.metrics import Values, Window
from monitoring.models import VenueScreenSample
from orders import hours
from orders.activity import WaitSeconds, quarter_floor, week_slot
from orders.anomaly.formulas import (
    KITCHEN_LOOKBACK,
    LEVEL_LOOKBACK,
    QUARTER,
    SILENCE_LOOKBACK,
    WAITING_LOOKBACK,
    WAITING_USUAL_SPAN,
    OpenVenue,
    ScanUsual,
    accept_value,
    kitchen_value,
    pace_start,
    payment_value,
    scan_usuals,
    scan_windows,
    screens_value,
    silence_value,
    slots_back,
    span_start,
    surge_scan,
    volume_scan,
    waiting_ratio_value,
    waiting_value,
)
from orders.baseline import SlotBaseline, among, baselines, moved, newest_row, plain_rows
from orders.models import Order, OrderStatus, PaymentStatus
from orders.models.activity import SLOTS_PER_WEEK

T = TypeVar("T")
Known = dict[tuple[int, int], SlotBaseline]


def _memo(window: Window, key: tuple[object, ...], compute: Callable[[], T]) -> T:
    if key not in window.memo:
        window.memo[key] = compute()
    return window.memo[key]  # type: ignore[return-value]


def open_venues(now: datetime) -> dict[int, OpenVenue]:
    """Venues open now, and for at least the warm-up."""
    warmup = timedelta(minutes=settings.VENUE_WARMUP_MINUTES)
    found = {}
    for venue, schedule in hours.schedules().items():
        since = schedule.open_since(now)
        if since is not None and now - since >= warmup:
            quarter = quarter_floor(now)
            slot = week_slot(quarter, schedule)
            found[venue] = OpenVenue(venue, since, slot, quarter, schedule.zone)
    return found


def _open(window: Window) -> dict[int, OpenVenue]:
    return _memo(window, ("open_venues", window.end), lambda: open_venues(window.end))


# A process keeps the baselines it read from one quarter hour to the next, and reads again
# only those that moved (baseline.moved); after a longer gap it reads them all again.
CARRY_LIMIT = timedelta(hours=2)


class _Kept:
    """The baselines this process read for the quarter hour `quarter` (they hold for all of
    it: orders.baseline), with the (venue, slot) pairs asked so far. At the next quarter hour
    it keeps, of the venues still open, those of the slots within the longest lookback asked
    that did not move: a cycle then reads a slot a venue, not every slot of its lookback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.quarter: datetime | None = None
        self.known: Known = {}
        self.asked: set[tuple[int, int]] = set()
        # lookback -> (the earliest end it was read for, the (venue, current slot)s read): a
        # later end in the same quarter hour needs no slot an earlier one did not.
        self.covered: dict[timedelta, tuple[datetime, frozenset[tuple[int, int]]]] = {}
        self.longest = timedelta(0)  # the longest lookback asked this quarter hour
        self.newest_row = 0  # the newest activity row when the baselines were read


_kept = _Kept()


def forget_baselines() -> None:
    """Read the baselines again (after activity rows of past weeks were written: tests)."""
    with _kept.lock:
        _kept.quarter = None


def _needed(
    venues: dict[int, OpenVenue], end: datetime, lookback: timedelta
) -> set[tuple[int, int]]:
    """The (venue, slot)s of the quarter hours of each venue's lookback before `end`."""
    needed = set()
    for venue in venues.values():
        needed.add((venue.id, venue.slot))
        for slot, _ in slots_back(venue, end - lookback, end):
            needed.add((venue.id, slot))
    return needed


def _turn_to(quarter: datetime, venues: dict[int, OpenVenue]) -> None:
    """Under the lock: move the cache to this quarter hour, keeping what still holds."""
    old, newest = _kept.quarter, newest_row()  # read first: rows written since are seen next time
    known: Known = {}
    asked: set[tuple[int, int]] = set()
    if old is not None and old < quarter <= old + CARRY_LIMIT:
        gone = moved(old, quarter, _kept.newest_row)
        now_at = {v.id: v.slot for v in venues.values()}
        # Kept: of the venues still open, the slots within the longest lookback asked (and
        # an hour more: a clock change), less those that moved.
        reach = int(_kept.longest / QUARTER) + 1 + 4

        def keep(pair: tuple[int, int]) -> bool:
            at = now_at.get(pair[0])
            return at is not None and (at - pair[1]) % SLOTS_PER_WEEK <= reach and pair not in gone

        known = {pair: found for pair, found in _kept.known.items() if keep(pair)}
        asked = {pair for pair in _kept.asked if keep(pair)}
    _kept.quarter, _kept.known, _kept.asked, _kept.covered = quarter, known, asked, {}
    _kept.longest, _kept.newest_row = timedelta(0), newest


def _baselines(window: Window, lookback: timedelta) -> Known:
    """The baselines of every open venue's slots over the lookback: read once a quarter hour
    per process (those that did not move since the last are kept), and for pairs not asked
    before (a venue that opened, a longer window)."""

    def load() -> Known:
        venues = _open(window)
        quarter = quarter_floor(window.end)
        # A venue is covered with its current slot: one whose zone changed needs its slots anew.
        current = _memo(window, ("current", window.end), lambda: frozenset(
            (v.id, v.slot) for v in venues.values()
        ))  # fmt: skip
        with _kept.lock:
            if _kept.quarter != quarter:
                _turn_to(quarter, venues)
            _kept.longest = max(_kept.longest, lookback)
            if lookback in _kept.covered:
                earliest, read = _kept.covered[lookback]
                if earliest <= window.end and read.issuperset(current):
                    return _kept.known  # every slot this needs was read this quarter hour
        needed = _needed(venues, window.end, lookback)
        with _kept.lock:
            missing = needed - _kept.asked if _kept.quarter == quarter else needed
            known = _kept.known
        if missing:
            ids, slots = {v for v, _ in missing}, {s for _, s in missing}
            found = baselines(slots, window.end, ids)
            with _kept.lock:
                if _kept.known is known and _kept.quarter == quarter:  # not moved meanwhile
                    known.update(found)
                    _kept.asked.update((v, s) for v in ids for s in slots)
                    _cover(lookback, window.end, current)
                    return known
            # Another thread moved the cache to another quarter hour meanwhile: read all
            # this cycle needs itself (and note nothing as covered).
            return baselines({s for _, s in needed}, window.end, {v for v, _ in needed})
        with _kept.lock:
            if _kept.known is known:
                _cover(lookback, window.end, current)
        return known

    return _memo(window, ("baselines", window.end, lookback), load)


def _cover(lookback: timedelta, end: datetime, venues: frozenset[tuple[int, int]]) -> None:
    """Note that every slot of these (venue, current slot)s' lookback before `end` is read
    (under the lock)."""
    since, read = _kept.covered.get(lookback, (end, frozenset()))
    if since > end:  # an earlier end needs more slots: start over from it
        read = frozenset()
    _kept.covered[lookback] = (min(since, end), read | venues)


def _window_baselines(window: Window) -> Known:
    return _baselines(window, timedelta(seconds=window.seconds))


def silence(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _baselines(window, SILENCE_LOOKBACK)
    # The last order is read from the orders of today's pace: LEVEL_LOOKBACK reaches back as
    # far as SILENCE_LOOKBACK (a test holds it so).
    seen = _orders_after(venues, lambda v: pace_start(v, now), now, now - LEVEL_LOOKBACK)
    values = {}
    for venue in venues.values():
        n, last = seen.get(venue.id, (0, None))
        value = silence_value(venue, last, n, now, known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def _orders_after(
    venues: dict[int, OpenVenue],
    start: Callable[[OpenVenue], datetime],
    end: datetime,
    common: datetime,
) -> dict[int, tuple[int, datetime]]:
    """Each venue's orders in (start(venue), end]: how many, and when the last was placed.
    One aggregate for the venues whose start is `common`, and the rows of the few others (a
    venue that opened since)."""
    starts = {v.id: start(v) for v in venues.values()}
    usual = [v for v, at in starts.items() if at == common]
    found: dict[int, tuple[int, datetime]] = {}
    if usual:
        for venue_id, n, last in (
            Order.objects.filter(
                venue_id__in=among(usual), created_at__gt=common, created_at__lte=end
            )
            .values_list("venue_id")
            .annotate(n=Count("pk"), last=Max("created_at"))
            .order_by()
        ):
            found[venue_id] = (n, last)
    others = {v: at for v, at in starts.items() if at != common and at < end}
    if others:
        for venue_id, created in Order.objects.filter(
            venue_id__in=among(others), created_at__gt=min(others.values()), created_at__lte=end
        ).values_list("venue_id", "created_at"):
            if created > others[venue_id]:
                n, last = found.get(venue_id, (0, created))
                found[venue_id] = (n + 1, max(last, created))
    return found


Tally = tuple[int, int, int]  # orders, paid, failed
ScanCounts = dict[int, list[Tally]]  # venue id -> a tally per window of scan_windows()


def _scan_starts(window: Window) -> list[datetime]:
    return [window.end - timedelta(seconds=s) for s in scan_windows(window.seconds)]


def _tallies(starts: list[datetime]) -> dict[str, Count]:
    """Conditional counts of the orders after each start: one pass over the longest window."""
    found = {}
    for i, start in enumerate(starts):
        after = Q(created_at__gt=start)
        found[f"n{i}"] = Count("pk", filter=after)
        found[f"paid{i}"] = Count("pk", filter=after & Q(payment_status=PaymentStatus.PAID))
        found[f"failed{i}"] = Count("pk", filter=after & Q(payment_status=PaymentStatus.FAILED))
    return found


def _orders_in_window(window: Window) -> ScanCounts:
    """Per open venue, per window of scan_windows(): orders, paid and failed since its
    span_start (memoised per cycle). One aggregate for the venues open all the window; the
    rows of the few others (a venue that opened since)."""

    def load() -> ScanCounts:
        venues, starts, end = _open(window), _scan_starts(window), window.end
        whole = [v.id for v in venues.values() if v.since <= window.start]
        found: ScanCounts = {}
        if whole:
            for venue_id, *tallies in plain_rows(
                Order.objects.filter(
                    venue_id__in=among(whole), created_at__gt=window.start, created_at__lte=end
                )
                .values_list("venue_id")
                .annotate(**_tallies(starts))
                .order_by()
            ):
                found[venue_id] = [
                    (tallies[3 * i], tallies[3 * i + 1], tallies[3 * i + 2])
                    for i in range(len(starts))
                ]
        others = {v.id: v for v in venues.values() if window.start < v.since < end}
        if others:
            for venue_id, created, payment in Order.objects.filter(
                venue_id__in=among(others), created_at__gt=window.start, created_at__lte=end
            ).values_list("venue_id", "created_at", "payment_status"):
                row = found.setdefault(venue_id, [(0, 0, 0)] * len(starts))
                for i, start in enumerate(starts):
                    if created > span_start(others[venue_id], start):
                        n, paid, failed = row[i]
                        row[i] = (
                            n + 1,
                            paid + (payment == PaymentStatus.PAID),
                            failed + (payment == PaymentStatus.FAILED),
                        )
        return found

    return _memo(window, ("orders_in_window", window.end, window.seconds), load)


def _scan_usuals(window: Window) -> dict[int, ScanUsual | None]:
    """Each open venue's scan_usuals() for the window (memoised per cycle: the volume and the
    surge rules judge the same windows against the same usual)."""

    def load() -> dict[int, ScanUsual | None]:
        venues, start = _open(window), window.start
        known = _baselines(window, timedelta(seconds=window.seconds) + LEVEL_LOOKBACK)
        before = _orders_after(
            venues, lambda v: pace_start(v, start), start, start - LEVEL_LOOKBACK
        )  # fmt: skip
        return {
            venue.id: scan_usuals(venue, before.get(venue.id, (0,))[0], start, window.end, known)
            for venue in venues.values()
        }

    return _memo(window, ("scan_usuals", window.end, window.seconds), load)


def _scanned(window: Window, scan: Callable[[list[int], ScanUsual], float]) -> Values:
    """`scan` (volume_scan, surge_scan) of each open venue's windows of scan_windows()."""
    venues = _open(window)
    if not venues:
        return {}
    counts = _orders_in_window(window)
    usuals = _scan_usuals(window)
    none = [(0, 0, 0)] * len(scan_windows(window.seconds))
    values = {}
    for venue in venues.values():
        usual = usuals.get(venue.id)
        if usual is not None:
            seen = [n for n, _, _ in counts.get(venue.id, none)]
            values[str(venue.id)] = scan(seen, usual)
    return values


def volume(window: Window) -> Values:
    return _scanned(window, volume_scan)


def surge(window: Window) -> Values:
    return _scanned(window, surge_scan)


def screens(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    most = dict(
        VenueScreenSample.objects.filter(
            venue_id__in=among(venues), recorded_at__gt=window.start, recorded_at__lte=window.end
        )
        .values_list("venue_id")
        .annotate(most=Max("screens"))
        .order_by()
    )
    values = {}
    for venue in venues.values():
        value = screens_value(venue, most.get(venue.id, 0), known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def _oldest_placed(window: Window, venues: dict[int, OpenVenue]) -> dict[int, datetime]:
    """Per open venue: when the oldest order nobody has taken was placed."""
    now = window.end

    def read() -> dict[int, datetime]:
        return dict(
            Order.objects.filter(
                status=OrderStatus.PLACED,
                created_at__gt=now - WAITING_LOOKBACK,
                created_at__lte=now,
                venue_id__in=among(venues),
            )
            .values_list("venue_id")
            .annotate(oldest=Min("created_at"))
            .order_by()
        )

    return _memo(window, ("oldest_placed", now), read)


def oldest_waiting(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    oldest = _oldest_placed(window, venues)
    return {str(v.id): waiting_value(v, oldest.get(v.id), now) for v in venues.values()}


def oldest_waiting_ratio(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _baselines(window, WAITING_USUAL_SPAN)
    oldest = _oldest_placed(window, venues)
    values = {}
    for venue in venues.values():
        value = waiting_ratio_value(venue, oldest.get(venue.id), now, known)
        if value is not None:
            values[str(venue.id)] = value
    return values


# An order cancelled before anyone took it waits no more (and says nothing of the kitchen).
CANCELLED_UNTAKEN = Q(status=OrderStatus.CANCELLED, accepted_at__isnull=True)


class _Median(Aggregate):
    """PostgreSQL's interpolated median (what statistics.median gives)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _median_waits(window: Window, venues: dict[int, OpenVenue]) -> dict[int, tuple[float, int]]:
    """Per venue: the median wait in seconds of the orders placed since span_start (so far,
    for those not taken), and their count. PostgreSQL takes the median of the venues open
    all the window; the rows of the others (or of every venue, on SQLite) are read."""
    now = window.end
    found: dict[int, tuple[float, int]] = {}
    read = dict(venues)
    if connection.vendor == "postgresql":
        whole = [v.id for v in venues.values() if v.since <= window.start]
        wait = WaitSeconds(Coalesce("accepted_at", Value(now)), "created_at")
        for venue_id, median, count in (
            Order.objects.filter(
                venue_id__in=among(whole), created_at__gt=window.start, created_at__lte=now
            )
            .exclude(CANCELLED_UNTAKEN)
            .values_list("venue_id")
            .annotate(median=_Median(wait), n=Count("pk"))
            .order_by()
        ):
            found[venue_id] = (float(median), count)
        taken = set(whole)
        read = {v: venues[v] for v in venues if v not in taken}
    if read:
        waits: dict[int, list[float]] = {}
        for venue_id, created, accepted in (
            Order.objects.filter(
                venue_id__in=among(read), created_at__gt=window.start, created_at__lte=now
            )
            .exclude(CANCELLED_UNTAKEN)
            .values_list("venue_id", "created_at", "accepted_at")
        ):
            if created > span_start(read[venue_id], window.start):
                waits.setdefault(venue_id, []).append(((accepted or now) - created).total_seconds())
        for venue_id, seen in waits.items():
            found[venue_id] = (statistics.median(seen), len(seen))
    return found


def kitchen_slowdown(window: Window) -> Values:
    """formulas.kitchen_value of each open venue's orders over the last KITCHEN_LOOKBACK: one
    read of their ages and waits, in seconds (tens of thousands of rows a cycle at 5,000
    venues: floats, which load ten times faster than timestamps), in the order placed."""
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _baselines(window, WAITING_USUAL_SPAN)
    at = Value(now, output_field=DateTimeField())
    waits: dict[int, list[tuple[float, bool]]] = {v: [] for v in venues}
    opened = {v.id: (now - v.since).total_seconds() for v in venues.values()}
    for venue_id, age, took in plain_rows(
        Order.objects.filter(
            venue_id__in=among(venues), created_at__gt=now - KITCHEN_LOOKBACK, created_at__lte=now
        )
        .exclude(CANCELLED_UNTAKEN)
        .order_by("created_at")
        .values_list(
            "venue_id", WaitSeconds(at, F("created_at")), WaitSeconds("accepted_at", "created_at")
        )
    ):
        if age >= opened[venue_id]:
            continue  # placed before this opening
        if took is not None and took <= age:  # taken by now
            waits[venue_id].append((took, True))
        else:
            waits[venue_id].append((age, False))
    values = {}
    for venue in venues.values():
        value = kitchen_value(venue, waits[venue.id], now, known)
        if value is not None:
            values[str(venue.id)] = value
    return values


def accept_ratio(window: Window) -> Values:
    now, venues = window.end, _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    values = {}
    for venue_id, (median, count) in _median_waits(window, venues).items():
        value = accept_value(venues[venue_id], median, count, window.start, now, known)
        if value is not None:
            values[str(venue_id)] = value
    return values


def platform_payments(start: datetime, end: datetime) -> tuple[int, int]:
    """(paid, failed) over every venue's orders placed in (start, end]."""
    totals = Order.objects.filter(created_at__gt=start, created_at__lte=end).aggregate(
        paid=Count("pk", filter=Q(payment_status=PaymentStatus.PAID)),
        failed=Count("pk", filter=Q(payment_status=PaymentStatus.FAILED)),
    )
    return totals["paid"], totals["failed"]


def payment_failures(window: Window) -> Values:
    venues = _open(window)
    if not venues:
        return {}
    known = _window_baselines(window)
    platform = platform_payments(window.start, window.end)
    values = {}
    for venue_id, tallies in _orders_in_window(window).items():
        _, paid, failed = tallies[-1]  # the rule's window (payments are not scanned)
        own = (paid, failed)
        value = payment_value(venues[venue_id], own, platform, window.start, window.end, known)
        if value is not None:
            values[str(venue_id)] = value
    return values
