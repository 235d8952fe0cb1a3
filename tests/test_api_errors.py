"""Every error under /api/ is JSON, whoever produced it; elsewhere Django's pages stay."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, OperationalError
from django.http import HttpResponse, HttpResponseServerError
from django.test import Client, RequestFactory

from inkwave.api_errors import ApiErrorsMiddleware, as_json, is_database_unreachable


def unreachable() -> OperationalError:
    exc = OperationalError("couldn't get a connection after 3.00 sec")
    exc.__cause__ = psycopg.OperationalError("connection refused")  # no SQLSTATE: client side
    return exc


def test_a_path_under_the_api_that_matches_nothing_is_a_json_404(db: Any) -> None:
    response = Client().get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_pages_outside_the_api_keep_djangos_answers(db: Any) -> None:
    response = Client().get("/nothing-here")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_crash_under_the_api_is_a_json_500() -> None:
    request = RequestFactory().get("/api/v1/monitoring/websocket/stats")
    response = as_json(request, HttpResponseServerError("<h1>Server Error (500)</h1>"))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert b'"code": "server_error"' in response.content


def test_a_database_that_cannot_be_reached_is_a_json_503_with_retry_after(
    settings: Any,
) -> None:
    settings.API_RETRY_AFTER_SECONDS = 7
    request = RequestFactory().get("/api/v1/monitoring/websocket/stats")
    middleware = ApiErrorsMiddleware(lambda r: HttpResponse())
    middleware.process_exception(request, unreachable())
    response = as_json(request, HttpResponseServerError("<h1>Server Error (500)</h1>"))
    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    assert b'"code": "unavailable"' in response.content


@pytest.mark.parametrize(
    ("exc", "unreachable_db"),
    [
        (unreachable(), True),
        (OperationalError("deadlock detected"), True),  # no cause: nothing says otherwise
        (IntegrityError("duplicate key"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_counts_as_the_database_being_unreachable(
    exc: BaseException, unreachable_db: bool
) -> None:
    assert is_database_unreachable(exc) is unreachable_db


def test_a_query_that_failed_on_a_live_database_is_not_an_outage() -> None:
    exc = OperationalError("deadlock detected")
    exc.__cause__ = psycopg.errors.DeadlockDetected("deadlock detected")
    assert is_database_unreachable(exc) is False
