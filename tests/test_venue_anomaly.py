"""Venue-aware metrics: each just over and just under its line, closed venues, warm-up."""

from __future__ import annotations

import importlib
import math
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.test import override_settings

from inkwave.lib.counts import binomial_sf, nb_cdf, nb_sf, nb_two_sided, nb_zero
from monitoring.alerting import engine
from monitoring.alerting.metrics import REGISTRY, Values, Window
from monitoring.models import AlertRule, Incident, VenueScreenSample, Worker
from notifications.defaults import create_default_routes
from notifications.models import Destination, Route
from orders import activity, anomaly, baseline, hours
from orders.anomaly.live import forget_baselines
from orders.models import (
    OpeningHours,
    Order,
    OrderStatus,
    PaymentStatus,
    Venue,
    VenueActivity,
)

pytestmark = pytest.mark.django_db

# A Wednesday, 19:00 in London (BST): the venue opens at 12:00 and closes at 23:00 daily.
NOW = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)
WEEKS = 8


@pytest.fixture(autouse=True)
def setup(db: Any) -> None:
    create_default_routes(Destination, Route)
    AlertRule.objects.update(enabled=False)


def open_daily(venue: Venue, opens: time = time(12), closes: time = time(23)) -> Venue:
    venue.timezone = "Europe/London"
    venue.save()
    for day in range(7):
        OpeningHours.objects.create(venue=venue, weekday=day, opens=opens, closes=closes)
    return venue


@pytest.fixture
def bistro(venue: Venue) -> Venue:
    return open_daily(venue)


def usual(venue: Venue, *, hours_back: int = 5, weeks: int = WEEKS, **values: Any) -> None:
    """The same hours of the past `weeks` Wednesdays, each quarter hour with these values."""
    rows = []
    for week in range(1, weeks + 1):
        end = activity.quarter_floor(NOW - timedelta(weeks=week)) + timedelta(hours=1)
        for q in range(4 * (hours_back + 1)):
            starts_at = end - timedelta(minutes=15 * q)
            slot = activity.week_slot(starts_at, hours.schedules()[venue.pk])
            rows.append(
                VenueActivity(venue=venue, starts_at=starts_at, week_slot=slot, open=True, **values)
            )
    VenueActivity.objects.bulk_create(rows)


def order(venue: Venue, at: datetime, **fields: Any) -> Order:
    venue.order_counter += 1
    accepted_at = fields.pop("accepted_at", None)
    made = Order.objects.create(
        venue=venue, number=venue.order_counter, table="T1", currency="GBP", total=10, **fields
    )
    Order.objects.filter(pk=made.pk).update(created_at=at, accepted_at=accepted_at)
    return made


def value(metric: str, venue: Venue, now: datetime = NOW, seconds: int = 3600) -> float | None:
    values: Values = REGISTRY[metric].compute(Window(now, seconds))
    return values.get(str(venue.pk))


def rule(metric: str, comparison: str, threshold: float, **fields: Any) -> AlertRule:
    return AlertRule(metric=metric, comparison=comparison, threshold=threshold, **fields)


# --- the count model ----------------------------------------------------------------------


def test_a_scan_reports_its_smallest_chance_times_its_windows() -> None:
    from orders.anomaly.formulas import scan_windows, scanned

    assert scan_windows(3600) == [600, 1200, 1800, 3600]
    assert scan_windows(2700) == [600, 1200, 1800, 2700]
    assert scan_windows(900) == [600, 900]
    assert scan_windows(600) == [600]
    assert scan_windows(300) == [300]
    assert scanned([0.5, 0.001, None, 20.0]) == pytest.approx(0.004)
    assert scanned([60.0, 30.0]) == 60.0
    assert scanned([90.0, 70.0]) == 100.0  # a chance, capped
    assert scanned([None, None]) is None


def test_the_count_model_matches_its_closed_forms() -> None:
    # Negative binomial pmf by lgamma, summed: the recurrence gives the same.
    mean, k = 7.5, 4.0
    p = k / (k + mean)

    def pmf(i: int) -> float:
        log = math.lgamma(i + k) - math.lgamma(k) - math.lgamma(i + 1)
        return math.exp(log + k * math.log(p) + i * math.log1p(-p))

    assert nb_zero(mean, k) == pytest.approx(pmf(0))
    assert nb_cdf(5, mean, k) == pytest.approx(sum(pmf(i) for i in range(6)))
    assert nb_sf(12, mean, k) == pytest.approx(1 - sum(pmf(i) for i in range(12)))
    # A very large dispersion is Poisson.
    assert nb_zero(3.0, 1e9) == pytest.approx(math.exp(-3.0))
    assert nb_two_sided(3, 3.0, 16) == 1.0
    assert binomial_sf(3, 10, 0.1) == pytest.approx(
        1 - sum(math.comb(10, i) * 0.1**i * 0.9 ** (10 - i) for i in range(3))
    )
    assert binomial_sf(0, 10, 0.5) == 1.0
    assert binomial_sf(11, 10, 0.5) == 0.0


def test_the_volume_reads_a_count_once_unless_it_lies_between_its_two_usuals() -> None:
    from orders.anomaly.formulas import _both_readings

    k = anomaly.ORDER_DISPERSION
    for paced in (0.5, 3.0, 16.0, 28.8, 80.0):
        for plain in (0.5, 3.0, 16.0, 28.8, 80.0):
            for n in range(0, 150, 3):
                both = max(nb_two_sided(n, paced, k), nb_two_sided(n, plain, k))
                assert _both_readings(n, paced, plain) == pytest.approx(both, rel=1e-12)


def test_the_usual_of_several_spans_from_one_walk_is_each_span_s_own_across_a_clock_change() -> (
    None
):
    import random
    from zoneinfo import ZoneInfo

    from orders.anomaly.formulas import OpenVenue, expected_in_spans, slots_back

    london = ZoneInfo("Europe/London")
    # Clocks went forward at 01:00 UTC on 29 March 2026: now is 02:40 UTC (03:40 BST).
    now = datetime(2026, 3, 29, 2, 40, 7, 250000, tzinfo=UTC)
    quarter = activity.quarter_floor(now)
    venue = OpenVenue(7, now - timedelta(hours=6), baseline.local_slot(quarter, london), quarter,
                      london)  # fmt: skip
    known = {
        (7, slot): baseline.SlotBaseline(8, float(slot % 11 + 1), 0, 0.0, 0.0, 0.0, 0, 0, 0)
        for slot in range(7 * 96)
        if slot % 5 or slot == venue.slot  # others never open in past weeks: nothing usual
    }

    def each_quarter(a: datetime, b: datetime) -> float:  # the span's own walk
        total = 0.0
        for slot, seconds in slots_back(venue, a, b):
            found = known.get((7, slot))
            total += 0.0 if found is None else found.orders * seconds / 900
        return total

    spans = [
        (now - timedelta(hours=3), now - timedelta(hours=1)),  # across the change
        (now - timedelta(minutes=600 // 60), now),
        (now - timedelta(hours=1), now),
        (quarter - timedelta(minutes=30), quarter),  # on quarter hours
        (quarter - timedelta(minutes=14), quarter - timedelta(minutes=2)),  # inside one
        (now - timedelta(minutes=70), now - timedelta(minutes=70)),  # empty
    ]
    pick = random.Random(15)
    for _ in range(200):
        a = now - timedelta(seconds=pick.choice([0, 900, 1800]) + pick.uniform(0, 4 * 3600))
        spans.append((a, min(now, a + timedelta(seconds=pick.uniform(0, 3 * 3600)))))
    one_walk = expected_in_spans(venue, spans, known)
    assert one_walk is not None
    assert one_walk == [pytest.approx(each_quarter(a, b), rel=1e-12, abs=1e-12) for a, b in spans]
    assert one_walk[5] == 0.0


def test_plain_rows_of_an_empty_list_are_none() -> None:
    from orders.baseline import plain_rows

    assert plain_rows(Order.objects.filter(venue_id__in=[]).values_list("venue_id")) == []


# --- orders stopped -----------------------------------------------------------------------


def at_the_usual_pace(venue: Venue, per_hour: float, until: datetime) -> None:
    """Orders every 60 / per_hour minutes in the three hours before `until` (included)."""
    step = timedelta(minutes=60 / per_hour)
    at = until
    while at > until - timedelta(hours=3):
        order(venue, at)
        at -= step


def test_orders_stopped_crosses_its_line_when_the_silence_becomes_unlikely(bistro: Venue) -> None:
    usual(bistro, orders=4)  # 16 an hour at this time on a Wednesday
    alert = rule(anomaly.SILENCE, "lt", 0.01)
    # The evening goes at its usual pace, then nothing for `quiet` minutes: negative binomial
    # (dispersion 25) around 4 a quarter hour times today's pace.
    values = {}
    for quiet in range(36, 48):
        Order.objects.all().delete()
        at_the_usual_pace(bistro, 16, NOW - timedelta(minutes=quiet))
        found = value(anomaly.SILENCE, bistro)
        assert found is not None
        # The pace: the orders of the two hours before the silence against the usual.
        paced = NOW - timedelta(hours=2)
        seen = Order.objects.filter(created_at__gt=paced).count()
        pace = (seen + 8) / (4 * (120 - quiet) / 15 + 8)
        assert found == pytest.approx(
            100 * nb_zero(4 * quiet / 15 * pace, anomaly.ORDER_DISPERSION)
        )
        values[quiet] = found
    # Just under the line at 40 quiet minutes, over it from 41.
    assert [q for q, v in values.items() if alert.breaches(v)] == list(range(41, 48))


def test_a_quiet_day_makes_a_silence_less_alarming(bistro: Venue, other_venue: Venue) -> None:
    slow = open_daily(other_venue)
    for venue in (bistro, slow):
        usual(venue, orders=4)
    at_the_usual_pace(bistro, 16, NOW - timedelta(minutes=30))
    at_the_usual_pace(slow, 4, NOW - timedelta(minutes=30))  # a quarter of its usual today
    busy, quiet = value(anomaly.SILENCE, bistro), value(anomaly.SILENCE, slow)
    assert busy is not None
    assert quiet is not None
    assert busy < 1 < quiet


def test_twenty_quiet_minutes_alarm_a_busy_venue_and_not_a_quiet_one(
    bistro: Venue, other_venue: Venue
) -> None:
    quiet = open_daily(other_venue)
    usual(bistro, orders=17)  # about 200 an evening
    usual(quiet, orders=0, hours_back=1)
    # 2 a night: an order in a quarter hour of this hour in 2 weeks out of 8.
    VenueActivity.objects.filter(
        venue=quiet, starts_at__gt=NOW - timedelta(weeks=2, hours=1)
    ).update(orders=1)
    at_the_usual_pace(bistro, 68, NOW - timedelta(minutes=20))
    order(quiet, NOW - timedelta(minutes=20))
    alert = rule(anomaly.SILENCE, "lt", 0.01)
    busy_value, quiet_value = value(anomaly.SILENCE, bistro), value(anomaly.SILENCE, quiet)
    assert busy_value is not None
    assert alert.breaches(busy_value)
    assert quiet_value is not None
    assert quiet_value > 50


def test_a_venue_still_being_learned_has_no_value(bistro: Venue) -> None:
    usual(bistro, orders=4, weeks=baseline.BASELINE_MIN_WEEKS - 1)
    assert value(anomaly.SILENCE, bistro) is None
    VenueActivity.objects.all().delete()
    usual(bistro, orders=4, weeks=baseline.BASELINE_MIN_WEEKS)
    forget_baselines()  # a process keeps them for the quarter hour
    assert value(anomaly.SILENCE, bistro) is not None


def test_an_earlier_end_in_the_same_quarter_hour_reads_the_slots_it_needs(bistro: Venue) -> None:
    from monitoring.alerting.metrics import Window
    from orders.anomaly import live

    usual(bistro, orders=4)
    schedule = hours.schedules()[bistro.pk]
    quarter = activity.quarter_floor(NOW)
    before = activity.week_slot(quarter - timedelta(minutes=15), schedule)
    five_minutes = timedelta(minutes=5)
    # At 10 past, five minutes back stay in this quarter hour: its slot alone is read ...
    later = live._baselines(Window(quarter + timedelta(minutes=10), 300), five_minutes)
    assert (bistro.pk, before) not in later
    # ... at 2 past, they reach into the one before, which is read although the quarter
    # hour's cache already covers this venue and lookback from the later end.
    earlier = live._baselines(Window(quarter + timedelta(minutes=2), 300), five_minutes)
    assert (bistro.pk, before) in earlier
    assert earlier[(bistro.pk, before)].orders == 4


def test_baselines_kept_into_the_next_quarter_hour_are_those_read_afresh(
    bistro: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from monitoring.alerting.metrics import Window
    from orders.anomaly import live

    schedule = hours.schedules()[bistro.pk]
    pick = random.Random(7)
    rows, gap = [], activity.quarter_floor(NOW - timedelta(weeks=3, minutes=50))
    at = activity.quarter_floor(NOW - timedelta(weeks=9, hours=4))
    while at < NOW - timedelta(days=6):  # over 8 weeks: a week leaves the 8 read each step
        if at != gap:  # a quarter hour the roll-up writes late, below
            slot = activity.week_slot(at, schedule)
            orders, accepted = pick.randint(0, 9), pick.randint(0, 9)
            rows.append(VenueActivity(venue=bistro, starts_at=at, week_slot=slot, open=True,
                                      orders=orders, accepted=accepted))  # fmt: skip
        at += timedelta(minutes=15)
    VenueActivity.objects.bulk_create(rows)
    read: list[set[int]] = []

    def spied(slots: Any, now: datetime, venues: Any = None) -> Any:
        read.append(set(slots))
        return baseline.baselines(slots, now, venues)

    monkeypatch.setattr(live, "baselines", spied)
    lookback = timedelta(hours=3)
    for step in range(6):
        end = NOW + timedelta(minutes=15 * step + 2)
        if step == 3:
            slot = activity.week_slot(gap, schedule)
            VenueActivity.objects.create(venue=bistro, starts_at=gap, week_slot=slot, open=True,
                                         orders=40)  # fmt: skip
        kept = live._baselines(Window(end, 600), lookback)
        needed = live._needed(live._open(Window(end, 600)), end, lookback)
        fresh = baseline.baselines({s for _, s in needed}, end, [bistro.pk])
        assert {pair: kept.get(pair) for pair in needed} == {
            pair: fresh.get(pair) for pair in needed
        }
        if step:
            # Read again: the quarter hour begun, the one whose oldest week just left the 8
            # (two hours back), and at step 3 the one written late. Not the 10 others.
            assert len(read[-1]) == (3 if step == 3 else 2)
    assert len(read[0]) == 13  # the first: every quarter hour the three hours touch


def test_silence_finds_the_last_order_among_the_orders_of_today_s_pace() -> None:
    from orders.anomaly.formulas import LEVEL_LOOKBACK, SILENCE_LOOKBACK

    assert LEVEL_LOOKBACK >= SILENCE_LOOKBACK  # live.silence reads both from one aggregate


def test_one_odd_week_does_not_move_the_baseline(bistro: Venue) -> None:
    usual(bistro, orders=4)
    week_slot = activity.week_slot(activity.quarter_floor(NOW), hours.schedules()[bistro.pk])
    rows = VenueActivity.objects.filter(venue=bistro, week_slot=week_slot).order_by("starts_at")
    VenueActivity.objects.filter(pk=rows[0].pk).update(orders=400)  # a festival
    VenueActivity.objects.filter(pk=rows[1].pk).update(orders=0)  # an outage
    found = baseline.baselines([week_slot], NOW)[(bistro.pk, week_slot)]
    assert found.weeks == WEEKS
    assert found.orders == 4


# --- closed venues and warm-up ------------------------------------------------------------

METRICS = list(anomaly.METRICS)


def a_bad_evening(venue: Venue, now: datetime, *, history: bool = True) -> None:
    """Screens usually on, none now; a rush of 40 orders, then none for half an hour; none
    taken; every payment failed."""
    if history:
        usual(venue, orders=4, screens=2, payments_paid=4, **waits(4, 60, 0.5))
    for i in range(40):
        at = now - timedelta(minutes=31, seconds=40 * i)
        order(venue, at, payment_status=PaymentStatus.FAILED)


def rules_for_every_metric() -> list[AlertRule]:
    lines = {
        anomaly.SILENCE: ("lt", 5.0),
        anomaly.VOLUME: ("lt", 5.0),
        anomaly.SURGE: ("lt", 5.0),
        anomaly.SCREENS: ("lt", 1.0),
        anomaly.WAITING: ("gt", 5.0),
        anomaly.WAITING_RATIO: ("gt", 3.0),
        anomaly.ACCEPT_RATIO: ("gt", 2.0),
        anomaly.KITCHEN: ("gt", 5.0),
        anomaly.PAYMENTS: ("lt", 5.0),
    }
    return [
        AlertRule.objects.create(
            name=f"Venue {metric}",
            metric=metric,
            comparison=comparison,
            threshold=threshold,
            window_seconds=3600,
            pending_seconds=0,
            clear_seconds=0,
        )
        for metric, (comparison, threshold) in lines.items()
    ]


def test_every_metric_fires_for_an_open_venue_and_none_for_a_closed_one(bistro: Venue) -> None:
    a_bad_evening(bistro, NOW)
    rules_for_every_metric()
    values = {metric: value(metric, bistro) for metric in METRICS}
    assert None not in values.values(), values

    engine.run_cycle(NOW)
    fired = set(Incident.objects.values_list("rule__metric", "scope"))
    assert fired == {(metric, str(bistro.pk)) for metric in METRICS}

    # The same evening an hour after closing (23:00 London): nothing has a value.
    Incident.objects.all().delete()
    late = NOW + timedelta(hours=5)
    a_bad_evening(bistro, late, history=False)
    assert {metric: value(metric, bistro, late) for metric in METRICS} == dict.fromkeys(METRICS)
    engine.run_cycle(late)
    assert not Incident.objects.filter(opened_at__gte=late).exists()


def test_a_closed_day_never_alerts(bistro: Venue) -> None:
    a_bad_evening(bistro, NOW)
    bistro.opening_exceptions.create(date=NOW.date(), closed=True)
    assert {metric: value(metric, bistro) for metric in METRICS} == dict.fromkeys(METRICS)


@override_settings(VENUE_WARMUP_MINUTES=20)
def test_a_venue_that_just_opened_is_left_alone_for_the_warm_up(venue: Venue) -> None:
    opened = open_daily(venue, opens=time(18, 45))  # 18:45 London, 17:45 UTC
    usual(opened, orders=4, screens=1)
    assert value(anomaly.SCREENS, opened, NOW + timedelta(minutes=4), 300) is None
    assert value(anomaly.SCREENS, opened, NOW + timedelta(minutes=5), 300) == 0.0


# --- the other metrics, each side of its line ---------------------------------------------


def test_unusual_volume_either_way(bistro: Venue) -> None:
    usual(bistro, orders=4)  # 16 in the hour
    at_the_usual_pace(bistro, 16, NOW - timedelta(minutes=60))  # 32 in the 2 hours before: 1
    alert = rule(anomaly.VOLUME, "lt", 0.1)
    for minutes in range(16):
        order(bistro, NOW - timedelta(minutes=3 * minutes + 1))
    usual_hour = value(anomaly.VOLUME, bistro)
    assert usual_hour == 100.0
    # Busier in the hour's first half: only the whole hour sees it, and its chance counts
    # four times (the scan looks at the last 10, 20, 30 and 60 minutes). The line is crossed
    # at the first count whose two-sided chance, times 4, is under 0.1%.
    k = anomaly.ORDER_DISPERSION
    line = next(n for n in range(16, 200) if 4 * 100 * nb_two_sided(n, 16, k) < 0.1)
    for extra in range(line - 16 - 1):
        order(bistro, NOW - timedelta(minutes=30, seconds=extra))
    under = value(anomaly.VOLUME, bistro)
    assert under is not None
    assert under == pytest.approx(4 * 100 * nb_two_sided(line - 1, 16, k))
    assert not alert.breaches(under)
    order(bistro, NOW - timedelta(minutes=31))
    over = value(anomaly.VOLUME, bistro)
    assert over is not None
    assert over == pytest.approx(4 * 100 * nb_two_sided(line, 16, k))
    assert alert.breaches(over)
    # Quieter: none at all in the hour.
    Order.objects.filter(created_at__gt=NOW - timedelta(minutes=60)).delete()
    quiet = value(anomaly.VOLUME, bistro)
    assert quiet is not None
    assert alert.breaches(quiet)


def test_a_volume_is_unusual_only_if_it_is_so_at_todays_pace_and_at_the_usual(
    bistro: Venue,
) -> None:
    usual(bistro, orders=4)  # 16 in the hour, 32 in the two hours before it
    k = anomaly.ORDER_DISPERSION
    # A busy day (64 orders in the two hours before: a pace of 72 / 40 = 1.8), then 8
    # orders in the hour: few at the pace (28.8 usual), not at the usual (16); the larger
    # chance is the usual's.
    at_the_usual_pace(bistro, 32, NOW - timedelta(minutes=60))
    for i in range(8):
        order(bistro, NOW - timedelta(minutes=7 * i + 1))
    got = value(anomaly.VOLUME, bistro, seconds=3600)
    at_pace, at_usual = nb_two_sided(8, 16 * 1.8, k), nb_two_sided(8, 16, k)
    assert at_pace < at_usual
    windows = [(2, 600), (3, 1200), (5, 1800), (8, 3600)]  # (orders, seconds) of each window

    def chance(n: int, usual: float) -> float:
        return nb_two_sided(n, max(usual, 1.0), k)

    expected = min(
        max(chance(n, 16 * s / 3600 * 1.8), chance(n, 16 * s / 3600)) for n, s in windows
    )
    assert got == pytest.approx(min(100.0, 4 * 100 * expected))
    # Far fewer still (none): unusual both ways, the larger chance is again the usual's.
    Order.objects.filter(created_at__gt=NOW - timedelta(minutes=60)).delete()
    none = value(anomaly.VOLUME, bistro, seconds=3600)
    assert none == pytest.approx(4 * 100 * nb_two_sided(0, 16, k))


def test_a_burst_of_the_last_ten_minutes_is_judged_on_its_own(bistro: Venue) -> None:
    usual(bistro, orders=4)  # 16 in the hour, 16 / 6 in 10 minutes
    at_the_usual_pace(bistro, 16, NOW - timedelta(minutes=60))
    for minutes in range(16):
        order(bistro, NOW - timedelta(minutes=3 * minutes + 1))  # 3 of them in the last 10
    for i in range(10):
        order(bistro, NOW - timedelta(seconds=20 + 55 * i))  # 10 more: 13 in 10 minutes
    k = anomaly.ORDER_DISPERSION
    hour = 100 * nb_two_sided(26, 16, k)
    ten_minutes = 100 * nb_two_sided(13, 16 / 6, k)
    found = value(anomaly.VOLUME, bistro)
    # 26 orders in the hour for 16 usual are unremarkable; 13 in ten minutes for 2.7 are not.
    assert hour > 5
    assert found is not None
    assert found == pytest.approx(4 * ten_minutes)
    assert found < 0.1
    # A rule over 10 minutes looks at that window alone (nothing to correct for).
    assert value(anomaly.VOLUME, bistro, seconds=600) == pytest.approx(ten_minutes)


def test_a_surge_crosses_its_line_at_the_count_three_times_the_usual_makes_likely(
    bistro: Venue,
) -> None:
    usual(bistro, orders=4)  # 16 in the hour, 8 in half an hour
    at_the_usual_pace(bistro, 16, NOW - timedelta(minutes=60))  # today's pace: the usual
    alert = rule(anomaly.SURGE, "lt", 0.03)
    for minutes in range(16):
        order(bistro, NOW - timedelta(minutes=3 * minutes + 1))
    assert value(anomaly.SURGE, bistro) == 100.0  # a usual hour: no evidence at all

    def bound(n: int, usual: float) -> float:  # the windows' largest ratio as a chance, x4
        return 4 * 100 * math.exp(-(n * math.log(3) - 2 * usual))

    # More orders in the last half hour: the 30-minute window's evidence (n ln 3 - 2 x 8)
    # crosses the line at the first count whose bound is under 0.03%.
    in_half = 10  # of the 16, those placed in the last 30 minutes
    line = next(n for n in range(in_half, 100) if bound(n, 8) < 0.03)
    for extra in range(line - in_half - 1):
        order(bistro, NOW - timedelta(minutes=20, seconds=extra))
    under = value(anomaly.SURGE, bistro)
    assert under is not None
    assert under == pytest.approx(bound(line - 1, 8))
    assert not alert.breaches(under)
    order(bistro, NOW - timedelta(minutes=21))
    over = value(anomaly.SURGE, bistro)
    assert over is not None
    assert over == pytest.approx(bound(line, 8))
    assert alert.breaches(over)
    # One-sided: no order at all in the hour is no surge (the volume rule sees a drop).
    Order.objects.filter(created_at__gt=NOW - timedelta(minutes=60)).delete()
    assert value(anomaly.SURGE, bistro) == 100.0


def test_a_surge_is_judged_at_a_busier_pace_and_never_below_the_usual(bistro: Venue) -> None:
    usual(bistro, orders=4)  # 16 in the hour, 32 in the two hours before it
    alert = rule(anomaly.SURGE, "lt", 0.03)
    # An outage in the two hours before the hour (today's pace (0 + 8) / (32 + 8) = 0.2),
    # then a usual hour: the usual is not lowered to a fifth, so no surge ...
    for minutes in range(16):
        order(bistro, NOW - timedelta(minutes=3 * minutes + 1))
    assert value(anomaly.SURGE, bistro) == 100.0  # (at 0.2: 0.0056%, a surge)
    # ... nor an unusual volume: a count is unusual only if it is so read at today's pace
    # and at the usual (at the pace alone, 0.0026%).
    assert value(anomaly.VOLUME, bistro) == 100.0
    # A day busier than usual (64 orders in the two hours: a pace of 72 / 40 = 1.8) raises
    # the usual a surge is judged against: 60 orders in the hour are no surge at this pace
    # as they would be at the usual one.
    Order.objects.all().delete()
    at_the_usual_pace(bistro, 32, NOW - timedelta(minutes=60))
    for i in range(60):
        order(bistro, NOW - timedelta(seconds=60 * i + 30))
    busier = value(anomaly.SURGE, bistro)
    assert busier is not None
    assert busier == pytest.approx(4 * 100 * math.exp(-(60 * math.log(3) - 2 * 16 * 1.8)))
    assert not alert.breaches(busier)
    assert 4 * 100 * math.exp(-(60 * math.log(3) - 2 * 16)) < 0.03


def test_screens_dark_only_for_a_venue_that_uses_them(bistro: Venue, other_venue: Venue) -> None:
    without = open_daily(other_venue)
    usual(bistro, screens=2)
    usual(without, screens=0)
    web = Worker.objects.create(
        name="web:h:1", hostname="h", pid=1, started_at=NOW - timedelta(days=1), last_seen_at=NOW
    )
    alert = rule(anomaly.SCREENS, "lt", 1, window_seconds=300)
    # The last screen left 5 minutes and 1 second ago: dark for the whole window.
    VenueScreenSample.objects.create(
        worker=web, venue_id=bistro.pk, recorded_at=NOW - timedelta(seconds=301), screens=1
    )
    dark = value(anomaly.SCREENS, bistro, seconds=300)
    assert dark == 0.0
    assert alert.breaches(dark)
    VenueScreenSample.objects.create(
        worker=web, venue_id=bistro.pk, recorded_at=NOW - timedelta(seconds=299), screens=1
    )
    lit = value(anomaly.SCREENS, bistro, seconds=300)
    assert lit == 1.0
    assert not alert.breaches(lit)
    assert value(anomaly.SCREENS, without, seconds=300) is None


def test_tickets_nobody_takes(bistro: Venue) -> None:
    alert = rule(anomaly.WAITING, "gt", 10)
    waiting = order(bistro, NOW - timedelta(minutes=10))
    assert value(anomaly.WAITING, bistro) == 10.0
    assert not alert.breaches(10.0)
    order(bistro, NOW - timedelta(minutes=10, seconds=6))
    assert value(anomaly.WAITING, bistro) == pytest.approx(10.1)
    Order.objects.update(status=OrderStatus.ACCEPTED, accepted_at=NOW)
    assert value(anomaly.WAITING, bistro) == 0.0
    # Left from before the opening (12:00 London, 11:00 UTC): it has waited since then.
    order(bistro, NOW - timedelta(hours=8))
    assert value(anomaly.WAITING, bistro) == 7 * 60
    assert waiting.pk


def test_tickets_nobody_takes_against_the_venues_usual_time_to_take_one(
    bistro: Venue, other_venue: Venue
) -> None:
    usual(bistro, orders=4, accepted=4, accept_seconds=4 * 120)  # two minutes, usually
    slow = open_daily(other_venue)
    usual(slow, orders=4, accepted=4, accept_seconds=4 * 300)  # five minutes, usually
    alert = rule(anomaly.WAITING_RATIO, "gt", 5)
    assert value(anomaly.WAITING_RATIO, bistro) == 0.0  # nothing waiting
    for venue in (bistro, slow):
        order(venue, NOW - timedelta(minutes=10))
    assert value(anomaly.WAITING_RATIO, bistro) == pytest.approx(5.0)
    assert not alert.breaches(5.0)
    for venue in (bistro, slow):
        order(venue, NOW - timedelta(minutes=10, seconds=6))
    over = value(anomaly.WAITING_RATIO, bistro)
    assert over is not None
    assert alert.breaches(over)
    assert over == pytest.approx(5.05)
    # The same ten minutes are usual for a kitchen that takes five.
    assert value(anomaly.WAITING_RATIO, slow) == pytest.approx(2.02)


def test_tickets_are_not_judged_against_a_usual_not_yet_learned(bistro: Venue) -> None:
    usual(bistro, orders=1, accepted=1, accept_seconds=120, weeks=1)  # under 10 taken in the hour
    order(bistro, NOW - timedelta(minutes=30))
    assert value(anomaly.WAITING, bistro) == 30.0
    assert value(anomaly.WAITING_RATIO, bistro) is None


def test_a_kitchen_slower_than_its_usual(bistro: Venue) -> None:
    usual(bistro, orders=4, accepted=4, accept_seconds=4 * 120)  # two minutes, usually
    alert = rule(anomaly.ACCEPT_RATIO, "gt", 3)
    for i in range(5):
        placed = NOW - timedelta(minutes=30 + i)
        order(
            bistro, placed, status=OrderStatus.ACCEPTED, accepted_at=placed + timedelta(minutes=6)
        )
    assert value(anomaly.ACCEPT_RATIO, bistro) == pytest.approx(3.0)
    assert not alert.breaches(3.0)
    # Still waiting counts as waiting so far: six more, placed 6.5 minutes ago.
    for _ in range(6):
        order(bistro, NOW - timedelta(minutes=6, seconds=30))
    over = value(anomaly.ACCEPT_RATIO, bistro)
    assert over is not None
    assert alert.breaches(over)
    assert over == pytest.approx(3.25)


def waits(count: int, seconds: float, spread: float) -> dict[str, Any]:
    """A quarter hour's taken orders for usual(): `count` of them, their waits log-normal
    around `seconds` with this spread (the sums of the logs and of their squares)."""
    log = math.log(seconds)
    return {
        "accepted": count,
        "accept_seconds": count * seconds,
        "accept_log_sum": count * log,
        "accept_log_squares": count * (log * log + spread * spread),
    }


def test_the_evidence_worked_out_once_is_each_order_s_own() -> None:
    from orders.anomaly.formulas import WaitModel, evidence_for, log_longer

    def slowdown_evidence(model: WaitModel, wait: float, taken: bool, slowdown: float) -> float:
        # The log-likelihood ratio as written out: half the difference of the squared
        # z-scores (the densities), or of the log chances of waiting longer.
        x = (math.log(max(wait, 1.0)) - model.log_median) / model.spread
        slow = x - math.log(slowdown) / model.spread
        if taken:
            return (x * x - slow * slow) / 2.0
        return log_longer(slow) - log_longer(x)

    for model in (WaitModel(math.log(120), 0.25), WaitModel(math.log(600), 1.3)):
        for slowdown in (1.5, 3.0, 5.0):
            evidence = evidence_for(model, slowdown)
            for wait in (0.0, 0.5, 1.0, 30.0, 119.9, 600.0, 3600.0, 40000.0):
                for taken in (True, False):
                    expected = slowdown_evidence(model, wait, taken, slowdown)
                    assert evidence(wait, taken) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_kitchen_slowing_down_against_its_own_waits(bistro: Venue, other_venue: Venue) -> None:
    from orders.anomaly.formulas import KITCHEN_SLOWDOWN, WaitModel, slowdown_evidence

    usual(bistro, orders=4, **waits(4, 120, 0.5))  # two minutes, spread 0.5, usually
    loose = open_daily(other_venue)
    usual(loose, orders=4, **waits(4, 120, 1.0))  # two minutes too, twice the spread
    alert = rule(anomaly.KITCHEN, "gt", 10)
    assert value(anomaly.KITCHEN, bistro) == 0.0  # no order: nothing says slow
    # Orders taken in their usual time say "not slow"; an order nobody takes says "slow"
    # louder each minute, and alone crosses the line between 29 and 31 minutes.
    for venue in (bistro, loose):
        for i in range(4):
            placed = NOW - timedelta(minutes=50 - 5 * i)
            taken = placed + timedelta(minutes=2)
            order(venue, placed, status=OrderStatus.ACCEPTED, accepted_at=taken)
    assert value(anomaly.KITCHEN, bistro) == 0.0
    waiting = order(bistro, NOW - timedelta(minutes=29))
    under = value(anomaly.KITCHEN, bistro)
    assert under is not None
    assert not alert.breaches(under)
    # The metric is the formula's evidence of that one order (the best stretch: it alone);
    # the spread learned is a hair over 0.5 (the sample's, divided by n - 1).
    model = WaitModel(math.log(120), 0.5)
    expected = slowdown_evidence(model, 29 * 60, False, KITCHEN_SLOWDOWN)
    assert under == pytest.approx(expected, rel=0.01)
    Order.objects.filter(pk=waiting.pk).update(created_at=NOW - timedelta(minutes=31))
    over = value(anomaly.KITCHEN, bistro)
    assert over is not None
    assert alert.breaches(over)
    # Taken at last, after 31 minutes: one wait that long still says "slow" (the density
    # ratio there), and as much as waiting so far did, give or take.
    Order.objects.filter(pk=waiting.pk).update(status=OrderStatus.ACCEPTED, accepted_at=NOW)
    late = value(anomaly.KITCHEN, bistro)
    assert late is not None
    assert 0.8 * over < late < 1.2 * over
    # A kitchen whose waits usually spread twice as wide: 31 minutes say far less.
    order(loose, NOW - timedelta(minutes=31))
    loose_value = value(anomaly.KITCHEN, loose)
    assert loose_value is not None
    assert loose_value < over / 2


def test_several_slow_orders_add_up_where_one_would_not(bistro: Venue) -> None:
    usual(bistro, orders=4, **waits(4, 120, 0.5))
    alert = rule(anomaly.KITCHEN, "gt", 10)
    # Each taken in 6 minutes (three times the usual): about 2.4 each.
    for i in range(4):
        placed = NOW - timedelta(minutes=40 - 6 * i)
        order(
            bistro, placed, status=OrderStatus.ACCEPTED, accepted_at=placed + timedelta(minutes=6)
        )
    four = value(anomaly.KITCHEN, bistro)
    assert four is not None
    assert 9.0 < four < 10.0
    assert not alert.breaches(four)
    placed = NOW - timedelta(minutes=10)
    order(bistro, placed, status=OrderStatus.ACCEPTED, accepted_at=placed + timedelta(minutes=6))
    five = value(anomaly.KITCHEN, bistro)
    assert five is not None
    assert alert.breaches(five)


def test_a_kitchen_is_not_judged_against_waits_not_yet_learned(bistro: Venue) -> None:
    usual(bistro, orders=1, weeks=1, **waits(1, 120, 0.5))  # under 10 taken in the hour
    order(bistro, NOW - timedelta(minutes=30))
    assert value(anomaly.KITCHEN, bistro) is None


def test_payment_failures_against_the_venue_and_the_platform(
    bistro: Venue, other_venue: Venue
) -> None:
    usual(bistro, orders=4, payments_paid=4)
    alert = rule(anomaly.PAYMENTS, "lt", 0.01, window_seconds=600)
    # Judged against 2% (the floor: this venue's usual
    # is lower): 4 failures in 20 settled payments have a chance of 0.06%, 5 of 0.005%.
    for i in range(20):
        status = PaymentStatus.FAILED if i < 4 else PaymentStatus.PAID
        order(bistro, NOW - timedelta(seconds=25 * i + 10), payment_status=status)
    under = value(anomaly.PAYMENTS, bistro, seconds=600)
    assert under is not None
    assert under == pytest.approx(100 * binomial_sf(4, 20, 0.02))
    assert not alert.breaches(under)
    Order.objects.filter(venue=bistro, payment_status=PaymentStatus.PAID).filter(
        pk__in=Order.objects.filter(venue=bistro, payment_status=PaymentStatus.PAID).values("pk")[
            :1
        ]
    ).update(payment_status=PaymentStatus.FAILED)
    over = value(anomaly.PAYMENTS, bistro, seconds=600)
    assert over is not None
    assert over == pytest.approx(100 * binomial_sf(5, 20, 0.02))
    assert alert.breaches(over)
    # The platform fails as often everywhere (a payment provider's outage): not this venue's.
    for i in range(40):
        status = PaymentStatus.FAILED if i < 30 else PaymentStatus.PAID
        order(other_venue, NOW - timedelta(seconds=10 * i + 5), payment_status=status)
    shared = value(anomaly.PAYMENTS, bistro, seconds=600)
    assert shared is not None
    assert not alert.breaches(shared)


# --- the rollup ---------------------------------------------------------------------------


def test_the_rollup_writes_each_open_quarter_once_in_the_venues_own_week(bistro: Venue) -> None:
    web = Worker.objects.create(
        name="web:h:2", hostname="h", pid=2, started_at=NOW - timedelta(days=1), last_seen_at=NOW
    )
    quarter = NOW - timedelta(minutes=15)  # 18:45 London, a Wednesday
    taken = {"status": OrderStatus.ACCEPTED, "accepted_at": quarter + timedelta(minutes=3)}
    order(bistro, quarter + timedelta(minutes=1), payment_status=PaymentStatus.PAID, **taken)
    order(bistro, quarter + timedelta(minutes=14, seconds=59), payment_status=PaymentStatus.FAILED)
    order(bistro, NOW, status=OrderStatus.ACCEPTED, accepted_at=NOW)  # the next quarter
    VenueScreenSample.objects.create(
        worker=web, venue_id=bistro.pk, recorded_at=quarter + timedelta(minutes=5), screens=3
    )
    assert activity.roll_up(NOW - timedelta(hours=2), NOW) == 8
    rows = {r.starts_at: r for r in VenueActivity.objects.filter(venue=bistro)}
    assert len(rows) == 8
    assert all(r.open for r in rows.values())
    row = rows[quarter]
    assert row.week_slot == 2 * 96 + 18 * 4 + 3  # Wednesday 18:45 local
    assert (row.orders, row.accepted, row.accept_seconds) == (2, 1, 120.0)
    assert row.accept_log_sum == pytest.approx(math.log(120))
    assert row.accept_log_squares == pytest.approx(math.log(120) ** 2)
    assert (row.payments_paid, row.payments_failed, row.screens) == (1, 1, 3)
    assert rows[quarter - timedelta(minutes=15)].orders == 0
    # Rows written before the logs were kept get them from their orders (migration 0012).
    VenueActivity.objects.update(accept_log_sum=0, accept_log_squares=0)
    wait_logs = importlib.import_module("orders.migrations.0012_venue_activity_wait_logs")
    wait_logs.fill_in(django_apps, None)
    row = VenueActivity.objects.get(pk=row.pk)
    assert row.accept_log_sum == pytest.approx(math.log(120))
    assert row.accept_log_squares == pytest.approx(math.log(120) ** 2)
    # Again: the same rows, nothing doubled.
    assert activity.roll_up(NOW - timedelta(hours=2), NOW) == 8
    assert VenueActivity.objects.count() == 8
    # Closed at night: an order then is written (not open), the empty quarters are not.
    night = datetime(2026, 6, 11, 1, 0, tzinfo=UTC)  # 02:00 London
    order(bistro, night + timedelta(minutes=2))
    assert activity.roll_up(night, night + timedelta(hours=1)) == 1
    assert not VenueActivity.objects.get(starts_at=night).open


def test_the_periodic_rollup_catches_up_from_its_last_row(bistro: Venue) -> None:
    assert activity.roll_up_recent(NOW) == 4  # the last hour, on a first run
    later = NOW + timedelta(hours=3)
    assert activity.roll_up_recent(later) == 4 * 4  # the hour again, and three more
    assert VenueActivity.objects.count() == 4 * 4


def test_a_periodic_rollup_while_another_runs_writes_nothing(bistro: Venue) -> None:
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("an advisory lock of PostgreSQL's")
    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"] or None, port=s["PORT"] or None, user=s["USER"] or None,
        password=s["PASSWORD"] or None, dbname=s["NAME"], autocommit=True,
    ) as other:  # fmt: skip
        other.execute("SELECT pg_advisory_lock(%s)", [activity.ROLLUP_LOCK])
        assert activity.roll_up_recent(NOW) == 0
        assert not VenueActivity.objects.exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [activity.ROLLUP_LOCK])
    assert activity.roll_up_recent(NOW) == 4


def test_the_shipped_venue_rules_are_valid_and_held_back_by_what_they_need() -> None:
    from monitoring.alerting import rules as rule_checks
    from monitoring.models import Inhibition
    from orders.anomaly.defaults import NEEDS, VENUE_RULES

    assert {spec["metric"] for spec in VENUE_RULES} == set(anomaly.METRICS)
    for spec in VENUE_RULES:
        rule = AlertRule.objects.get(name=spec["name"])  # installed by the migration
        rule.full_clean()
        assert rule_checks.problems(rule.metric, rule.threshold) == {}
        assert NEEDS[rule.metric] == REGISTRY[rule.metric].depends_on
        causes = set(
            Inhibition.objects.filter(target=rule).values_list("source__metric", flat=True)
        )
        assert causes == {f"dependency.{d}_down" for d in NEEDS[rule.metric]}


def test_the_quarter_hours_before_a_clock_change_keep_their_own_local_slots() -> None:
    from zoneinfo import ZoneInfo

    from orders.anomaly.formulas import OpenVenue, slots_back

    london = ZoneInfo("Europe/London")
    # Sunday 29 March 2026, 01:30 UTC = 02:30 BST, half an hour after the clocks went forward.
    now = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    venue = OpenVenue(1, now - timedelta(hours=5), 6 * 96 + 10, now, london)
    found = slots_back(venue, now - timedelta(hours=1), now)
    # 01:15 and 01:00 UTC are 02:15 and 02:00 BST; 00:45 and 00:30 UTC are 00:45 and 00:30 GMT.
    assert [slot for slot, _ in found] == [6 * 96 + 9, 6 * 96 + 8, 6 * 96 + 3, 6 * 96 + 2]
    # Away from a change, the same as counting back.
    summer = datetime(2026, 6, 14, 18, 0, tzinfo=UTC)
    venue = OpenVenue(1, summer - timedelta(hours=5), 6 * 96 + 76, summer, london)
    assert [s for s, _ in slots_back(venue, summer - timedelta(minutes=45), summer)] == [
        6 * 96 + 75,
        6 * 96 + 74,
        6 * 96 + 73,
    ]


def test_a_volume_rule_left_at_its_old_line_moves_to_the_scan_and_an_edited_one_stays() -> None:
    import importlib

    from django.apps import apps

    from orders.anomaly.defaults import VENUE_RULES

    migration = importlib.import_module("orders.migrations.0007_venue_volume_scan")
    [spec] = [r for r in VENUE_RULES if r["name"] == migration.NAME]
    shipped = {k: spec[k] for k in ("threshold", "window_seconds", "description")}
    assert shipped == {**migration.NEW, "description": migration.NEW_DESCRIPTION}
    rule = AlertRule.objects.get(name=migration.NAME)  # installed at the new line (0006)
    AlertRule.objects.filter(pk=rule.pk).update(
        **migration.OLD, description=migration.OLD_DESCRIPTION
    )
    migration.forwards(apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.window_seconds, rule.description) == (
        0.001, 3600, migration.NEW_DESCRIPTION
    )  # fmt: skip
    migration.backwards(apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.window_seconds, rule.description) == (
        0.001, 1800, migration.OLD_DESCRIPTION
    )  # fmt: skip
    # An operator's own line and words stay.
    AlertRule.objects.filter(pk=rule.pk).update(threshold=0.01, description="Ours.")
    migration.forwards(apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.window_seconds, rule.description) == (0.01, 1800, "Ours.")


def test_a_surge_rule_left_at_its_old_line_moves_to_the_new_and_an_edited_one_stays() -> None:
    from orders.anomaly.defaults import VENUE_RULES

    migration = importlib.import_module("orders.migrations.0014_venue_surge_pace_floor")
    [spec] = [r for r in VENUE_RULES if r["name"] == migration.NAME]
    shipped = {k: spec[k] for k in migration.NEW}
    assert shipped == migration.NEW  # the frozen copy is what is shipped
    rule = AlertRule.objects.get(name=migration.NAME)  # installed at the new line (0006)
    assert (rule.threshold, rule.clear_seconds) == (0.1, 600)
    AlertRule.objects.filter(pk=rule.pk).update(**migration.OLD)  # a database from before
    migration.forwards(django_apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.clear_seconds) == (0.1, 600)
    migration.backwards(django_apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.clear_seconds) == (0.0001, 120)
    AlertRule.objects.filter(pk=rule.pk).update(threshold=0.001)  # an operator's own line
    migration.forwards(django_apps, None)
    rule.refresh_from_db()
    assert (rule.threshold, rule.clear_seconds) == (0.001, 120)


def test_the_kitchen_rule_switches_off_the_two_it_replaces_unless_an_operator_edited_one() -> None:
    from orders.anomaly.defaults import VENUE_RULES

    migration = importlib.import_module("orders.migrations.0013_venue_kitchen_rule")
    [spec] = [r for r in VENUE_RULES if r["name"] == migration.RULE["name"]]
    assert spec == migration.RULE  # the frozen copy is what is shipped
    # As a database from before it had them: on, at their shipped lines.
    AlertRule.objects.filter(name__in=[r["name"] for r in migration.REPLACED]).update(enabled=True)
    AlertRule.objects.filter(name=migration.RULE["name"]).delete()
    edited = migration.REPLACED[1]["name"]
    AlertRule.objects.filter(name=edited).update(threshold=8)  # an operator's own line
    migration.forwards(django_apps, None)
    enabled = dict(
        AlertRule.objects.filter(metric__startswith="venue.").values_list("name", "enabled")
    )
    assert enabled[migration.RULE["name"]] is True
    assert enabled[migration.REPLACED[0]["name"]] is False
    assert enabled[edited] is True
    migration.backwards(django_apps, None)
    assert not AlertRule.objects.filter(name=migration.RULE["name"]).exists()
    assert AlertRule.objects.get(name=migration.REPLACED[0]["name"]).enabled
