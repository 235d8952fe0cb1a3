"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, on hypothesis).

Thousands of generated requests, valid and invalid, go through the real Django WSGI handler and
the real database. None may be a 5xx; every answer must match the document (status, content type,
body schema); input the document calls invalid must be refused; and what is stored keeps the
orders' invariants. Derandomized: the same requests every run, so a failure is reproducible.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_DOWN, Decimal
from typing import Any, TypeGuard

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.db.models import Count, F, Sum
from django.test import Client
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from orders.models import Order, OrderEvent, OrderEventKind, OrderItem, Venue
from orders.serializers import MAX_ID, MAX_TOTAL, TERMINAL_STATUSES

MONITORING_TOKEN = "fuzz-monitoring-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
SEEDED_ORDERS = 5
# Generated cases per orders operation: 200 by default (about 30 s fewer than the 700 it was; the
# HTML 404 of /api/v1/orders/-1 the fuzzing once found, put back, still fails the run at 200).
# FUZZ_EXAMPLES=700 or more is a deeper run, worth one after a change to the API or its models.
ORDER_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


# Loaded as a client would, from the endpoint, through the WSGI handler the cases are sent to.
# (Not schemathesis.pytest.from_fixture: its lazy loader does not run on pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())
# The cases carry real credentials (Fuzz.headers); random tokens would only multiply the 401s
# that tests/test_orders_api.py and tests/test_monitoring_api.py already cover.
schema.config.generation.update(with_security_parameters=False, unique_inputs=True)
ORDERS = "^/api/v1/orders"


class Fuzz:
    """Points generated cases at real rows, sends them, and checks what they left behind."""

    def __init__(self, venue: Venue, token: str, orders: list[int], statuses: Tally) -> None:
        self.venue = venue
        self.token = token
        self.orders = orders
        self.statuses = statuses

    def aim(self, case: Any) -> None:
        # Generated ids rarely exist. Replace most in-range ones with real rows; an in-range
        # value stays in range, so a case the document calls invalid stays invalid.
        body = case.body
        venue = body.get("venue") if isinstance(body, dict) else None
        if _in_range(venue, 1) and venue % 5:
            body["venue"] = self.venue.pk
            if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
                self.fit(body)
        order_id = (case.path_parameters or {}).get("order_id")
        if _in_range(order_id, 0) and order_id % 5:
            case.path_parameters["order_id"] = self.orders[order_id % len(self.orders)]

    def fit(self, body: dict[str, Any]) -> None:
        """Keep a valid order within what the document cannot say, so that most are placed.

        The schema cannot express "the venue's currency", "two decimal places" for a JSON
        number, or the limit on the sum of the lines: generated orders mostly break one of
        them, rightly get a 400, and would leave creation itself untested.
        """
        if "currency" in body:
            body["currency"] = self.venue.currency
        items = body["items"]
        for item in items:
            if isinstance(item["unitPrice"], float):
                price = Decimal(repr(item["unitPrice"])).quantize(Decimal("0.01"), ROUND_DOWN)
                item["unitPrice"] = str(price)
        while len(items) > 1 and _total(items) > MAX_TOTAL:
            items.pop()
        if _total(items) > MAX_TOTAL:
            items[0]["quantity"] = 1

    def headers(self, case: Any) -> dict[str, str]:
        monitoring = case.path.startswith("/api/v1/monitoring/")
        return {"Authorization": f"Bearer {MONITORING_TOKEN if monitoring else self.token}"}

    def send(self, case: Any) -> Any:
        self.aim(case)
        failed_before = _failures()
        changing = _order_before(case)
        response = case.call(headers=self.headers(case))
        self.statuses[(f"{case.method} {case.path}", response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)
        if case.method == "POST" and case.path == "/api/v1/orders":
            _check_creation(response, failed_before)
        if changing is not None:
            _check_change(changing)
        return response


def _total(items: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(i["unitPrice"])) * int(i["quantity"]) for i in items), Decimal(0))


def _in_range(value: object, low: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_ID


def _failures() -> int:
    return OrderEvent.objects.filter(kind=OrderEventKind.CREATION_FAILED).count()


def _order_before(case: Any) -> Order | None:
    order_id = (case.path_parameters or {}).get("order_id")
    if case.method != "PATCH" or not _in_range(order_id, 0):
        return None
    return Order.objects.filter(pk=order_id).first()


def _check_creation(response: Any, failed_before: int) -> None:
    if response.status_code == 201:
        order = Order.objects.get(pk=response.json()["id"])
        assert order.total == sum(i.line_total for i in order.items.all())
        assert _failures() == failed_before
    elif response.status_code in (400, 500) and response.json()["error"]["code"] in (
        "invalid",
        "server_error",
    ):
        assert _failures() == failed_before + 1, "a failed creation was not recorded"


def _check_change(before: Order) -> None:
    after = Order.objects.get(pk=before.pk)
    if before.status in TERMINAL_STATUSES:
        assert after.status == before.status
    assert (after.total, after.number, after.table) == (before.total, before.number, before.table)


def assert_stored_invariants() -> None:
    line_total = F("items__unit_price") * F("items__quantity")
    for order in Order.objects.annotate(items_total=Sum(line_total), lines=Count("items")):
        assert order.lines >= 1, order.pk
        assert order.total == order.items_total, order.pk
    for venue in Venue.objects.all():
        numbers = list(venue.orders.order_by("pk").values_list("number", flat=True))
        # Unique and increasing, without gaps: a failed creation hands out no number.
        assert numbers == list(range(1, len(numbers) + 1))
        assert venue.order_counter == len(numbers)
    assert not OrderItem.objects.filter(quantity__lt=1).exists()


Tally = Counter[tuple[str, int]]  # (operation, status) -> answers


@pytest.fixture(scope="module")
def statuses() -> Iterator[Tally]:
    """Every answer's status over the whole module, printed at the end (`-s` shows it)."""
    counted: Tally = Counter()
    yield counted
    server_errors = sum(n for (_, status), n in counted.items() if status >= 500)
    print(f"\nfuzzed {counted.total()} requests, {server_errors} 5xx")
    for operation in sorted({operation for operation, _ in counted}):
        answers = {status: n for (op, status), n in sorted(counted.items()) if op == operation}
        print(f"  {operation}: {answers}")


@contextmanager
def keeping_the_tests_transaction() -> Iterator[None]:
    # As Django's test client does around each request: a request's start and end must not
    # close the connection that holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz(venue: Venue, venue_token: str, settings: Any, statuses: Tally) -> Iterator[Fuzz]:
    settings.MONITORING_TOKEN = MONITORING_TOKEN
    # A web worker that reports: otherwise the WebSocket health is rightly 503.
    monitor = WebSocketMonitor()
    start = MonitorSnapshot.empty(monitor.started_at)
    SampleRecorder(WorkerIdentity(name="web-1"), start).flush(monitor.snapshot())
    device = Client(HTTP_AUTHORIZATION=f"Bearer {venue_token}")
    item = {"name": "Soup", "quantity": 1, "unitPrice": "4.50"}
    orders = [
        device.post(
            "/api/v1/orders",
            {"venue": venue.pk, "table": f"T{n}", "items": [item]},
            content_type="application/json",
        ).json()["id"]
        for n in range(SEEDED_ORDERS)
    ]
    with keeping_the_tests_transaction():
        yield Fuzz(venue, venue_token, orders, statuses)
    assert_stored_invariants()


def fuzz_settings(examples: int) -> Any:
    return hypothesis_settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# The orders views run in the test's thread, inside its transaction: nothing is committed, so
# thousands of requests stay fast.
@pytest.mark.django_db
@schema.include(path_regex=ORDERS).parametrize()
@fuzz_settings(examples=ORDER_EXAMPLES)
def test_no_generated_order_request_fails_or_breaks_what_is_stored(case: Any, fuzz: Fuzz) -> None:
    fuzz.send(case)


# The monitoring views read the database from other threads: they need committed rows.
@pytest.mark.django_db(transaction=True)
@schema.exclude(path_regex=ORDERS).parametrize()
@fuzz_settings(examples=50)
def test_no_generated_monitoring_request_fails(case: Any, fuzz: Fuzz) -> None:
    fuzz.send(case)
