"""Orders as JSON (the API and the venue room speak the same camelCase), and request validation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypedDict

from orders.models import Order, OrderStatus, PaymentStatus, Venue

MAX_ITEMS = 100
MAX_QUANTITY = 999
MAX_UNIT_PRICE = Decimal("99999999.99")
TERMINAL_STATUSES = (OrderStatus.COMPLETED, OrderStatus.CANCELLED)

FieldErrors = dict[str, list[str]]


class ItemJSON(TypedDict):
    name: str
    quantity: int
    unitPrice: str


class OrderJSON(TypedDict):
    id: int
    number: int
    venue: int
    table: str
    status: str
    paymentStatus: str
    currency: str
    total: str
    items: list[ItemJSON]
    createdAt: str
    updatedAt: str


def order_json(order: Order) -> OrderJSON:
    return {
        "id": order.pk,
        "number": order.number,
        "venue": order.venue_id,
        "table": order.table,
        "status": order.status,
        "paymentStatus": order.payment_status,
        "currency": order.currency,
        "total": f"{order.total:.2f}",
        "items": [
            {"name": item.name, "quantity": item.quantity, "unitPrice": f"{item.unit_price:.2f}"}
            for item in order.items.all()
        ],
        "createdAt": order.created_at.isoformat(),
        "updatedAt": order.updated_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class ValidItem:
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class NewOrder:
    venue: Venue
    table: str
    currency: str
    items: list[ValidItem]

    @property
    def total(self) -> Decimal:
        return sum((item.unit_price * item.quantity for item in self.items), Decimal("0.00"))


def _text(value: Any, field: str, errors: FieldErrors, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.setdefault(field, []).append("This field is required.")
        return ""
    if len(value.strip()) > max_length:
        errors.setdefault(field, []).append(f"At most {max_length} characters.")
    return value.strip()


def _price(value: Any, field: str, errors: FieldErrors) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        errors.setdefault(field, []).append('A price such as "12.50".')
        return Decimal(0)
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        errors.setdefault(field, []).append('A price such as "12.50".')
        return Decimal(0)
    if not price.is_finite() or price < 0 or price > MAX_UNIT_PRICE:
        errors.setdefault(field, []).append(f"Between 0 and {MAX_UNIT_PRICE}.")
    elif price.as_tuple().exponent < -2:  # type: ignore[operator]
        errors.setdefault(field, []).append("At most two decimal places.")
    return price


def _items(value: Any, errors: FieldErrors) -> list[ValidItem]:
    if not isinstance(value, list) or not value:
        errors.setdefault("items", []).append("At least one item is required.")
        return []
    if len(value) > MAX_ITEMS:
        errors.setdefault("items", []).append(f"At most {MAX_ITEMS} items.")
        return []
    items = []
    for index, raw in enumerate(value):
        prefix = f"items.{index}"
        if not isinstance(raw, dict):
            errors.setdefault(prefix, []).append("An object with name, quantity and unitPrice.")
            continue
        name = _text(raw.get("name"), f"{prefix}.name", errors, 200)
        quantity = raw.get("quantity")
        if (
            isinstance(quantity, bool)
            or not isinstance(quantity, int)
            or not (1 <= quantity <= MAX_QUANTITY)
        ):
            errors.setdefault(f"{prefix}.quantity", []).append(
                f"A whole number from 1 to {MAX_QUANTITY}."
            )
            quantity = 0
        price = _price(raw.get("unitPrice"), f"{prefix}.unitPrice", errors)
        items.append(ValidItem(name, quantity, price))
    return items


def validate_new_order(data: Any, venue: Venue | None) -> tuple[NewOrder | None, FieldErrors]:
    """The order, or the field errors; `venue` is None when the venue field did not resolve."""
    errors: FieldErrors = {}
    if not isinstance(data, dict):
        return None, {"body": ["A JSON object is required."]}
    if venue is None:
        errors["venue"] = ["No such venue."]
    table = _text(data.get("table"), "table", errors, 50)
    items = _items(data.get("items"), errors)
    currency = data.get("currency")
    if venue is not None and currency is not None and currency != venue.currency:
        errors.setdefault("currency", []).append(f"This venue takes {venue.currency}.")
    if errors or venue is None:
        return None, errors
    return NewOrder(venue, table, venue.currency, items), errors


def validate_change(data: Any, order: Order) -> tuple[dict[str, str], FieldErrors]:
    """The model fields to change, or field errors."""
    if not isinstance(data, dict):
        return {}, {"body": ["A JSON object is required."]}
    errors: FieldErrors = {}
    changes: dict[str, str] = {}
    unknown = set(data) - {"status", "paymentStatus"}
    for name in sorted(unknown):
        errors[name] = ["Only status and paymentStatus can be changed."]
    if not set(data) & {"status", "paymentStatus"}:
        errors.setdefault("body", []).append("Send status and/or paymentStatus.")
    if "status" in data:
        if data["status"] not in OrderStatus.values:
            errors["status"] = [f"One of {', '.join(OrderStatus.values)}."]
        elif order.status in TERMINAL_STATUSES and data["status"] != order.status:
            errors["status"] = [f"The order is {order.status}; its status can no longer change."]
        else:
            changes["status"] = data["status"]
    if "paymentStatus" in data:
        if data["paymentStatus"] not in PaymentStatus.values:
            errors["paymentStatus"] = [f"One of {', '.join(PaymentStatus.values)}."]
        else:
            changes["payment_status"] = data["paymentStatus"]
    return ({} if errors else changes), errors
