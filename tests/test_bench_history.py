"""The anomaly benchmark's synthetic history (bench/anomaly_history.py) writes into the schema
as it is now: it writes orders with COPY, naming columns, and broke unseen when orders gained
NOT NULL columns, since nothing else runs it."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from bench import anomaly_history
from monitoring.models import VenueScreenSample, Worker
from orders.activity import roll_up
from orders.models import Order, Venue

pytestmark = pytest.mark.django_db


def test_a_small_history_with_its_anomalies_is_written_and_rolled_up() -> None:
    rng = random.Random(3)
    end = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    history = anomaly_history.plan(rng, 2, 2, 1, end)
    anomaly_history.inject(rng, history, per_venue_and_kind=1)
    worker = Worker.objects.create(
        name="web:bench:1", hostname="bench", pid=1, started_at=history.start, last_seen_at=end
    )
    anomaly_history.write(rng, history, worker.pk)

    assert Venue.objects.count() == 2
    assert Order.objects.count() == history.counts["orders"] > 0
    assert VenueScreenSample.objects.count() == history.counts["screen samples"]
    assert {a.kind for a in history.anomalies} <= set(anomaly_history.KINDS)
    assert history.anomalies
    assert roll_up(history.start, history.end) > 0
