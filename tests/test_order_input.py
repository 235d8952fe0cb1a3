"""Bad input to the orders API: a 400 naming the field, never a 500, and every failed creation
recorded, whatever characters or numbers the caller sends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from orders.models import Order, OrderEvent, OrderEventKind, Venue

pytestmark = pytest.mark.django_db

ITEM = {"name": "Soup", "quantity": 1, "unitPrice": "4.50"}


def post_text(client: Client, text: str) -> Any:
    return client.post("/api/v1/orders", text, content_type="application/json")


def post(client: Client, body: Any) -> Any:
    # json.dumps writes NUL and unpaired surrogates as \\u escapes, as a client's JSON would.
    return post_text(client, json.dumps(body))


def failures() -> list[OrderEvent]:
    return list(OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED).order_by("pk"))


def assert_rejected(response: Any, field: str) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"], error["fields"]
    assert not Order.objects.exists()
    fields: dict[str, list[str]] = error["fields"]
    return fields


BAD_TEXT = {
    "NUL": "T\x00X",
    "lone surrogate": "T\ud800X",
    "lone low surrogate": "\udc00",
    "line break": "Table\n5",
    "C1 control": "Table\x855",
}


@pytest.mark.parametrize("text", BAD_TEXT.values(), ids=BAD_TEXT.keys())
@pytest.mark.parametrize("field", ["table", "items.0.name", "items.1.name"])
def test_bad_characters_in_any_text_field_are_a_400_naming_it_and_recorded(
    device: Client, venue: Venue, field: str, text: str
) -> None:
    body: dict[str, Any] = {"venue": venue.pk, "table": "T 5", "items": [dict(ITEM), dict(ITEM)]}
    if field == "table":
        body["table"] = text
    else:
        body["items"][int(field.split(".")[1])]["name"] = text
    assert_rejected(post(device, body), field)
    (event,) = failures()
    event.refresh_from_db()  # it was stored, not only built
    assert field in event.payload["errors"]
    assert event.venue == venue


def test_the_recorded_table_is_cleaned_not_dropped(device: Client, venue: Venue) -> None:
    post(device, {"venue": venue.pk, "table": "T\x00X\ud800", "items": [ITEM]})
    (event,) = failures()
    assert event.payload["table"] == "T\ufffdX\ufffd"


@pytest.mark.parametrize(
    ("key", "message", "recorded"),
    [
        ("no\x00te", "Unknown field.", "no\ufffdte"),
        ("\ud800", "Not valid Unicode text (an unpaired surrogate).", "\ufffd"),
    ],
)
def test_unknown_fields_with_bad_characters_are_named_and_recorded(
    device: Client, venue: Venue, key: str, message: str, recorded: str
) -> None:
    body = {"venue": venue.pk, "table": "T", "items": [ITEM], key: 1}
    assert assert_rejected(post(device, body), key)[key] == [message]
    (event,) = failures()
    assert event.payload["errors"] == {recorded: [message]}


def test_a_total_over_the_column_is_a_400_on_items_and_recorded(
    device: Client, venue: Venue
) -> None:
    huge = {"name": "Caviar", "quantity": 999, "unitPrice": "99999999.99"}
    fields = assert_rejected(
        post(device, {"venue": venue.pk, "table": "T", "items": [huge]}), "items"
    )
    assert fields["items"] == ["The order's total may be at most 9999999999.99."]
    assert failures()[0].payload["errors"] == {"items": fields["items"]}


def test_totals_and_prices_at_their_column_limits_are_stored_exactly(
    device: Client, venue: Venue
) -> None:
    items = [
        {"name": "Caviar", "quantity": 100, "unitPrice": "99999999.99"},
        {"name": "Bread", "quantity": 1, "unitPrice": 1},
    ]  # 9,999,999,999.00 + 1: the largest total the column holds is 9,999,999,999.99
    assert post(device, {"venue": venue.pk, "table": "T", "items": items}).status_code == 400
    items[1]["unitPrice"] = "0.99"
    response = post(device, {"venue": venue.pk, "table": "T" * 50, "items": items})
    assert response.status_code == 201
    assert response.json()["total"] == "9999999999.99"
    order = Order.objects.get()
    assert str(order.total) == "9999999999.99"
    assert [str(i.unit_price) for i in order.items.all()] == ["99999999.99", "0.99"]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"unitPrice": "100000000.00"}, "items.0.unitPrice"),
        ({"unitPrice": 100000000}, "items.0.unitPrice"),
        ({"unitPrice": "NaN"}, "items.0.unitPrice"),
        ({"unitPrice": "1e2"}, "items.0.unitPrice"),
        ({"unitPrice": 0.1 + 0.2}, "items.0.unitPrice"),
        ({"unitPrice": True}, "items.0.unitPrice"),
        ({"unitPrice": None}, "items.0.unitPrice"),
        ({"quantity": 1000}, "items.0.quantity"),
        ({"quantity": 2**64}, "items.0.quantity"),
        ({"quantity": "3"}, "items.0.quantity"),
        ({"quantity": 2.5}, "items.0.quantity"),
        ({"quantity": True}, "items.0.quantity"),
        ({"name": "x" * 201}, "items.0.name"),
        ({"name": "   "}, "items.0.name"),
        ({"name": 5}, "items.0.name"),
        ({"notes": "extra"}, "items.0.notes"),
    ],
)
def test_numbers_and_types_past_their_limits_are_a_400_naming_the_field(
    device: Client, venue: Venue, item: dict[str, Any], field: str
) -> None:
    body = {"venue": venue.pk, "table": "T", "items": [{**ITEM, **item}]}
    assert_rejected(post(device, body), field)
    assert len(failures()) == 1


def test_a_non_finite_number_is_a_400_not_infinity(device: Client, venue: Venue) -> None:
    item = '{"name": "S", "quantity": 1, "unitPrice": 1e400}'
    text = f'{{"venue": {venue.pk}, "table": "T", "items": [{item}]}}'
    assert_rejected(post_text(device, text), "items.0.unitPrice")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"venue": 2**64}, "venue"),
        ({"venue": -1}, "venue"),
        ({"venue": "1"}, "venue"),
        ({"table": "x" * 51}, "table"),
        ({"table": None}, "table"),
        ({"currency": None}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"items": [ITEM] * 101}, "items"),
        ({"tabel": "T"}, "tabel"),
    ],
)
def test_top_level_fields_past_their_limits_are_a_400_naming_the_field(
    device: Client, venue: Venue, change: dict[str, Any], field: str
) -> None:
    body = {"venue": venue.pk, "table": "T", "items": [ITEM], **change}
    assert_rejected(post(device, body), field)
    assert len(failures()) == 1


def test_an_order_without_currency_takes_the_venues(device: Client, venue: Venue) -> None:
    response = post(device, {"venue": venue.pk, "table": "  Table 5  ", "items": [ITEM]})
    assert response.status_code == 201
    assert response.json()["currency"] == venue.currency
    assert response.json()["table"] == "Table 5"


def test_whole_numbers_written_with_a_fraction_are_whole_numbers_as_in_json_schema(
    device: Client, venue: Venue
) -> None:
    item = {**ITEM, "quantity": 2.0}
    response = post(device, {"venue": float(venue.pk), "table": "T", "items": [item]})
    assert response.status_code == 201, response.content
    assert response.json()["items"][0]["quantity"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "re\x00ady"}, "status"),
        ({"status": "\ud800"}, "status"),
        ({"status": None}, "status"),
        ({"paymentStatus": 1}, "paymentStatus"),
        ({"sta\x00tus": "ready"}, "sta\x00tus"),
        ({"\udfff": "ready"}, "\udfff"),
        ({}, "body"),
    ],
)
def test_bad_changes_are_a_400_naming_the_field_and_change_nothing(
    device: Client, venue: Venue, change: dict[str, Any], field: str
) -> None:
    order_id = post(device, {"venue": venue.pk, "table": "T", "items": [ITEM]}).json()["id"]
    response = device.patch(
        f"/api/v1/orders/{order_id}", json.dumps(change), content_type="application/json"
    )
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.payment_status) == ("placed", "pending")
    assert not OrderEvent.objects.filter(kind=OrderEventKind.STATUS_CHANGED).exists()


def test_an_order_id_past_the_column_is_not_found(device: Client) -> None:
    assert device.get(f"/api/v1/orders/{2**70}").status_code == 404


def test_an_unknown_api_path_is_a_json_404_and_the_admins_stays_html(
    device: Client, staff_user: Any
) -> None:
    for url in ("/api/v1/orders/-1", "/api/v1/orders/abc", "/api/v2/nothing"):
        response = device.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get("/admin/no-such-page/").status_code == 404
    assert not Client().get("/no-such-page").headers["Content-Type"].startswith("application/json")


def test_a_body_over_the_upload_limit_is_a_json_413(device: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = device.post(
        "/api/v1/orders", '{"table": "' + "x" * 2000 + '"}', content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_a_crash_under_api_is_a_json_500(device: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("orders.api._authenticate", broken)
    device.raise_request_exception = False
    response = device.get("/api/v1/orders/1")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "server_error", "message": "The server failed; the error is logged."}
    }


def test_a_crash_whose_audit_also_fails_still_answers_the_apis_500(
    device: Client, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database gone")

    monkeypatch.setattr("orders.api.OrderItem.objects.bulk_create", broken)
    monkeypatch.setattr("orders.api.events.order_creation_failed", broken)
    response = post(device, {"venue": venue.pk, "table": "T", "items": [ITEM]})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert not Order.objects.exists()
