"""The OpenAPI document: served, complete, and generated from the code that validates requests."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, path
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from inkwave.openapi import SESSION, Answer, build_document, operation
from orders.models import Order


@pytest.fixture
def document(client: Client) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_it_describes_the_orders_and_monitoring_endpoints(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    operations = {
        (path, method) for path, methods in document["paths"].items() for method in methods
    }
    assert operations == {
        ("/health", "get"),
        ("/health/live", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/monitoring/websocket/stats", "get"),
        ("/api/v1/monitoring/websocket/health", "get"),
        ("/api/v1/monitoring/database/health", "get"),
        ("/api/v1/monitoring/dashboard/history", "get"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{order_id}", "get"),
        ("/api/v1/orders/{order_id}", "patch"),
        ("/api/v1/venues/{venue_id}/orders", "get"),
    }
    detail = document["paths"]["/api/v1/orders/{order_id}"]["patch"]
    assert detail["parameters"] == [
        {
            "name": "order_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    ]
    assert detail["security"] == [{"venueToken": []}, {"session": []}]
    assert set(document["components"]["securitySchemes"]) == {
        "venueToken",
        "monitoringToken",
        "session",
    }
    assert document["paths"]["/health"]["get"]["security"] == []


def test_the_published_limits_are_the_columns(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    new_order = schemas["NewOrderIn"]
    assert new_order["additionalProperties"] is False
    assert set(new_order["required"]) == {"venue", "table", "items"}
    table = Order._meta.get_field("table")
    assert new_order["properties"]["table"]["maxLength"] == table.max_length == 50
    item = schemas["ItemIn"]["properties"]
    assert item["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 999,
        "title": "Quantity",
    }
    price_string, price_number = item["unitPrice"]["anyOf"]
    assert price_string["pattern"] == r"^[0-9]{1,8}(\.[0-9]{1,2})?$"
    assert price_number["maximum"] == 99999999.99
    error = schemas["ErrorDetailJSON"]
    assert set(error["required"]) == {"code", "message"}
    assert "fields" in error["properties"]


def _routes(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found += _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            found.append((route, entry.callback))
    return found


def test_every_api_and_health_url_is_described() -> None:
    """A new endpoint cannot be left out of the document: its view must declare itself."""
    public = [
        (route, view)
        for route, view in _routes(get_resolver().url_patterns)
        if route.startswith(("api/", "health"))
    ]
    assert len(public) == 10
    undescribed = [route for route, view in public if not hasattr(view, "openapi_operations")]
    assert undescribed == []


class GadgetIn(BaseModel):
    size: int = Field(ge=1, le=9)


class GadgetJSON(TypedDict):
    id: int


@operation(
    "put",
    summary="Replace a gadget",
    body=GadgetIn,
    responses={200: Answer("The gadget", GadgetJSON)},
    auth=[SESSION],
)
def gadget(request: HttpRequest, shop: str, gadget_id: int) -> JsonResponse:
    raise AssertionError("never called")


def test_the_document_follows_the_declarations_and_the_url_patterns() -> None:
    document = build_document([path("shops/<slug:shop>/gadgets/<int:gadget_id>", gadget)])
    (entry,) = document["paths"]["/shops/{shop}/gadgets/{gadget_id}"].values()
    assert entry["operationId"] == "gadget_put"
    assert [p["name"] for p in entry["parameters"]] == ["shop", "gadget_id"]
    assert entry["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GadgetIn"
    }
    size = document["components"]["schemas"]["GadgetIn"]["properties"]["size"]
    assert (size["minimum"], size["maximum"]) == (1, 9)
    ok = entry["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/GadgetJSON"}
    assert document["components"]["securitySchemes"] == {"session": dict(SESSION.spec)}
