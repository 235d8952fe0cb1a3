"""The orders JSON API: POST /api/v1/orders and PATCH /api/v1/orders/<id>.

Callers are a staff session (with the CSRF token, as for any session-authenticated
write) or a device holding the venue's token in `Authorization: Bearer iwv_...`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from inkwave.api_errors import ErrorJSON, is_database_unreachable, json_error
from inkwave.openapi import SESSION, Answer, SecurityScheme, operation
from orders import events
from orders.models import Order, OrderItem, OrderStatus, Venue, VenueAccessToken
from orders.outage import rides_through_database_outages
from orders.serializers import (
    NewOrder,
    NewOrderIn,
    OrderChangeIn,
    OrderJSON,
    order_json,
    validate_change,
    validate_new_order,
)

logger = structlog.get_logger(__name__)

VENUE_TOKEN = SecurityScheme(
    "venueToken",
    {"type": "http", "scheme": "bearer", "description": "A venue access token (iwv_...)."},
)
ORDERS_AUTH = (VENUE_TOKEN, SESSION)
ORDER = Answer("The order", OrderJSON)
INVALID = Answer("Invalid input: `fields` names each bad field; nothing changed", ErrorJSON)
UNAUTHENTICATED = Answer("No or wrong credentials", ErrorJSON)
NOT_JSON = Answer("The body is not application/json", ErrorJSON)
UNAVAILABLE = Answer("The database does not answer: try again after Retry-After seconds", ErrorJSON)


class Caller:
    def __init__(self, token: VenueAccessToken | None, user: Any) -> None:
        self.token = token
        self.user = user

    def may_use(self, venue: Venue) -> bool:
        if self.token is not None:
            return self.token.venue_id == venue.pk
        return venue.is_accessible_by(self.user)


def _authenticate(request: HttpRequest) -> tuple[Caller | None, JsonResponse | None]:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() == "bearer" and raw.strip():
        token = VenueAccessToken.authenticate(raw.strip())
        if token is None:
            return None, json_error(401, "invalid_token", "The venue token is not valid.")
        structlog.contextvars.bind_contextvars(venue=token.venue_id)
        return Caller(token, None), None
    if not request.user.is_authenticated:
        return None, json_error(
            401, "unauthenticated", "Sign in, or send Authorization: Bearer <venue token>."
        )
    # Session-authenticated writes need the CSRF token, as the admin's forms do (reads pass).
    rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})  # type: ignore[arg-type,return-value]
    if rejected is not None:
        return None, json_error(403, "csrf_failed", "CSRF verification failed.")
    structlog.contextvars.bind_contextvars(user=request.user.pk)
    return Caller(None, request.user), None


def _body(request: HttpRequest) -> tuple[Any, JsonResponse | None]:
    if not (request.content_type or "").startswith("application/json"):
        return None, json_error(415, "unsupported_media_type", "Send application/json.")
    try:
        return json.loads(request.body or b"null"), None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, json_error(400, "invalid_json", "The body is not valid JSON.")


def _invalid(errors: dict[str, list[str]]) -> JsonResponse:
    body: ErrorJSON = {
        "error": {"code": "invalid", "message": "Some fields are not valid.", "fields": errors}
    }
    return JsonResponse(body, status=400)


def _resolve_venue(data: Any) -> Venue | None:
    raw = data.get("venue") if isinstance(data, dict) else None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # 12.0 is the integer 12 in JSON, as in the published schema
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    return Venue.objects.filter(pk=raw, is_active=True).first()


@operation(
    "post",
    summary="Place an order",
    body=NewOrderIn,
    responses={
        201: ORDER,
        400: INVALID,
        401: UNAUTHENTICATED,
        403: Answer("Not for this venue, or a session without its CSRF token", ErrorJSON),
        415: NOT_JSON,
        422: Answer("The Idempotency-Key was already used for a different order", ErrorJSON),
        500: Answer("The order could not be created; the failure is recorded", ErrorJSON),
        503: UNAVAILABLE,
    },
    auth=ORDERS_AUTH,
    tags=["orders"],
    headers=[
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "A key the client makes up for this order (a UUID): a retry with it "
            "(after no answer, or a 503) gets the order it made, never a second one. Kept per "
            "venue with the order; the same key for a different order is a 422.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!#-~]+$"},
        }
    ],
)
@csrf_exempt
@rides_through_database_outages
def orders_collection(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return json_error(405, "method_not_allowed", "POST an order here.")
    caller, refused = _authenticate(request)
    if refused is not None:
        return refused
    assert caller is not None
    data, bad = _body(request)
    if bad is not None:
        return bad
    venue = _resolve_venue(data)
    if venue is not None and not caller.may_use(venue):
        return json_error(403, "forbidden", "You may not order for this venue.")
    new_order, errors = validate_new_order(data, venue)
    key, key_errors = _idempotency_key(request)
    errors = {**errors, **key_errors}
    table = data.get("table", "") if isinstance(data, dict) else ""
    if new_order is None or key_errors:
        with transaction.atomic():
            events.order_creation_failed(
                venue, reason="validation failed", errors=errors, table=str(table)
            )
        return _invalid(errors)
    digest = _digest(new_order) if key else ""
    if key and (replay := _replay(new_order.venue, key, digest)) is not None:
        return replay
    try:
        with transaction.atomic():
            order = _create(new_order, key, digest)
            events.order_placed(order)
    except IntegrityError as exc:
        # The same key's first request committed between our look and our insert.
        if key and (replay := _replay(new_order.venue, key, digest)) is not None:
            return replay
        return _crashed(exc, venue, table)
    except Exception as exc:
        if is_database_unreachable(exc):
            raise  # the database went away since the look above: a 503 to retry, not a 500
        return _crashed(exc, venue, table)
    return JsonResponse(order_json(order), status=201)


# An Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): visible ASCII, as Stripe's
# and most clients' keys are (a UUID is typical); a Structured Field's quotes are taken off.
def _idempotency_key(request: HttpRequest) -> tuple[str | None, dict[str, list[str]]]:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None, {}
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= 255 or any(not "!" <= c <= "~" or c == '"' for c in key):
        return None, {"Idempotency-Key": ["1 to 255 visible ASCII characters, such as a UUID."]}
    return key, {}


def _digest(new: NewOrder) -> str:
    """What the order asks for, independent of how the JSON spelled it ("12.5" or 12.50)."""
    items = [[i.name, i.quantity, f"{i.unit_price:.2f}"] for i in new.items]
    canonical = json.dumps([new.table, new.currency, items], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(venue: Venue, key: str, digest: str) -> JsonResponse | None:
    """The order an earlier request with this key created, as it was answered then (201)."""
    order = (
        Order.objects.select_related("venue")
        .prefetch_related("items")
        .filter(venue=venue, idempotency_key=key)
        .first()
    )
    if order is None:
        return None
    if order.request_digest != digest:
        return json_error(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different order.",
        )
    logger.info("order_request_replayed", order=order.pk)
    response = JsonResponse(order_json(order), status=201)
    response["Idempotent-Replayed"] = "true"
    return response


def _crashed(exc: Exception, venue: Venue | None, table: Any) -> JsonResponse:
    """Called inside the `except`: the failure is logged with its traceback and recorded."""
    logger.exception("order_creation_crashed", venue=venue.pk if venue else None)
    try:
        with transaction.atomic():
            events.order_creation_failed(
                venue, reason=f"server error: {type(exc).__name__}", table=str(table)
            )
    except Exception:
        # The database may be what failed: the caller still gets the API's JSON error.
        logger.exception("order_failure_not_recorded", venue=venue.pk if venue else None)
    return json_error(500, "server_error", "The order could not be created; it was reported.")


def _create(new: NewOrder, key: str | None = None, digest: str = "") -> Order:
    # The UPDATE holds the venue row's lock until commit, so numbers never repeat.
    Venue.objects.filter(pk=new.venue.pk).update(order_counter=F("order_counter") + 1)
    number = Venue.objects.values_list("order_counter", flat=True).get(pk=new.venue.pk)
    order = Order.objects.create(
        venue=new.venue,
        number=number,
        table=new.table,
        currency=new.currency,
        total=new.total,
        idempotency_key=key or "",
        request_digest=digest,
    )
    OrderItem.objects.bulk_create(
        [
            OrderItem(order=order, name=i.name, quantity=i.quantity, unit_price=i.unit_price)
            for i in new.items
        ]
    )
    return Order.objects.select_related("venue").prefetch_related("items").get(pk=order.pk)


@operation(
    "get",
    summary="An order",
    responses={
        200: ORDER,
        401: UNAUTHENTICATED,
        404: Answer("No such order", ErrorJSON),
        503: UNAVAILABLE,
    },
    auth=ORDERS_AUTH,
    tags=["orders"],
)
@operation(
    "patch",
    summary="Change an order's status or payment status",
    body=OrderChangeIn,
    responses={
        200: ORDER,
        400: INVALID,
        401: UNAUTHENTICATED,
        403: Answer("A session without its CSRF token", ErrorJSON),
        404: Answer("No such order (or not this caller's)", ErrorJSON),
        415: NOT_JSON,
        503: UNAVAILABLE,
    },
    auth=ORDERS_AUTH,
    tags=["orders"],
)
@csrf_exempt
@rides_through_database_outages
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    if request.method not in ("PATCH", "GET"):
        return json_error(405, "method_not_allowed", "GET or PATCH an order.")
    caller, refused = _authenticate(request)
    if refused is not None:
        return refused
    assert caller is not None
    order = Order.objects.select_related("venue").filter(pk=order_id).first()
    if order is None or not caller.may_use(order.venue):
        return json_error(404, "not_found", "No such order.")
    if request.method == "GET":
        return JsonResponse(order_json(order))
    data, bad = _body(request)
    if bad is not None:
        return bad
    with transaction.atomic():
        locked = (
            Order.objects.select_for_update(of=("self",)).select_related("venue").get(pk=order.pk)
        )
        changes, errors = validate_change(data, locked)
        if errors:
            return _invalid(errors)
        diff = {
            field: (getattr(locked, field), value)
            for field, value in changes.items()
            if getattr(locked, field) != value
        }
        if diff:
            for field, (_, value) in diff.items():
                setattr(locked, field, value)
            locked.save(update_fields=[*diff, "updated_at"])
            events.order_changed(locked, diff)
    return JsonResponse(order_json(locked))


class OpenOrdersJSON(TypedDict):
    venue: int
    seq: int
    orders: list[OrderJSON]


# Orders a kitchen screen still shows: neither completed nor cancelled.
CLOSED_STATUSES = (OrderStatus.COMPLETED, OrderStatus.CANCELLED)


@operation(
    "get",
    summary="A venue's open orders, and the room sequence number they are as of",
    responses={
        200: Answer(
            "The open orders, oldest first; connect to the room with ?after=<seq> to follow "
            "from there without missing or losing anything",
            OpenOrdersJSON,
        ),
        401: UNAUTHENTICATED,
        404: Answer("No such venue (or not this caller's)", ErrorJSON),
        503: UNAVAILABLE,
    },
    auth=ORDERS_AUTH,
    tags=["orders"],
)
@csrf_exempt
@rides_through_database_outages
def venue_open_orders(request: HttpRequest, venue_id: int) -> JsonResponse:
    """A screen's full state: what it reloads when the room tells it to (`resync`).

    The number is read before the orders: an event after it may already show in them (an
    event is the whole order as it became, so applying it again changes nothing), but no
    change can be in neither.
    """
    if request.method != "GET":
        return json_error(405, "method_not_allowed", "GET a venue's open orders.")
    caller, refused = _authenticate(request)
    if refused is not None:
        return refused
    assert caller is not None
    venue = Venue.objects.filter(pk=venue_id, is_active=True).first()
    if venue is None or not caller.may_use(venue):
        return json_error(404, "not_found", "No such venue.")
    seq = Venue.objects.values_list("room_seq", flat=True).get(pk=venue.pk)
    orders = (
        Order.objects.filter(venue=venue)
        .exclude(status__in=CLOSED_STATUSES)
        .select_related("venue")
        .prefetch_related("items")
        .order_by("created_at", "pk")
    )
    body: OpenOrdersJSON = {
        "venue": venue.pk,
        "seq": seq,
        "orders": [order_json(order) for order in orders],
    }
    return JsonResponse(body)
