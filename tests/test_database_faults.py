"""Order requests while the database refuses connections: a JSON 503 with Retry-After at
once, and every refused write recorded (and announced) once the database is back.

A real daphne server reaches PostgreSQL through a TCP proxy of the test's own
(tests/faults.py); closing the proxy refuses new connections and cuts the pooled ones, as a
database going away does. The shared PostgreSQL is never stopped. The bound on each answer
is the client's 5 s timeout, which the old answers (HTML 500 after 3-7 s) overran.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from bench.faultkit import TcpProxy
from notifications.models import Notification, NotificationKind
from orders.models import OrderEvent, OrderEventKind, Venue
from tests.faults import send_json
from tests.servers import MONITORING_TOKEN, STATS_PATH, ServerGroup, free_port, poll_until

pytestmark = [
    pytest.mark.system,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("routes"),
]

ORDER = {
    "table": "Table 5",
    "currency": "USD",
    "items": [{"name": "Margherita", "quantity": 2, "unitPrice": "12.50"}],
}
SETTLE_SECONDS = 20.0


def database_url(port: int) -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"


def database_address() -> tuple[str, int]:
    db = settings.DATABASES["default"]
    return db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)


def refusals() -> dict[str, Any]:
    """Run in a worker thread, whose connection is closed after (the test database is
    dropped at the end, and refuses to while a session is open)."""
    try:
        # The announcement first: it commits with the events, so once it is seen the events
        # are too (read the other way round, a commit between the two reads showed an
        # announcement without its events).
        notices = Notification.objects.filter(kind=NotificationKind.ORDER_FAILED)
        announced = sorted(set(notices.values_list("text", flat=True)))
        events = OrderEvent.objects.filter(payload__reason="database unavailable")
        return {
            "events": [(e.kind, e.venue_id, e.order_id) for e in events.order_by("pk")],
            # One row per destination (#orders and #operations), one text.
            "announced": announced,
        }
    finally:
        connection.close()


def assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503, body
    assert isinstance(body, dict), body
    assert body["error"]["code"] == "unavailable", body
    assert int(headers["Retry-After"]) >= 1


async def test_order_requests_get_a_json_503_while_the_database_is_gone_and_are_recorded_after(
    servers: ServerGroup, venue: Venue, venue_token: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    with TcpProxy(database_address()) as proxy:
        server = servers.start(DATABASE_URL=database_url(proxy.port), INKWAVE_VAR_DIR=str(var_dir))
        orders = server.base_url + "/api/v1/orders"

        def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
            return send_json(method, url, body, token=venue_token)

        status, _, placed = await asyncio.to_thread(
            call, "POST", orders, {**ORDER, "venue": venue.pk}
        )
        assert status == 201

        proxy.close()
        for method, url, body in [
            ("POST", orders, {**ORDER, "venue": venue.pk}),
            ("POST", orders, {**ORDER, "venue": venue.pk, "table": "Table 9"}),
            ("PATCH", f"{orders}/{placed['id']}", {"status": "accepted"}),
            ("GET", f"{orders}/{placed['id']}", None),  # a read: refused, nothing to record
        ]:
            assert_unavailable(*await asyncio.to_thread(call, method, url, body))
        # The monitoring API answers JSON too, never Django's HTML error page.
        status, _, stats = await asyncio.to_thread(
            send_json, "GET", server.base_url + STATS_PATH, token=MONITORING_TOKEN
        )
        assert isinstance(stats, dict), stats
        assert status != 500, stats
        # Spooled on disk (surviving a restart) while nothing can be recorded.
        spooled = (var_dir / "orders-refused.jsonl").read_text().splitlines()
        assert [json.loads(line)["method"] for line in spooled] == ["POST", "POST", "PATCH"]
        assert await asyncio.to_thread(refusals) == {"events": [], "announced": []}

        proxy.open()
        # Reads are not spooled: poll with one until the server has the database again.
        status, _, _ = await poll_until(
            lambda: asyncio.to_thread(call, "GET", f"{orders}/{placed['id']}"),
            lambda answer: answer[0] == 200,
            seconds=SETTLE_SECONDS,
            interval=0.2,
        )
        assert status == 200

        # Checked with the proxy still up: closing it under the drain would cut its commit.
        expected_events = [
            (OrderEventKind.CREATION_FAILED, venue.pk, None),
            (OrderEventKind.CREATION_FAILED, venue.pk, None),
            (OrderEventKind.UPDATE_FAILED, venue.pk, placed["id"]),
        ]
        recorded = await poll_until(
            lambda: asyncio.to_thread(refusals),
            lambda found: len(found["announced"]) == 1,
            seconds=SETTLE_SECONDS,
            interval=0.2,
        )
        assert recorded["events"] == expected_events
        [text] = recorded["announced"]
        assert text.startswith("❌ 3 order requests refused: database unavailable"), text
        assert "Main Branch: 3" in text
        assert (var_dir / "orders-refused.jsonl").read_text() == ""


async def test_refusals_spooled_by_a_process_are_recorded_by_the_next_one_after_a_restart(
    servers: ServerGroup, venue: Venue, venue_token: str, tmp_path: Path
) -> None:
    var_dir = str(tmp_path / "var")
    # Nothing listens there: the database refuses every connection from the start.
    down = servers.start(DATABASE_URL=database_url(free_port()), INKWAVE_VAR_DIR=var_dir)
    body = {**ORDER, "venue": venue.pk}
    assert_unavailable(
        *await asyncio.to_thread(
            send_json, "POST", down.base_url + "/api/v1/orders", body, token=venue_token
        )
    )
    assert await asyncio.to_thread(down.stop) == 0

    up = servers.start(INKWAVE_VAR_DIR=var_dir)
    status, _, _ = await asyncio.to_thread(
        send_json, "POST", up.base_url + "/api/v1/orders", body, token=venue_token
    )
    assert status == 201
    recorded = await poll_until(
        lambda: asyncio.to_thread(refusals),
        lambda found: len(found["announced"]) == 1,
        seconds=SETTLE_SECONDS,
        interval=0.2,
    )
    assert recorded["events"] == [(OrderEventKind.CREATION_FAILED, venue.pk, None)]
