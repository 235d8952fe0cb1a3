"""Order writes refused during a database outage are recorded and announced once it is back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import RequestFactory

from notifications.models import Notification, NotificationKind
from orders.models import Order, OrderEvent, OrderEventKind, Venue
from orders.outage import DatabaseGate, record_refused, refused_request, spool_path

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("routes")]


@pytest.fixture(autouse=True)
def empty_spool() -> None:
    spool_path().unlink(missing_ok=True)


def refuse(gate: DatabaseGate, method: str, path: str, body: Any, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = RequestFactory().generic(
        method, path, json.dumps(body), content_type="application/json", headers=headers
    )
    order_id = int(path.rsplit("/", 1)[1]) if method == "PATCH" else None
    gate.refuse(refused_request(request, order_id))


def test_each_refusal_is_recorded_with_the_venue_only_its_token_proves_and_announced_once(
    venue: Venue, other_venue: Venue, venue_token: str
) -> None:
    order = Order.objects.create(venue=venue, number=1, table="T1", currency="USD", total=5)
    gate = DatabaseGate()
    refuse(gate, "POST", "/api/v1/orders", {"venue": venue.pk, "table": "Table 5"}, venue_token)
    # A token of one venue naming another: recorded, but not attributed to either.
    refuse(gate, "POST", "/api/v1/orders", {"venue": other_venue.pk}, venue_token)
    refuse(gate, "POST", "/api/v1/orders", {"venue": venue.pk}, None)  # a session: unchecked
    refuse(gate, "PATCH", f"/api/v1/orders/{order.pk}", {"status": "ready"}, venue_token)
    refuse(gate, "POST", "/api/v1/orders", "not an object", "iwv_unknown")

    assert record_refused() == 5

    events = OrderEvent.objects.order_by("pk")
    assert [(e.kind, e.venue_id, e.order_id) for e in events] == [
        (OrderEventKind.CREATION_FAILED, venue.pk, None),
        (OrderEventKind.CREATION_FAILED, None, None),
        (OrderEventKind.CREATION_FAILED, None, None),
        (OrderEventKind.UPDATE_FAILED, venue.pk, order.pk),
        (OrderEventKind.CREATION_FAILED, None, None),
    ]
    assert events[0].payload["table"] == "Table 5"
    assert events[3].payload["changes"] == {"status": "ready"}
    assert all(e.payload["refusedAt"] for e in events)
    texts = set(
        Notification.objects.filter(kind=NotificationKind.ORDER_FAILED).values_list(
            "text", flat=True
        )
    )
    assert len(texts) == 1
    [text] = texts
    assert text.startswith("❌ 5 order requests refused: database unavailable")
    assert "Main Branch: 2" in text
    assert "unchecked: 3" in text
    # Taken: a second run records nothing more.
    assert record_refused() == 0
    assert OrderEvent.objects.count() == 5


def test_a_refusal_that_could_not_be_spooled_is_still_counted_in_the_announcement(
    venue: Venue,
) -> None:
    assert record_refused(unspooled=2) == 0
    [text] = set(
        Notification.objects.filter(kind=NotificationKind.ORDER_FAILED).values_list(
            "text", flat=True
        )
    )
    assert text.startswith("❌ 2 order requests refused")
    assert "Not spooled (counted only): 2" in text


def test_refusals_put_back_after_a_commit_whose_answer_was_lost_are_not_recorded_twice(
    venue: Venue, venue_token: str
) -> None:
    gate = DatabaseGate()
    refuse(gate, "POST", "/api/v1/orders", {"venue": venue.pk, "table": "Table 5"}, venue_token)
    refuse(gate, "POST", "/api/v1/orders", {"venue": venue.pk, "table": "Table 6"}, venue_token)
    spooled = spool_path().read_text()
    assert record_refused() == 2
    # The connection was cut after COMMIT was sent: the drain saw an error and put the
    # entries back, although the database had them. One more refusal came in meanwhile.
    spool_path().write_text(spooled)
    refuse(gate, "POST", "/api/v1/orders", {"venue": venue.pk, "table": "Table 7"}, venue_token)

    assert record_refused() == 1

    tables = list(OrderEvent.objects.order_by("pk").values_list("payload__table", flat=True))
    assert tables == ["Table 5", "Table 6", "Table 7"]
    announced = Notification.objects.filter(kind=NotificationKind.ORDER_FAILED).order_by("pk")
    texts = list(dict.fromkeys(announced.values_list("text", flat=True)))  # one per channel
    assert [t.split(":")[0] for t in texts] == [
        "❌ 2 order requests refused",
        "❌ 1 order request refused",
    ]
    # Put back once more with nothing new: nothing recorded, nothing announced.
    spool_path().write_text(spooled)
    assert record_refused() == 0
    assert OrderEvent.objects.count() == 3
    assert set(announced.values_list("text", flat=True)) == set(texts)
    assert spool_path().read_text() == ""
