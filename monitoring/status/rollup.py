"""Each public component's day, from incident spans and maintenance windows.

A critical incident of a rule mapped to a component is outage for as long as it fires, a
warning is degraded (info counts for nothing); outage wins where they overlap; time inside
a maintenance window of the component is maintenance, not counted against its uptime.
Days are UTC dates.

A finished day is written once as a ComponentDay row (beat, `roll_up`), so the 90-day
page reads rows instead of replaying 90 days of incidents. Two beats writing the same day
write the same figures (an upsert of what the incidents say), so no claim is needed.
Today, and yesterday until its row is written, are computed from the incidents on request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from inkwave.lib import spans
from inkwave.lib.spans import Span
from inkwave.retention import MAX_BATCHES, delete_in_batches
from monitoring.models import (
    AlertRule,
    ComponentDay,
    Incident,
    IncidentStatus,
    MaintenanceWindow,
    PublicComponent,
    Severity,
)

DAY = timedelta(days=1)
# How many days the page shows.
DAYS_SHOWN = 90


class DayState:
    OPERATIONAL = "operational"
    MAINTENANCE = "maintenance"
    DEGRADED = "degraded"
    OUTAGE = "outage"
    NO_DATA = "nodata"


# Worse is higher: a component's state is the worst of what applies to it.
RANK = {
    DayState.NO_DATA: -1,
    DayState.OPERATIONAL: 0,
    DayState.MAINTENANCE: 1,
    DayState.DEGRADED: 2,
    DayState.OUTAGE: 3,
}

LEVEL_OF_SEVERITY: dict[str, str] = {
    Severity.CRITICAL: DayState.OUTAGE,
    Severity.WARNING: DayState.DEGRADED,
}


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    outage_seconds: int
    degraded_seconds: int
    maintenance_seconds: int
    # The part of the day that has passed (a whole day but for today).
    elapsed_seconds: int = 86400

    @property
    def state(self) -> str:
        if self.outage_seconds:
            return DayState.OUTAGE
        if self.degraded_seconds:
            return DayState.DEGRADED
        if self.maintenance_seconds:
            return DayState.MAINTENANCE
        return DayState.OPERATIONAL

    @property
    def counted_seconds(self) -> int:
        """The time that counts for uptime: the day so far, less maintenance."""
        return max(0, self.elapsed_seconds - self.maintenance_seconds)

    @property
    def uptime_percent(self) -> float:
        if not self.counted_seconds:
            return 100.0
        return 100.0 * (self.counted_seconds - self.outage_seconds) / self.counted_seconds


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def incident_spans(
    start: datetime, end: datetime, now: datetime
) -> dict[str, dict[str, list[Span]]]:
    """component -> level (outage, degraded) -> spans of the incidents of mapped rules that
    overlap start..end; an incident still firing lasts until now."""
    found: dict[str, dict[str, list[Span]]] = defaultdict(lambda: defaultdict(list))
    rows = (
        Incident.objects.filter(
            opened_at__lt=end,
            severity__in=list(LEVEL_OF_SEVERITY),
        )
        .exclude(rule__public_component="")
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gt=start))
        .values_list("rule__public_component", "severity", "status", "opened_at", "resolved_at")
    )
    for component, severity, status, opened_at, resolved_at in rows:
        if status == IncidentStatus.FIRING or resolved_at is None:
            until = now
        else:
            until = resolved_at
        found[component][LEVEL_OF_SEVERITY[severity]].append((opened_at, until))
    return found


def maintenance_spans(start: datetime, end: datetime) -> dict[str, list[Span]]:
    found: dict[str, list[Span]] = defaultdict(list)
    for window in MaintenanceWindow.objects.filter(starts_at__lt=end, ends_at__gt=start):
        for component in window.components:
            found[component].append((window.starts_at, window.ends_at))
    return found


def figures(days: Iterable[date], now: datetime) -> dict[tuple[str, date], DayFigures]:
    """Every component's figures for `days`, from two queries over their whole range."""
    wanted = sorted(set(days))
    if not wanted:
        return {}
    start, end = day_start(wanted[0]), min(now, day_start(wanted[-1]) + DAY)
    incidents = incident_spans(start, end, now)
    maintenance = maintenance_spans(start, end)
    result: dict[tuple[str, date], DayFigures] = {}
    for component in PublicComponent.values:
        for day in wanted:
            result[component, day] = _day(day, now, incidents[component], maintenance[component])
    return result


def _day(
    day: date, now: datetime, levels: dict[str, list[Span]], planned: list[Span]
) -> DayFigures:
    start = day_start(day)
    end = min(start + DAY, now)
    if end <= start:
        return DayFigures(day, 0, 0, 0, 0)
    maintenance = spans.clip(planned, start, end)
    outage = spans.subtract(spans.clip(levels[DayState.OUTAGE], start, end), maintenance)
    degraded = spans.subtract(
        spans.clip(levels[DayState.DEGRADED], start, end), [*maintenance, *outage]
    )
    return DayFigures(
        day,
        outage_seconds=round(spans.seconds(outage)),
        degraded_seconds=round(spans.seconds(degraded)),
        maintenance_seconds=round(spans.seconds(maintenance)),
        elapsed_seconds=round((end - start).total_seconds()),
    )


def first_day(today: date) -> date:
    """Where history begins: when monitoring began (its first alert rule, written when the
    database was set up), and no earlier than the incidents still kept cover
    (INCIDENT_RETENTION_DAYS; an older day would look better than it was)."""
    kept = today - timedelta(days=min(DAYS_SHOWN, settings.INCIDENT_RETENTION_DAYS) - 1)
    began = AlertRule.objects.order_by("created_at").values_list("created_at", flat=True).first()
    return today if began is None else max(kept, utc_date(began))


def days_to_write(today: date) -> list[date]:
    """Finished days of the shown range without their rows (a missed run is caught up)."""
    newest = ComponentDay.objects.order_by("-day").values_list("day", flat=True).first()
    start = first_day(today) if newest is None else max(newest + DAY, today - timedelta(DAYS_SHOWN))
    return [start + timedelta(days=n) for n in range((today - start).days)]


def roll_up(now: datetime | None = None) -> int:
    """Write the finished days that have no row yet; returns how many rows were written."""
    now = now or timezone.now()
    return write_days(days_to_write(utc_date(now)), now)


def write_days(days: list[date], now: datetime) -> int:
    """Upsert the days' rows: a second writer of the same day (two beats) writes the same."""
    computed = figures(days, now)
    rows = [
        ComponentDay(
            component=component,
            day=day,
            outage_seconds=f.outage_seconds,
            degraded_seconds=f.degraded_seconds,
            maintenance_seconds=f.maintenance_seconds,
            computed_at=now,
        )
        for (component, day), f in computed.items()
    ]
    ComponentDay.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["component", "day"],
        update_fields=["outage_seconds", "degraded_seconds", "maintenance_seconds", "computed_at"],
    )
    return len(rows)


def stored(since: date) -> dict[tuple[str, date], DayFigures]:
    return {
        (row.component, row.day): DayFigures(
            row.day, row.outage_seconds, row.degraded_seconds, row.maintenance_seconds
        )
        for row in ComponentDay.objects.filter(day__gte=since)
    }


def history(now: datetime) -> dict[tuple[str, date], DayFigures]:
    """The shown days: stored rows, and yesterday and today computed when they have none.
    An older day without a row is before history began (or beat was down): no data."""
    today = utc_date(now)
    found = stored(today - timedelta(days=DAYS_SHOWN - 1))
    start = first_day(today)
    recent = [
        day
        for day in (today - DAY, today)
        if day >= start and any((c, day) not in found for c in PublicComponent.values)
    ]
    found.update(figures(recent, now))
    return found


# --- retention --------------------------------------------------------------------------


def _cutoff(now: datetime | None) -> datetime:
    return (now or timezone.now()) - timedelta(days=settings.STATUS_HISTORY_DAYS)


def prune_component_days(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    old = ComponentDay.objects.filter(day__lt=utc_date(_cutoff(now)))
    return delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)


def prune_maintenance_windows(
    now: datetime | None = None, *, dry_run: bool = False, max_batches: int = MAX_BATCHES
) -> int:
    old = MaintenanceWindow.objects.filter(ends_at__lt=_cutoff(now))
    return delete_in_batches(old, dry_run=dry_run, max_batches=max_batches)
