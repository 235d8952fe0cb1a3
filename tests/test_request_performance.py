"""The performance middleware (monitoring/middleware.py): every request counted by route,
its queries timed, slow ones recorded without values, and an id on the answer and the logs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.test import AsyncClient, Client, override_settings

from monitoring.models import RequestSample, SlowQuery, SlowRequest, SlowStatement, Worker
from monitoring.request_recording import RequestRecorder
from monitoring.requests import RequestMonitor, normalise_sql, reset_request_monitor
from orders.models import Venue

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.perf_urls")]


@pytest.fixture
def requests() -> RequestMonitor:
    return reset_request_monitor()


def worker() -> Worker:
    at = datetime.fromtimestamp(time.time(), tz=UTC)
    return Worker.objects.create(
        name=f"web:test:{uuid.uuid4().hex[:6]}",
        hostname="test",
        pid=1,
        started_at=at,
        last_seen_at=at,
    )


def test_a_sync_view_is_counted_by_its_route_with_its_queries(
    requests: RequestMonitor, venue: Venue
) -> None:
    for _ in range(3):
        assert Client().get(f"/perf/sync/{venue.pk}/").status_code == 200
    Client().get("/perf/failing/")
    Client().get("/no/such/page/")
    routes = requests.snapshot().routes
    counted = routes["perf/sync/<int:venue_id>/"]
    assert (counted.requests, counted.client_errors, counted.server_errors) == (3, 0, 0)
    assert counted.queries >= 3
    assert counted.query_ms > 0
    assert counted.response_bytes > 0
    assert counted.duration.count == 3
    assert routes["perf/failing/"].server_errors == 1
    assert routes["(unmatched)"].client_errors == 1
    assert not any(str(venue.pk) in route for route in routes)  # ids make no series


async def test_an_async_view_is_counted_with_the_queries_it_ran_on_other_threads(
    requests: RequestMonitor, venue: Venue
) -> None:
    response = await AsyncClient().get(f"/perf/async/{venue.pk}/")
    assert response.status_code == 200
    counted = requests.snapshot().routes["perf/async/<int:venue_id>/"]
    assert counted.requests == 1
    assert counted.queries == 1
    # Django's test clients keep connections open after a request (a server closes them when
    # the request finishes): give this one back to the pool.
    await sync_to_async(close_old_connections)()


def test_the_memory_a_request_takes_is_counted_by_its_route(requests: RequestMonitor) -> None:
    from tests import perf_urls

    try:
        assert Client().get("/perf/growing/").status_code == 200
    finally:
        perf_urls.held.clear()
    routes = requests.snapshot().routes
    assert routes["perf/growing/"].memory_growth_bytes >= 30 * 1024 * 1024


def test_every_answer_has_a_request_id_and_only_a_trusted_one_is_taken(
    requests: RequestMonitor,
) -> None:
    made = Client().get("/perf/failing/", HTTP_X_REQUEST_ID="chosen-by-client")
    assert made["X-Request-ID"] != "chosen-by-client"
    assert len(made["X-Request-ID"]) == 32
    with override_settings(REQUEST_ID_HEADER="X-Request-ID"):
        taken = Client().get("/perf/failing/", HTTP_X_REQUEST_ID="from-the-proxy-1")
        assert taken["X-Request-ID"] == "from-the-proxy-1"
        refused = Client().get("/perf/failing/", HTTP_X_REQUEST_ID="bad id\nwith a newline")
        assert refused["X-Request-ID"] != "bad id\nwith a newline"


def test_log_lines_of_a_request_carry_its_id(requests: RequestMonitor) -> None:
    response = Client().get("/perf/log-context/")
    assert response.json() == {"request_id": response["X-Request-ID"]}


def test_server_timing_is_for_staff_only(
    requests: RequestMonitor, venue: Venue, staff_user: Any, plain_user: Any
) -> None:
    staff = Client()
    staff.force_login(staff_user)
    timing = staff.get(f"/perf/sync/{venue.pk}/")["Server-Timing"]
    assert timing.startswith("app;dur=")
    assert "db;dur=" in timing
    member = Client()
    member.force_login(plain_user)
    assert "Server-Timing" not in member.get(f"/perf/sync/{venue.pk}/")
    assert "Server-Timing" not in Client().get(f"/perf/sync/{venue.pk}/")


@override_settings(SLOW_QUERY_MS=5, SLOW_REQUEST_MS=5)
def test_a_slow_query_is_recorded_normalised_with_its_route_and_request_without_values(
    requests: RequestMonitor,
) -> None:
    first = Client().get("/perf/slow/")
    Client().get("/perf/slow/")
    recorder = RequestRecorder(requests, "web:test", time.time())
    recorder.flush(worker().pk, time.time())
    # On a busy machine another query (the worker row's insert) may pass 5 ms as well.
    statement = SlowStatement.objects.get(statement__startswith="SELECT pg_sleep(")
    assert statement.statement == "SELECT pg_sleep(?), ?, ?"
    assert statement.occurrences == 2
    assert statement.max_ms >= 20
    runs = SlowQuery.objects.filter(statement=statement).order_by("recorded_at")
    assert [r.route for r in runs] == ["perf/slow/", "perf/slow/"]
    assert runs[0].request_id == first["X-Request-ID"]
    stored = " ".join(f"{r.statement.statement} {r.route}" for r in runs)
    assert "0.02" not in stored
    assert "iwv_literal_secret" not in stored
    sample = RequestSample.objects.get(route="perf/slow/")
    assert sample.requests == 2
    assert sum(sample.duration_buckets) == 2
    assert sample.queries >= 2


def test_a_flush_writes_each_interval_once_and_a_failed_one_is_folded_into_the_next(
    requests: RequestMonitor, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RequestRecorder(requests, "web:test", time.time())
    reporting = worker()
    Client().get(f"/perf/sync/{venue.pk}/")
    monkeypatch.setattr(RequestSample.objects, "bulk_create", _fail)
    with pytest.raises(OSError, match="went away"):
        recorder.flush(reporting.pk, time.time())
    monkeypatch.undo()
    Client().get(f"/perf/sync/{venue.pk}/")
    recorder.flush(reporting.pk, time.time())
    recorder.flush(reporting.pk, time.time())  # nothing new: no row
    rows = RequestSample.objects.filter(route="perf/sync/<int:venue_id>/")
    assert [r.requests for r in rows] == [2]


def _fail(*args: Any, **kwargs: Any) -> None:
    raise OSError("the database went away")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = %s AND b = 'x''y'", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT * FROM t WHERE id IN (%s, %s, %s)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT * FROM t WHERE id IN (%s)", "SELECT * FROM t WHERE id IN (...)"),
        ('SELECT "t2"."c1" FROM t2 LIMIT 21', 'SELECT "t2"."c1" FROM t2 LIMIT ?'),
        ("UPDATE t SET x = -1.5e3\n   WHERE y = 7", "UPDATE t SET x = ? WHERE y = ?"),
    ],
)
def test_statements_are_normalised_without_any_value(sql: str, expected: str) -> None:
    assert normalise_sql(sql) == expected


def test_old_request_records_are_pruned_and_a_statement_without_runs_forgotten(
    requests: RequestMonitor,
) -> None:
    from monitoring import pruning

    old = datetime(2020, 1, 1, tzinfo=UTC)
    reporting = worker()
    RequestSample.objects.create(
        worker=reporting, recorded_at=old, interval_seconds=10, route="x", requests=1
    )
    statement = SlowStatement.objects.create(
        fingerprint="f", statement="SELECT ?", first_seen_at=old, last_seen_at=old
    )
    SlowQuery.objects.create(statement=statement, recorded_at=old, duration_ms=1500)
    SlowRequest.objects.create(
        recorded_at=old, route="x", method="GET", status=200, duration_ms=3000
    )
    assert pruning.prune_all_samples() == 3
    assert not RequestSample.objects.exists()
    assert not SlowStatement.objects.exists()
    assert not SlowRequest.objects.exists()


@override_settings(SLOW_QUERY_MS=5, SLOW_REQUEST_MS=5)
def test_an_operator_finds_slow_statements_grouped_in_the_admin(requests: RequestMonitor) -> None:
    Client().get("/perf/slow/")
    RequestRecorder(requests, "web:test", time.time()).flush(worker().pk, time.time())
    admin = Client()
    admin.force_login(
        get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    )
    with override_settings(ROOT_URLCONF="inkwave.urls"):
        statements = admin.get("/admin/monitoring/slowstatement/")
        assert statements.status_code == 200
        assert "SELECT pg_sleep(?), ?, ?" in statements.content.decode()
        # Any other query over the test's 5 ms (a login's, the flush's) is recorded too.
        statement = SlowStatement.objects.get(statement__startswith="SELECT pg_sleep(")
        runs = admin.get(f"/admin/monitoring/slowquery/?statement__id__exact={statement.pk}")
        assert runs.content.decode().count("perf/slow/") >= 1
        for page in ("requestsample", "slowrequest"):
            listing = admin.get(f"/admin/monitoring/{page}/")
            assert listing.status_code == 200
            assert "perf/slow/" in listing.content.decode()
