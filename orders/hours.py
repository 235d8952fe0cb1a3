"""Is a venue open? One answer for everything that asks (anomaly metrics, rollups, admin).

A venue's weekly hours are services in its own time zone: each opens on a weekday at a
local time and closes at a later local time, the next day when the closing time is at or
before the opening time. An exception replaces the services that start on its date
(closed, or other hours). Times are turned into UTC per date, so a service keeps its local
hours across daylight saving changes (an evening 22:00 to 02:00 lasts 3 or 5 hours on the
nights the clocks change); a local time that does not exist that night is read with the
offset before the change.

A venue with no weekly hours at all is open at all times: its baseline (what it usually
does at this hour) still keeps the metrics quiet when nothing usually happens. An inactive
venue is never open.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

from django.db.models import Count, Max

from inkwave.lib.timezones import zone_or_utc
from orders.models import OpeningException, OpeningHours, Venue, Weekday

WEEKDAY_NAMES = dict(Weekday.choices)

Service = tuple[time, time]
Span = tuple[datetime, datetime]
WHOLE_DAY: Service = (time(0), time(0))


@dataclass(frozen=True)
class Schedule:
    zone: ZoneInfo
    weekly: dict[int, list[Service]] = field(default_factory=dict)
    exceptions: dict[date, list[Service]] = field(default_factory=dict)  # []: closed
    active: bool = True

    @property
    def always_open(self) -> bool:
        """Open at all times: no weekly hours, and no exception that says otherwise."""
        return self.active and not self.weekly and not self.exceptions

    def services_starting(self, day: date) -> list[Service]:
        if day in self.exceptions:
            return self.exceptions[day]
        if not self.weekly:  # open all day, every day, but for its exceptions
            return [WHOLE_DAY]
        return self.weekly.get(day.weekday(), [])

    def spans(self, start: datetime, end: datetime) -> list[Span]:
        """The open spans (UTC, merged) that overlap [start, end)."""
        if not self.active:
            return []
        if self.always_open:
            return [(start, end)]
        first = start.astimezone(self.zone).date() - timedelta(days=1)
        last = end.astimezone(self.zone).date()
        found: list[Span] = []
        day = first
        while day <= last:
            for opens, closes in self.services_starting(day):
                begin = _utc(day, opens, self.zone)
                finish = _utc(
                    day + timedelta(days=1) if closes <= opens else day, closes, self.zone
                )
                if begin < end and finish > start and finish > begin:
                    found.append((begin, finish))
            day += timedelta(days=1)
        return _merged(found)

    def open_since(self, at: datetime) -> datetime | None:
        """When the open span holding `at` began (looking back at most two days), or None."""
        if not self.active:
            return None
        if self.always_open:
            return at - timedelta(days=2)
        for begin, finish in self.spans(at - timedelta(days=2), at + timedelta(seconds=1)):
            if begin <= at < finish:
                return begin
        return None

    def is_open(self, at: datetime) -> bool:
        return self.open_since(at) is not None


def _utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for begin, finish in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


# --- reading the rules: once, and again only when they change -----------------------------


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: object = None
        self.schedules: dict[int, Schedule] = {}
        self.checked = 0.0  # monotonic() of the last version check


# Edits in another process are seen at most this long after they are made (an edit in this
# process at once: orders.apps forgets the cache on save and delete). A list of 100 venues
# with their "Open now" is then one version check, not one per row.
RECHECK_SECONDS = 1.0


_cache = _Cache()


def _version() -> object:
    """Changes whenever a venue (its zone, whether it is active), its hours or its
    exceptions are added, edited or deleted."""
    parts: list[object] = []
    for model in (OpeningHours, OpeningException):
        parts.append(tuple(model.objects.aggregate(n=Count("pk"), last=Max("updated_at")).values()))
    # Venues have no time of their last change: what the schedules read of them, hashed
    # (a few milliseconds for thousands, at most once a second).
    parts.append(
        hash(tuple(Venue.objects.order_by("pk").values_list("pk", "timezone", "is_active")))
    )
    return tuple(parts)


def schedules() -> dict[int, Schedule]:
    """Every venue's schedule, by venue id (read again only after a change)."""
    with _cache.lock:
        if _cache.version is not None and monotonic() - _cache.checked < RECHECK_SECONDS:
            return _cache.schedules
    version = _version()
    with _cache.lock:
        if version == _cache.version:
            _cache.checked = monotonic()
            return _cache.schedules
    loaded = _load()
    with _cache.lock:
        _cache.version, _cache.schedules, _cache.checked = version, loaded, monotonic()
    return loaded


def schedule(venue_id: int) -> Schedule | None:
    return schedules().get(venue_id)


def forget(*args: object, **kwargs: object) -> None:
    """Read the rules again on the next call (connected to this process's saves and deletes
    of venues, hours and exceptions)."""
    with _cache.lock:
        _cache.version = None


def _load() -> dict[int, Schedule]:
    weekly: dict[int, dict[int, list[Service]]] = defaultdict(lambda: defaultdict(list))
    for venue, weekday, opens, closes in OpeningHours.objects.values_list(
        "venue_id", "weekday", "opens", "closes"
    ):
        weekly[venue][weekday].append((opens, closes))
    exceptions: dict[int, dict[date, list[Service]]] = defaultdict(lambda: defaultdict(list))
    closed_days = set()
    for venue, day, closed, start, end in OpeningException.objects.values_list(
        "venue_id", "date", "closed", "opens", "closes"
    ):
        services = exceptions[venue][day]
        if closed:
            closed_days.add((venue, day))
        elif start is not None and end is not None:
            services.append((start, end))
    for venue, day in closed_days:  # closed all day wins over hours given for it
        exceptions[venue][day] = []
    return {
        pk: Schedule(
            zone=zone_or_utc(zone),
            weekly={d: sorted(s) for d, s in weekly.get(pk, {}).items()},
            exceptions={d: sorted(s) for d, s in exceptions.get(pk, {}).items()},
            active=active,
        )
        for pk, zone, active in Venue.objects.values_list("pk", "timezone", "is_active")
    }


# --- checking weekly hours as an operator enters them -------------------------------------

_WEEK_MINUTES = 7 * 24 * 60


def _minutes(at: time) -> int:
    return at.hour * 60 + at.minute


def first_overlap(services: list[tuple[int, time, time]]) -> tuple[str, str] | None:
    """Two weekly services (weekday, opens, closes) that overlap, as text; None if none do.

    Sunday's service past midnight runs into Monday's: the week is a circle."""
    spans = []
    for weekday, opens, closes in services:
        length = (_minutes(closes) - _minutes(opens)) % (24 * 60) or 24 * 60
        label = f"{WEEKDAY_NAMES[weekday]} {opens:%H:%M}–{closes:%H:%M}"  # noqa: RUF001
        spans.append((weekday * 24 * 60 + _minutes(opens), length, label))
    for i, (start_a, length_a, label_a) in enumerate(spans):
        for start_b, length_b, label_b in spans[i + 1 :]:
            gap = (start_b - start_a) % _WEEK_MINUTES
            if gap < length_a or _WEEK_MINUTES - gap < length_b:
                return label_a, label_b
    return None
