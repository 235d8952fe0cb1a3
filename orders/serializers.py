"""Orders as JSON (the API and the venue room speak the same camelCase), and request validation.

Request bodies are pydantic models: they validate each request, and the OpenAPI document
(`inkwave.openapi`) is generated from them, so the published description and the checks are one.
Limits come from the columns they guard, so input that passes always fits the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from django.db import models
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from orders.models import Order, OrderItem, OrderStatus, PaymentStatus, Venue


def _decimal_limit(model: type[models.Model], name: str) -> tuple[Decimal, int, int]:
    """The largest value a DecimalField holds, with its whole and decimal digit counts."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.DecimalField)
    digits, places = field.max_digits or 0, field.decimal_places or 0
    return Decimal(10) ** (digits - places) - Decimal(1).scaleb(-places), digits - places, places


def _max_length(model: type[models.Model], name: str) -> int:
    field = model._meta.get_field(name)
    assert isinstance(field, models.CharField)
    assert field.max_length is not None
    return field.max_length


MAX_ITEMS = 100
MAX_QUANTITY = 999
MAX_UNIT_PRICE, PRICE_WHOLE_DIGITS, PRICE_PLACES = _decimal_limit(OrderItem, "unit_price")
MAX_TOTAL = _decimal_limit(Order, "total")[0]
MAX_TABLE_LENGTH = _max_length(Order, "table")
MAX_NAME_LENGTH = _max_length(OrderItem, "name")
MAX_ID = 2**63 - 1  # BigAutoField
TERMINAL_STATUSES = (OrderStatus.COMPLETED, OrderStatus.CANCELLED)

FieldErrors = dict[str, list[str]]
ModelT = TypeVar("ModelT", bound=BaseModel)


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


# Input text is one line: no C0 or C1 control characters, NUL among them (which PostgreSQL
# cannot store). Unpaired surrogates are refused by pydantic itself ("string_unicode").
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
PRICE_PATTERN = rf"^[0-9]{{1,{PRICE_WHOLE_DIGITS}}}(\.[0-9]{{1,{PRICE_PLACES}}})?$"


def _stripped(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "This field is required.")
    return value.strip()


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# An optional field that may not be null: left out, it is absent from `model_fields_set`.
# (pydantic does not validate a default, and the schema should not publish `"default": null`.)
OPTIONAL: Any = Field(default=None, json_schema_extra=_drop_default)

TableName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TABLE_LENGTH, pattern=PRINTABLE),
    AfterValidator(_stripped),
]
ItemName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=PRINTABLE),
    AfterValidator(_stripped),
]
PriceInput = (
    Annotated[str, Field(pattern=PRICE_PATTERN)]
    | Annotated[float, Strict(), Field(ge=0, le=float(MAX_UNIT_PRICE), allow_inf_nan=False)]
)
_price_input: TypeAdapter[str | float] = TypeAdapter(PriceInput)
PRICE_HINT = f'A price such as "12.50": from 0 to {MAX_UNIT_PRICE}, at most two decimal places.'


def _price(value: Any) -> Decimal:
    """A decimal string or a JSON number, as a Decimal with at most two places."""
    try:
        price = Decimal(str(_price_input.validate_python(value)))
    except ValidationError:
        raise PydanticCustomError("price", PRICE_HINT) from None
    if price.as_tuple().exponent < -PRICE_PLACES:  # type: ignore[operator]
        raise PydanticCustomError("price", PRICE_HINT)
    return price


Price = Annotated[Decimal, PlainValidator(_price, json_schema_input_type=PriceInput)]


def _whole(value: Any) -> Any:
    # JSON Schema counts 2.0 as an integer, as JSON does; true is not a number at all.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ItemName
    quantity: Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY), BeforeValidator(_whole)]
    unitPrice: Price  # the API speaks camelCase


class NewOrderIn(BaseModel):
    """POST /api/v1/orders. `currency`, when sent, must be the venue's."""

    model_config = ConfigDict(extra="forbid")

    venue: Annotated[int, Strict(), Field(ge=1, le=MAX_ID), BeforeValidator(_whole)]
    table: TableName
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = OPTIONAL
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]


class OrderChangeIn(BaseModel):
    """PATCH /api/v1/orders/<id>: status and/or paymentStatus."""

    model_config = ConfigDict(
        extra="forbid", title="OrderChange", json_schema_extra={"minProperties": 1}
    )

    status: OrderStatus = OPTIONAL
    paymentStatus: PaymentStatus = OPTIONAL

    @model_validator(mode="after")
    def _something(self) -> OrderChangeIn:
        if not self.model_fields_set:
            raise PydanticCustomError("empty", "Send status and/or paymentStatus.")
        return self


# Wording for each field whatever pydantic found wrong with it; then by kind of error.
FIELD_HINTS = {
    "venue": "A venue id (a whole number).",
    "currency": "An ISO 4217 code such as USD: the venue's currency.",
    "items": f"From 1 to {MAX_ITEMS} items.",
    "quantity": f"A whole number from 1 to {MAX_QUANTITY}.",
    "status": f"One of {', '.join(OrderStatus.values)}.",
    "paymentStatus": f"One of {', '.join(PaymentStatus.values)}.",
}
MESSAGES = {
    "missing": "This field is required.",
    "string_type": "This field is required.",
    "string_too_short": "This field is required.",
    "string_too_long": "At most {max_length} characters.",
    "string_pattern_mismatch": "One line of text, without control characters.",
    "string_unicode": "Not valid Unicode text (an unpaired surrogate).",  # values; keys: below
    "model_type": "An object with name, quantity and unitPrice.",
}


def field_errors(errors: list[ErrorDetails], extra: str = "Unknown field.") -> FieldErrors:
    """pydantic's errors as the API's `fields`: messages by dotted path (`items.0.quantity`)."""
    fields: FieldErrors = {}
    for error in errors:
        path = ".".join(str(part) for part in error["loc"]) or "body"
        name = next((p for p in reversed(error["loc"]) if isinstance(p, str)), "")
        kind = error["type"]
        if kind == "extra_forbidden":
            message = extra
        elif kind in ("missing", "string_unicode") or name not in FIELD_HINTS:
            template = MESSAGES.get(kind, error["msg"])
            message = template.format(**error.get("ctx", {})) if kind in MESSAGES else template
        else:
            message = FIELD_HINTS[name]
        if message not in fields.setdefault(path, []):
            fields[path].append(message)
    return fields


UNPAIRED_SURROGATE = "Not valid Unicode text (an unpaired surrogate)."


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bad_keys(data: Any, path: str = "") -> FieldErrors:
    """Keys that are not valid Unicode, by path: pydantic can only blame their whole object."""
    errors: FieldErrors = {}
    if isinstance(data, list):
        for index, value in enumerate(data):
            errors |= _bad_keys(value, f"{path}{index}.")
    elif isinstance(data, dict):
        for key, value in data.items():
            if not _is_unicode(key):
                errors[f"{path}{key}"] = [UNPAIRED_SURROGATE]
            else:
                errors |= _bad_keys(value, f"{path}{key}.")
    return errors


def _validate(model: type[ModelT], data: Any, extra: str) -> tuple[ModelT | None, FieldErrors]:
    if not isinstance(data, dict):
        return None, {"body": ["A JSON object is required."]}
    if bad := _bad_keys(data):
        return None, bad
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        return None, field_errors(exc.errors(), extra)


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


def validate_new_order(data: Any, venue: Venue | None) -> tuple[NewOrder | None, FieldErrors]:
    """The order, or the field errors; `venue` is None when the venue field did not resolve."""
    valid, errors = _validate(NewOrderIn, data, "Unknown field.")
    if valid is None:
        return None, errors
    if venue is None:
        return None, {"venue": ["No such venue."]}
    if "currency" in valid.model_fields_set and valid.currency != venue.currency:
        return None, {"currency": [f"This venue takes {venue.currency}."]}
    items = [ValidItem(i.name, i.quantity, i.unitPrice) for i in valid.items]
    order = NewOrder(venue, valid.table, venue.currency, items)
    if order.total > MAX_TOTAL:
        return None, {"items": [f"The order's total may be at most {MAX_TOTAL}."]}
    return order, {}


def validate_change(data: Any, order: Order) -> tuple[dict[str, str], FieldErrors]:
    """The model fields to change, or field errors."""
    valid, errors = _validate(OrderChangeIn, data, "Only status and paymentStatus can be changed.")
    if valid is None:
        return {}, errors
    changes: dict[str, str] = {}
    if "status" in valid.model_fields_set:
        if order.status in TERMINAL_STATUSES and valid.status != order.status:
            message = f"The order is {order.status}; its status can no longer change."
            return {}, {"status": [message]}
        changes["status"] = valid.status
    if "paymentStatus" in valid.model_fields_set:
        changes["payment_status"] = valid.paymentStatus
    return changes, {}
