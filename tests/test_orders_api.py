"""The orders API and the events it raises: the venue room sees them live, Slack gets its rows."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection
from django.test import Client

from inkwave.routing import build_websocket_application
from notifications.models import Notification, NotificationKind
from orders import api, outage
from orders.models import Order, OrderEvent, OrderEventKind, Venue, VenueAccessToken
from tests.conftest import PatientCommunicator

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("routes")]

ORDER = {
    "table": "Table 5",
    "currency": "USD",
    "items": [
        {"name": "Margherita", "quantity": 2, "unitPrice": "12.50"},
        {"name": "Lemonade", "quantity": 1, "unitPrice": 17.5},
    ],
}


def post(client: Client, body: Any) -> Any:
    return client.post("/api/v1/orders", json.dumps(body), content_type="application/json")


def patch(client: Client, order_id: int, body: Any) -> Any:
    return client.patch(
        f"/api/v1/orders/{order_id}", json.dumps(body), content_type="application/json"
    )


def test_placing_an_order_returns_201_with_its_number_and_queues_the_slack_message(
    device: Client, venue: Venue
) -> None:
    response = post(device, {**ORDER, "venue": venue.pk})
    assert response.status_code == 201
    body = response.json()
    assert body["number"] == 1
    assert body["total"] == "42.50"
    assert body["status"] == "placed"
    assert body["paymentStatus"] == "pending"
    assert [i["name"] for i in body["items"]] == ["Margherita", "Lemonade"]
    assert post(device, {**ORDER, "venue": venue.pk}).json()["number"] == 2
    (note,) = Notification.objects.filter(
        kind=NotificationKind.ORDER_PLACED, context__order=body["id"]
    )
    assert note.destination.name == "orders"
    assert note.text.splitlines() == [
        "🛒 New Order #1",
        "Venue: Main Branch",
        "Table: Table 5",
        "Items: 3 items",
        "Total: $42.50",
        f"Time: {note.text.splitlines()[-1].removeprefix('Time: ')}",
    ]
    assert OrderEvent.objects.filter(kind=OrderEventKind.PLACED, order_id=body["id"]).exists()


def test_order_numbers_are_per_venue(
    device: Client, venue: Venue, other_venue: Venue, staff_user: Any
) -> None:
    post(device, {**ORDER, "venue": venue.pk})
    staff = Client(enforce_csrf_checks=False)
    staff.force_login(staff_user)
    response = post(staff, {**ORDER, "venue": other_venue.pk})
    assert response.status_code == 201
    assert response.json()["number"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"table": ""}, "table"),
        ({"items": []}, "items"),
        ({"items": [{"name": "Soup", "quantity": 0, "unitPrice": "4"}]}, "items.0.quantity"),
        ({"items": [{"name": "Soup", "quantity": 1, "unitPrice": "-4"}]}, "items.0.unitPrice"),
        ({"items": [{"name": "Soup", "quantity": 1, "unitPrice": "4.999"}]}, "items.0.unitPrice"),
        ({"items": [{"name": "", "quantity": 1, "unitPrice": "4"}]}, "items.0.name"),
        ({"items": ["soup"]}, "items.0"),
        ({"currency": "EUR"}, "currency"),
    ],
)
def test_invalid_orders_get_400_with_field_errors_and_are_recorded_and_notified(
    device: Client, venue: Venue, change: dict[str, Any], field: str
) -> None:
    response = post(device, {**ORDER, "venue": venue.pk, **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert not Order.objects.exists()
    event = OrderEvent.objects.get(kind=OrderEventKind.CREATION_FAILED)
    assert field in event.payload["errors"]
    notes = Notification.objects.filter(kind=NotificationKind.ORDER_FAILED)
    assert sorted(n.destination.name for n in notes) == ["operations", "orders"]
    assert notes[0].text.startswith("❌ Failed Order Creation")


def test_an_exception_while_creating_is_a_500_recorded_and_notified(
    device: Client, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr("orders.api.OrderItem.objects.bulk_create", broken)
    response = post(device, {**ORDER, "venue": venue.pk})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert not Order.objects.exists()  # nothing half-made
    event = OrderEvent.objects.get(kind=OrderEventKind.CREATION_FAILED)
    assert event.payload["reason"] == "server error: RuntimeError"
    assert Notification.objects.filter(kind=NotificationKind.ORDER_FAILED).count() == 2


def test_the_database_going_away_while_creating_is_a_503_to_retry_not_a_500(
    device: Client, venue: Venue, monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path
) -> None:
    """The database answered the look for an earlier request with the key, then went away
    (the soak's PostgreSQL restart met an order there): the client is told to retry, and
    the refusal is spooled to be recorded once the database is back, as at the gate."""
    gate = outage.DatabaseGate()
    monkeypatch.setattr(outage, "gate", gate)  # the process's own gate stays open
    settings.VAR_DIR = tmp_path

    def gone(*args: Any, **kwargs: Any) -> Any:
        exc = OperationalError("server closed the connection unexpectedly")
        exc.__cause__ = psycopg.OperationalError("consuming input failed")  # no SQLSTATE
        raise exc

    monkeypatch.setattr("orders.api.OrderItem.objects.bulk_create", gone)
    response = device.post(
        "/api/v1/orders",
        json.dumps({**ORDER, "venue": venue.pk}),
        content_type="application/json",
        headers={"Idempotency-Key": "retry-me"},
    )
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response["Retry-After"]) >= 1
    assert not Order.objects.exists()
    assert not OrderEvent.objects.exists()  # not a crash: nothing said "server error"
    assert gate.down
    [spooled] = [json.loads(line) for line in outage.spool_path().read_text().splitlines()]
    assert (spooled["method"], spooled["venue"], spooled["table"]) == ("POST", venue.pk, "Table 5")


def test_callers_are_authenticated_and_kept_to_their_venue(
    client: Client, venue: Venue, other_venue: Venue, device: Client, plain_user: Any
) -> None:
    assert post(client, {**ORDER, "venue": venue.pk}).status_code == 401
    bad = Client(HTTP_AUTHORIZATION="Bearer iwv_nope")
    assert post(bad, {**ORDER, "venue": venue.pk}).status_code == 401
    assert post(device, {**ORDER, "venue": other_venue.pk}).status_code == 403
    outsider = Client()
    outsider.force_login(plain_user)
    assert post(outsider, {**ORDER, "venue": venue.pk}).status_code == 403
    assert not OrderEvent.objects.exists()


def test_a_session_needs_the_csrf_token(venue: Venue, staff_user: Any) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff_user)
    response = post(strict, {**ORDER, "venue": venue.pk})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"


def test_malformed_bodies_are_rejected_clearly(device: Client, venue: Venue) -> None:
    response = device.post("/api/v1/orders", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert device.post("/api/v1/orders", {"a": 1}).status_code == 415
    assert post(device, [1, 2]).json()["error"]["fields"] == {
        "body": ["A JSON object is required."]
    }
    assert post(device, {**ORDER, "venue": 99999}).json()["error"]["fields"]["venue"]


def test_status_and_payment_changes_raise_events(device: Client, venue: Venue) -> None:
    order_id = post(device, {**ORDER, "venue": venue.pk}).json()["id"]
    response = patch(device, order_id, {"status": "ready"})
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    changed = Notification.objects.get(kind=NotificationKind.ORDER_STATUS_CHANGED)
    assert changed.text.startswith("🔄 Order #1 ready")
    assert "Status: placed → ready" in changed.text
    patch(device, order_id, {"paymentStatus": "failed"})
    issue = Notification.objects.filter(kind=NotificationKind.PAYMENT_ISSUE)
    assert sorted(n.destination.name for n in issue) == ["operations", "orders"]
    assert "Payment: pending → failed" in issue[0].text
    assert OrderEvent.objects.filter(kind=OrderEventKind.PAYMENT_ISSUE).count() == 1
    # An unchanged value is not an event.
    patch(device, order_id, {"status": "ready"})
    assert Notification.objects.filter(kind=NotificationKind.ORDER_STATUS_CHANGED).count() == 1


def test_invalid_changes_get_field_errors_and_change_nothing(device: Client, venue: Venue) -> None:
    order_id = post(device, {**ORDER, "venue": venue.pk}).json()["id"]
    response = patch(device, order_id, {"status": "teleported", "total": "0"})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"status", "total"}
    patch(device, order_id, {"status": "cancelled"})
    response = patch(device, order_id, {"status": "ready"})
    assert response.status_code == 400
    assert "can no longer change" in response.json()["error"]["fields"]["status"][0]
    assert Order.objects.get(pk=order_id).status == "cancelled"


def test_another_venues_order_is_not_found(device: Client, other_venue: Venue) -> None:
    _, raw = VenueAccessToken.issue(other_venue, "x")
    theirs = post(
        Client(HTTP_AUTHORIZATION=f"Bearer {raw}"),
        {**ORDER, "venue": other_venue.pk, "currency": "USD"},
    )
    assert patch(device, theirs.json()["id"], {"status": "ready"}).status_code == 404


def test_a_new_venue_is_announced_as_a_sign_up(db: Any) -> None:
    Venue.objects.create(name="Dockside", slug="dockside", timezone="Europe/Paris", currency="EUR")
    (note,) = Notification.objects.filter(kind=NotificationKind.VENUE_SIGNUP)
    assert note.text.startswith("🎉 New Venue: Dockside")
    assert note.destination.name == "operations"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_client")
async def test_the_venue_room_sees_orders_live(venue: Venue, venue_token: str) -> None:
    from asgiref.sync import sync_to_async

    room = PatientCommunicator(
        build_websocket_application(), f"/ws/venues/{venue.pk}/?token={venue_token}"
    )
    assert (await room.connect())[0]
    await room.receive_json_from()  # welcome

    def place() -> Any:
        return post(
            Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}"), {**ORDER, "venue": venue.pk}
        ).json()

    order = await sync_to_async(place)()
    frame = await room.receive_json_from(timeout=5)
    assert frame["event"] == "order.placed"
    assert frame["data"]["id"] == order["id"]
    assert Decimal(frame["data"]["total"]) == Decimal("42.50")

    def change() -> Any:
        return patch(
            Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}"), order["id"], {"status": "preparing"}
        )

    await sync_to_async(change)()
    frame = await room.receive_json_from(timeout=5)
    assert frame["event"] == "order.updated"
    assert frame["data"]["status"] == "preparing"
    await room.disconnect()


def test_a_device_looping_on_bad_orders_is_notified_once_per_interval(
    device: Client, venue: Venue
) -> None:
    import time_machine
    from django.utils import timezone

    bad = {**ORDER, "venue": venue.pk, "table": ""}
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for _ in range(5):
            assert post(device, bad).status_code == 400
        assert OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED).count() == 5
        notes = Notification.objects.filter(kind=NotificationKind.ORDER_FAILED)
        assert notes.filter(destination__name="operations").count() == 1
        traveller.shift(301)
        post(device, bad)
    latest = notes.filter(destination__name="operations").order_by("-pk").first()
    assert latest is not None
    assert "Also failed since the last notice: 4" in latest.text


def post_once(client: Client, body: Any, key: str) -> Any:
    return client.post(
        "/api/v1/orders",
        json.dumps(body),
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )


def test_a_retry_with_the_same_idempotency_key_gets_the_same_order_not_a_second(
    device: Client, venue: Venue
) -> None:
    first = post_once(device, {**ORDER, "venue": venue.pk}, "7c1e0d1a-retry")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    # The same order, spelled differently ("17.50" for 17.5), is the same request.
    items = [
        {"name": "Margherita", "quantity": 2, "unitPrice": 12.5},
        {"name": "Lemonade", "quantity": 1, "unitPrice": "17.50"},
    ]
    again = post_once(device, {**ORDER, "items": items, "venue": venue.pk}, '"7c1e0d1a-retry"')
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Order.objects.count() == 1
    assert OrderEvent.objects.filter(kind=OrderEventKind.PLACED).count() == 1
    assert Notification.objects.filter(kind=NotificationKind.ORDER_PLACED).count() == 1
    # Another key is another order.
    assert post_once(device, {**ORDER, "venue": venue.pk}, "another").json()["number"] == 2


def test_an_idempotency_key_reused_for_another_order_is_refused(
    device: Client, venue: Venue
) -> None:
    assert post_once(device, {**ORDER, "venue": venue.pk}, "k-1").status_code == 201
    other = post_once(device, {**ORDER, "table": "Table 9", "venue": venue.pk}, "k-1")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.get().table == "Table 5"


def test_a_bad_idempotency_key_is_a_field_error_and_stores_nothing(
    device: Client, venue: Venue
) -> None:
    for key in ("", '""', "x" * 256, "tab\there", "é-key", 'a"b'):
        response = post_once(device, {**ORDER, "venue": venue.pk}, key)
        assert response.status_code == 400, key
        assert "Idempotency-Key" in response.json()["error"]["fields"], key
    assert not Order.objects.exists()
    assert post_once(device, {**ORDER, "venue": venue.pk}, "x" * 255).status_code == 201


def test_orders_written_by_sql_without_a_key_have_none(venue: Venue) -> None:
    # The benchmarks write synthetic history with COPY and INSERT naming only the columns
    # they know: the keys default in the database too, and two such orders do not collide.
    with connection.cursor() as cursor:
        for number in (1, 2):
            cursor.execute(
                'INSERT INTO orders_order (venue_id, number, "table", status, payment_status, '
                "currency, total, created_at, updated_at) "
                "VALUES (%s, %s, 'T1', 'placed', 'pending', 'USD', 10, now(), now())",
                [venue.pk, number],
            )
    assert list(Order.objects.values_list("idempotency_key", "request_digest")) == [("", "")] * 2


def test_two_requests_with_one_key_racing_make_one_order(
    device: Client, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second request looked before the first committed: its insert meets the unique key,
    and it answers with the first's order."""
    first = post_once(device, {**ORDER, "venue": venue.pk}, "race")
    looks: list[str] = []
    real_replay = api._replay

    def missed_once(venue: Venue, key: str, digest: str) -> Any:
        looks.append(key)
        return None if len(looks) == 1 else real_replay(venue, key, digest)

    monkeypatch.setattr(api, "_replay", missed_once)
    again = post_once(device, {**ORDER, "venue": venue.pk}, "race")
    assert looks == ["race", "race"]
    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
    assert Order.objects.count() == 1
    assert not OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED).exists()
