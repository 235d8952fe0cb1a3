"""The replay of the venue metrics (preview, benchmark) gives what the live metrics give."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any
from unittest.mock import patch

import pytest
import time_machine
from django.db.models import Model
from django.test import Client

from monitoring.alerting.metrics import REGISTRY, Window
from monitoring.alerting.pictures import incident_chart
from monitoring.models import AlertRule, Incident, VenueScreenSample, Worker
from orders import activity, anomaly
from orders.anomaly import replay
from orders.models import (
    OpeningHours,
    Order,
    OrderStatus,
    PaymentStatus,
    Venue,
    VenueActivity,
)

pytestmark = pytest.mark.django_db

END = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)
DAYS = 23  # three weeks of baseline and the day replayed
OUTAGE = datetime(2026, 6, 9, 18, 0, tzinfo=UTC)  # 20:00 in Paris, the day before END


@contextmanager
def backdated(model: type[Model]) -> Iterator[None]:
    """Rows written with the times given, not now (auto_now and auto_now_add off)."""
    fields = [
        f
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False)
    ]
    with ExitStack() as stack:
        for f in fields:
            stack.enter_context(patch.object(f, "auto_now_add", False))
            stack.enter_context(patch.object(f, "auto_now", False))
        yield


def busy_history(rng: random.Random, venues: list[Venue], web: Worker) -> None:
    orders = []
    for venue in venues:
        t = END - timedelta(days=DAYS)
        number = 0
        while t < END:
            t += timedelta(seconds=rng.expovariate(1 / 240))
            if t >= END:
                break
            number += 1
            roll = rng.random()
            status = (
                OrderStatus.PLACED if roll < 0.1 else
                OrderStatus.CANCELLED if roll < 0.15 else
                OrderStatus.READY
            )  # fmt: skip
            taken = None
            if status == OrderStatus.READY:
                taken = t + timedelta(seconds=rng.uniform(20, 900))
                if taken > END:  # not taken yet: nothing is known of the future
                    status, taken = OrderStatus.PLACED, None
            payment = rng.choice(
                [PaymentStatus.PAID] * 8 + [PaymentStatus.FAILED, PaymentStatus.PENDING]
            )
            orders.append((venue, number, t, taken, status, payment))
    with backdated(Order):
        Order.objects.bulk_create(
            Order(
                venue=v, number=n, table="T", currency="EUR", total=1, status=s, payment_status=p,
                created_at=created, accepted_at=taken, updated_at=taken or created,
            )
            for v, n, created, taken, s, p in orders
        )  # fmt: skip
    samples = []
    for venue in venues:
        at = END - timedelta(hours=32)  # the day replayed (the baseline's screens: below)
        while at < END:
            at += timedelta(seconds=30)
            dark = (at.hour + venue.pk) % 5 == 0 and at.minute < 40
            samples.append(
                VenueScreenSample(
                    worker=web, venue_id=venue.pk, recorded_at=at, screens=0 if dark else 2
                )
            )
    VenueScreenSample.objects.bulk_create(samples, batch_size=5000)


@pytest.fixture
def history(venue: Venue, other_venue: Venue, settings: Any) -> list[int]:
    """Three weeks and a day of orders at a Paris venue with hours and an always-open one."""
    settings.VENUE_WARMUP_MINUTES = 20
    venue.timezone = "Europe/Paris"
    venue.save()
    for day in range(7):  # lunch and a late evening past midnight
        OpeningHours.objects.create(venue=venue, weekday=day, opens=time(11), closes=time(15))
        OpeningHours.objects.create(venue=venue, weekday=day, opens=time(18), closes=time(1))
    other_venue.timezone = "America/New_York"  # no hours: always open
    other_venue.save()
    web = Worker.objects.create(
        name="web:h:1", hostname="h", pid=1, started_at=END - timedelta(days=DAYS), last_seen_at=END
    )
    busy_history(random.Random(15), [venue, other_venue], web)
    # An outage at the Paris venue yesterday evening: no order for 90 minutes.
    Order.objects.filter(
        venue=venue, created_at__gt=OUTAGE, created_at__lte=OUTAGE + timedelta(minutes=90)
    ).delete()
    activity.roll_up(END - timedelta(days=DAYS), END)
    # Screens in the past weeks, as the rollup would have written them from samples.
    VenueActivity.objects.filter(starts_at__lt=END - timedelta(hours=32)).update(screens=2)
    return [venue.pk, other_venue.pk]


def test_the_replay_gives_the_live_values_at_the_same_moments(history: list[int]) -> None:
    rng = random.Random(16)
    venues = history
    start = END - timedelta(hours=30)
    moments = sorted(rng.sample(range(1, 30 * 60), 40))
    checked = 0
    for metric, seconds in [
        (anomaly.SILENCE, 3600),
        (anomaly.VOLUME, 3600),
        (anomaly.VOLUME, 1800),
        (anomaly.VOLUME, 2700),  # a scan of 10, 20, 30 and 45 minutes
        (anomaly.SURGE, 3600),
        (anomaly.SURGE, 1200),
        (anomaly.SCREENS, 300),
        (anomaly.PAYMENTS, 3600),
        (anomaly.PAYMENTS, 900),
        (anomaly.WAITING, 3600),
        (anomaly.ACCEPT_RATIO, 1800),
        (anomaly.KITCHEN, 300),
    ]:
        replayed = replay.history(metric, start, END, seconds, venues)
        # Waiting and taking read the orders' state now: compared at the end only.
        at_end = metric in (anomaly.WAITING, anomaly.ACCEPT_RATIO, anomaly.KITCHEN)
        for minute in [30 * 60] if at_end else moments:
            t = start + timedelta(minutes=minute)
            live = REGISTRY[metric].compute(Window(t, seconds))
            for pk in venues:
                [(_, value)] = [p for p in replayed[str(pk)] if p[0] == t]
                expected = live.get(str(pk))
                assert (value is None) == (expected is None), (metric, t, pk, value, expected)
                if value is not None:
                    assert value == pytest.approx(expected, rel=1e-9), (metric, t, pk)
                    checked += 1
    assert checked > 200  # most moments had values (the venues were open)


def test_the_preview_of_a_venue_rule_finds_the_outage_at_its_venue(
    history: list[int], admin_client: Client
) -> None:
    form = {
        "name": "Orders stopped",
        "description": "",
        "enabled": "on",
        "severity": "critical",
        "runbook_url": "",
        "metric": anomaly.SILENCE,
        "comparison": "lt",
        "threshold": "0.01",
        "window_seconds": "300",
        "pending_seconds": "0",
        "clear_seconds": "0",
        "repeat_interval_seconds": "0",
        "escalation_delay_seconds": "0",
        "flap_threshold": "4",
        "settle_seconds": "600",
        "group_by": "",
    }
    with time_machine.travel(END, tick=False):
        response = admin_client.post("/admin/monitoring/alertrule/add/preview/", form)
    assert response.status_code == 200
    result = response.context["result"]
    paris = Venue.objects.get(pk=history[0])
    assert result.scopes == 2
    found = [i for i in result.incidents if i.scope == str(paris.pk)]
    assert [i.opened_at for i in found if OUTAGE < i.opened_at < OUTAGE + timedelta(minutes=90)]
    assert result.shown_scope == str(paris.pk)
    page = response.content.decode()
    assert f"{paris.name}, venue {paris.pk}" in page
    assert 'id="preview-chart"' in page
    # Each incident of the replay is one the engine would open: the rule fires in the outage
    # and nowhere else at this venue (its quiet afternoons are usual).
    assert len(found) == 1, [(i.opened_at, i.peak_text) for i in found]


def test_a_venue_incident_is_drawn_from_its_venue_replay(history: list[int]) -> None:
    rule = AlertRule.objects.create(
        name="Orders stopped", metric=anomaly.SILENCE, comparison="lt", threshold=0.01,
        window_seconds=300,
    )  # fmt: skip
    incident = Incident.objects.create(
        rule=rule, scope=str(history[0]), title="x", severity="critical",
        opened_at=OUTAGE + timedelta(minutes=40), last_seen_at=OUTAGE + timedelta(minutes=90),
        resolved_at=OUTAGE + timedelta(minutes=95), first_value=0.001, peak_value=0.0001,
        last_value=0.001,
    )  # fmt: skip
    chart = incident_chart(incident)
    assert chart is not None
    values = [v for v in chart["series"][0]["values"] if v is not None]
    assert min(values) < 0.01 < max(values)


def test_the_preview_of_the_kitchen_rule_replays_its_waits(
    history: list[int], admin_client: Client
) -> None:
    """The kitchen's evidence is replayed from the week's orders as any venue metric: orders
    left untaken (a tenth of this history's) are found, and drawn."""
    form = {
        "name": "Kitchen falling behind", "description": "", "enabled": "on",
        "severity": "warning", "runbook_url": "", "metric": anomaly.KITCHEN, "comparison": "gt",
        "threshold": "9", "window_seconds": "300", "pending_seconds": "0", "clear_seconds": "0",
        "repeat_interval_seconds": "0", "escalation_delay_seconds": "0", "flap_threshold": "4",
        "settle_seconds": "600", "group_by": "",
    }  # fmt: skip
    with time_machine.travel(END, tick=False):
        response = admin_client.post("/admin/monitoring/alertrule/add/preview/", form)
    assert response.status_code == 200
    result = response.context["result"]
    assert result.scopes == 2
    assert result.incidents
    assert 'id="preview-chart"' in response.content.decode()
