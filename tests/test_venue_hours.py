"""Opening hours: services across midnight, daylight saving changes, exceptions, the admin."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from orders import hours
from orders.hours import Schedule, first_overlap
from orders.models import OpeningException, OpeningHours, Venue, Weekday

LONDON = ZoneInfo("Europe/London")
SAT = Weekday.SATURDAY


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def evenings(**kwargs: Any) -> Schedule:
    """Open every day 18:00 to 02:00 in London."""
    return Schedule(LONDON, {d: [(time(18), time(2))] for d in range(7)}, **kwargs)


def test_a_service_that_closes_after_midnight_runs_into_the_next_day() -> None:
    schedule = evenings()
    assert schedule.is_open(london(2026, 6, 10, 23, 59))
    assert schedule.is_open(london(2026, 6, 11, 1, 59))
    assert not schedule.is_open(london(2026, 6, 11, 2, 0))
    assert not schedule.is_open(london(2026, 6, 11, 17, 59))
    assert schedule.open_since(london(2026, 6, 11, 1, 0)) == london(2026, 6, 10, 18, 0)


def test_a_service_keeps_its_local_hours_on_the_nights_the_clocks_change() -> None:
    late = Schedule(LONDON, {SAT: [(time(22), time(2))]})
    # 28-29 March 2026: the clocks go forward at 01:00 GMT, so the night is 3 hours long.
    [(begin, end)] = late.spans(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert (begin, end) == (utc(2026, 3, 28, 22), utc(2026, 3, 29, 1))
    # 24-25 October 2026: back at 02:00 BST; 22:00 BST to 02:00 GMT is 5 hours.
    [(begin, end)] = late.spans(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert (begin, end) == (utc(2026, 10, 24, 21), utc(2026, 10, 25, 2))
    assert late.is_open(utc(2026, 10, 25, 1, 30))  # 01:30 GMT, after the second 01:00


def test_a_local_time_that_does_not_exist_that_night_reads_with_the_offset_before() -> None:
    # 01:30 on 29 March 2026 does not exist in London: read as 01:30 GMT (02:30 BST).
    brunch = Schedule(LONDON, {Weekday.SUNDAY: [(time(1, 30), time(4))]})
    assert brunch.open_since(utc(2026, 3, 29, 2)) == utc(2026, 3, 29, 1, 30)
    assert not brunch.is_open(utc(2026, 3, 29, 1, 29))
    assert not brunch.is_open(utc(2026, 3, 29, 3))  # 04:00 BST


def test_an_exception_replaces_the_services_starting_that_day_but_not_last_nights() -> None:
    christmas = date(2026, 12, 25)
    schedule = evenings(
        exceptions={christmas: [], date(2026, 12, 31): [(time(20), time(4))]},
    )
    # Christmas Eve's service still ends at 02:00 on Christmas Day.
    assert schedule.is_open(london(2026, 12, 25, 1, 0))
    assert not schedule.is_open(london(2026, 12, 25, 19, 0))
    assert not schedule.is_open(london(2026, 12, 26, 1, 0))
    assert schedule.is_open(london(2026, 12, 26, 19, 0))
    # New Year's Eve: 20:00 to 04:00 instead of 18:00 to 02:00.
    assert not schedule.is_open(london(2026, 12, 31, 19, 0))
    assert schedule.is_open(london(2027, 1, 1, 3, 30))


def test_open_services_that_touch_are_one_span() -> None:
    split = Schedule(LONDON, {0: [(time(12), time(15)), (time(15), time(22))]})
    assert split.spans(london(2026, 6, 8, 0), london(2026, 6, 9, 0)) == [
        (london(2026, 6, 8, 12), london(2026, 6, 8, 22))
    ]
    assert split.open_since(london(2026, 6, 8, 16)) == london(2026, 6, 8, 12)


def test_a_venue_without_hours_is_always_open_and_an_inactive_one_never() -> None:
    at = utc(2026, 6, 8, 4)
    assert Schedule(LONDON).is_open(at)
    assert not Schedule(LONDON, active=False).is_open(at)
    assert not evenings(active=False).is_open(london(2026, 6, 8, 20))


def test_overlapping_services_are_found_across_midnight_and_the_end_of_the_week() -> None:
    assert first_overlap([(0, time(12), time(15)), (0, time(15), time(22))]) is None
    assert first_overlap([(0, time(12), time(16)), (0, time(15), time(22))]) == (
        "Monday 12:00–16:00",  # noqa: RUF001
        "Monday 15:00–22:00",  # noqa: RUF001
    )
    assert first_overlap([(6, time(22), time(3)), (0, time(2), time(9))]) is not None
    assert first_overlap([(6, time(22), time(2)), (0, time(2), time(9))]) is None
    assert first_overlap([(2, time(0), time(0)), (2, time(23), time(23, 30))]) is not None


@pytest.mark.django_db
def test_schedules_are_read_again_after_an_edit(venue: Venue) -> None:
    venue.timezone = "Europe/London"
    venue.save()
    at = london(2026, 6, 10, 20)  # a Wednesday
    assert hours.schedule(venue.pk) is not None
    assert hours.schedules()[venue.pk].is_open(at)  # no hours: always open
    OpeningHours.objects.create(
        venue=venue, weekday=Weekday.WEDNESDAY, opens=time(18), closes=time(23)
    )
    assert hours.schedules()[venue.pk].is_open(at)
    assert not hours.schedules()[venue.pk].is_open(at + timedelta(hours=4))
    OpeningException.objects.create(venue=venue, date=date(2026, 6, 10), closed=True)
    assert not hours.schedules()[venue.pk].is_open(at)
    OpeningException.objects.all().delete()
    assert hours.schedules()[venue.pk].is_open(at)


@pytest.mark.django_db
def test_the_admin_refuses_overlapping_hours_and_a_closed_day_with_hours(
    admin_client: Client, venue: Venue
) -> None:
    url = f"/admin/orders/venue/{venue.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200

    def post(hours_rows: list[dict[str, str]], exceptions: list[dict[str, str]]) -> Any:
        data = {
            "name": venue.name,
            "slug": venue.slug,
            "timezone": "Europe/London",
            "currency": "USD",
            "is_active": "on",
            "opening_hours-TOTAL_FORMS": str(len(hours_rows)),
            "opening_hours-INITIAL_FORMS": "0",
            "opening_exceptions-TOTAL_FORMS": str(len(exceptions)),
            "opening_exceptions-INITIAL_FORMS": "0",
        }
        for prefix, rows in (("opening_hours", hours_rows), ("opening_exceptions", exceptions)):
            for i, row in enumerate(rows):
                data.update({f"{prefix}-{i}-{k}": v for k, v in row.items()})
        return admin_client.post(url, data)

    friday = str(Weekday.FRIDAY.value)
    saturday = str(Weekday.SATURDAY.value)
    late = {"weekday": friday, "opens": "18:00", "closes": "03:00"}
    answer = post([late, {"weekday": saturday, "opens": "02:00", "closes": "10:00"}], [])
    assert answer.status_code == 200
    assert "Two services overlap: Friday 18:00–03:00 and Saturday 02:00–10:00." in (  # noqa: RUF001
        answer.content.decode()
    )
    assert not OpeningHours.objects.exists()

    closed = {"date": "2026-12-25", "closed": "on"}
    answer = post([late], [closed, {"date": "2026-12-25", "opens": "12:00", "closes": "15:00"}])
    assert "2026-12-25 is marked closed and also given hours" in answer.content.decode()
    answer = post([late], [{"date": "2026-12-25", "closed": "on", "opens": "12:00"}])
    assert "A day closed all day has no hours" in answer.content.decode()
    answer = post([late], [{"date": "2026-12-24"}])
    assert "Give the hours of that day, or tick closed." in answer.content.decode()
    assert not OpeningException.objects.exists()

    answer = post([late], [closed])
    assert answer.status_code == 302, answer.content.decode()[:2000]
    assert [str(h) for h in OpeningHours.objects.all()] == ["Friday 18:00–03:00"]  # noqa: RUF001
    assert [str(e) for e in OpeningException.objects.all()] == ["2026-12-25: closed"]
    listing = admin_client.get("/admin/orders/venue/").content.decode()
    assert "Open now" in listing


@pytest.mark.django_db
def test_a_list_of_venues_reads_the_hours_once(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    for n in range(30):
        venue = Venue.objects.create(name=f"Venue {n}", slug=f"venue-{n}")
        OpeningHours.objects.create(venue=venue, weekday=0, opens=time(9), closes=time(17))
    admin_client.get("/admin/orders/venue/")  # the session, the hours: read once
    # Without the once-a-second check, each row's "Open now" would cost 4 queries.
    with django_assert_max_num_queries(12):  # 6, or 10 when a second has passed
        page = admin_client.get("/admin/orders/venue/")
    assert page.status_code == 200
    assert (
        page.content.decode().count('alt="False"') + page.content.decode().count('alt="True"')
        >= 2 * 30
    )  # is_active and Open now, for each


def test_a_venue_without_weekly_hours_is_closed_on_its_closed_days() -> None:
    christmas = Schedule(LONDON, exceptions={date(2026, 12, 25): []})
    assert christmas.is_open(london(2026, 12, 24, 23, 0))
    assert not christmas.is_open(london(2026, 12, 25, 12, 0))
    assert christmas.open_since(london(2026, 12, 26, 9, 0)) == london(2026, 12, 26, 0, 0)


@pytest.mark.django_db
def test_a_zone_changed_by_another_process_is_seen_within_a_second(venue: Venue) -> None:
    assert hours.schedules()[venue.pk].zone == ZoneInfo(venue.timezone)
    # As another process writes it: no signal reaches this one.
    Venue.objects.filter(pk=venue.pk).update(timezone="Pacific/Auckland")
    hours._cache.checked -= hours.RECHECK_SECONDS  # a second has passed
    assert hours.schedules()[venue.pk].zone == ZoneInfo("Pacific/Auckland")
    Venue.objects.filter(pk=venue.pk).update(is_active=False)
    hours._cache.checked -= hours.RECHECK_SECONDS
    assert not hours.schedules()[venue.pk].active
