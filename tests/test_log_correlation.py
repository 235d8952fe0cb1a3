"""One order followed by its request id: from the API call in a web process, through the room
broadcast, to the Slack delivery in a real Celery worker (inkwave/logcontext.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog
from django.test import Client

from inkwave.logcontext import (
    REQUEST_ID_HEADER,
    add_request_id_header,
    bind_task,
    current_request_id,
    scope,
)
from monitoring.models import Worker, WorkerRole
from notifications.formatting import Composed
from notifications.local_slack import TOKEN, SlackServer
from notifications.models import Destination, Notification, NotificationKind, NotificationStatus
from notifications.outbox import enqueue
from notifications.slack import TransportError
from orders.models import Venue
from tests.servers import (
    ORDER,
    Processes,
    ServerGroup,
    compose_command,
    place_order,
    server_env,
    wait_for,
)


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
def test_an_orders_request_id_is_on_its_lines_in_the_web_process_and_the_worker(
    servers: ServerGroup,
    slack_channels: SlackServer,
    venue: Venue,
    venue_token: str,
    tmp_path: Path,
) -> None:
    overrides = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_URL": slack_channels.api_url,
        "SLACK_MIN_INTERVAL_SECONDS": "0",
    }
    web = servers.start(**overrides)
    with Processes(tmp_path) as processes:
        worker = processes.start(compose_command("worker"), server_env(tmp_path / "w", overrides))
        wait_for(
            lambda: Worker.objects.filter(role=WorkerRole.CELERY, pid=worker.pid).exists(),
            60,
            "the worker to report",
            [worker],
        )
        _, request_id = place_order(web.base_url, venue.pk, venue_token)
        row = Notification.objects.get(kind=NotificationKind.ORDER_PLACED)
        assert row.request_id == request_id

        def sent() -> bool:
            row.refresh_from_db()
            return row.status == NotificationStatus.SENT

        wait_for(sent, 30, "the order's notification to reach Slack", [worker])
        worker_log = tmp_path / "worker-0.log"

        def delivery_logged() -> list[dict[str, Any]]:
            return [
                line
                for line in json_lines(worker_log)
                if line.get("event") == "notification_sent" and line.get("request_id") == request_id
            ]

        wait_for(lambda: bool(delivery_logged()), 10, "the delivery's log line", [worker])
        (delivered,) = delivery_logged()
        assert delivered["task"] == "notifications.drain"
        assert delivered["task_id"]
        assert delivered["notification"] == row.pk

        def task_logged() -> bool:
            # Celery's own line for the drain task, bound from the header the request set.
            return any(
                line.get("request_id") == request_id
                and line.get("task_id") == delivered["task_id"]
                and "succeeded" in str(line.get("event"))
                for line in json_lines(worker_log)
            )

        wait_for(task_logged, 10, "the task's own line with the request id", [worker])
        worker_text = worker_log.read_text()
    web_lines = [line for line in json_lines(web.log_path) if line.get("request_id") == request_id]
    created = [line for line in web_lines if line["event"] == "order_created"]
    assert created
    assert created[0]["venue"] == venue.pk
    # No line holds the venue's token, in either process.
    assert venue_token not in web.log_path.read_text() + worker_text


def test_a_requests_lines_carry_its_id_and_venue_and_the_next_request_starts_clean(
    client: Client, venue: Venue, venue_token: str, db: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = client.post(
        "/api/v1/orders",
        {**ORDER, "venue": venue.pk},
        content_type="application/json",
        headers={"Authorization": f"Bearer {venue_token}"},
    )
    assert response.status_code == 201
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    (created,) = [e for e in events if e["event"] == "order_created"]
    assert created["request_id"] == response["X-Request-ID"]
    assert created["venue"] == venue.pk
    # The test client runs requests on this thread: nothing of this one is left bound.
    assert structlog.contextvars.get_contextvars() == {}


def test_a_task_published_inside_a_request_carries_its_id_and_binds_it() -> None:
    headers: dict[str, Any] = {}
    add_request_id_header(headers)
    assert headers == {}  # outside a request: nothing to carry
    with scope(request_id="req-1234"):
        add_request_id_header(headers)
        assert current_request_id() == "req-1234"
    assert headers == {REQUEST_ID_HEADER: "req-1234"}

    class Request:
        inkwave_request_id = "req-1234"
        headers = None

    bind_task("task-9", "notifications.drain", Request())
    try:
        assert structlog.contextvars.get_contextvars() == {
            "task_id": "task-9",
            "task": "notifications.drain",
            "request_id": "req-1234",
        }
    finally:
        structlog.contextvars.clear_contextvars()


def test_a_tasks_own_publishes_carry_no_request_id() -> None:
    """A drain that schedules its own wake-up: that work is the task's, not the request's."""
    with scope(request_id="req-1", task_id="task-1"):
        headers: dict[str, Any] = {}
        add_request_id_header(headers)
    assert headers == {}


def test_a_delivery_logs_under_its_rows_request_or_none(db: None) -> None:
    from notifications.delivery import deliver_claimed

    seen: list[dict[str, Any]] = []

    class Transport:
        def notify(self, message: Any, *, webhook_url: str = "") -> Any:
            seen.append(structlog.contextvars.get_contextvars())
            raise TransportError("no", permanent=True)

    destination = Destination.objects.create(name="ops", slack_channel_id="C0OPS")
    with scope(request_id="req-of-the-drain", task_id="t"):
        for request_id in ("req-7", ""):
            with scope(request_id=request_id or None):
                (row,) = enqueue(
                    NotificationKind.SYSTEM_ALERT, Composed("x"), destinations=[destination]
                )
            deliver_claimed(row, destination, Transport())  # type: ignore[arg-type]
        assert structlog.contextvars.get_contextvars()["request_id"] == "req-of-the-drain"
    assert [s.get("request_id") for s in seen] == ["req-7", None]


def test_a_long_request_id_from_the_proxy_is_kept_whole(
    client: Client, venue: Venue, venue_token: str, db: None, settings: Any
) -> None:
    settings.REQUEST_ID_HEADER = "X-Request-ID"
    long_id = "r" * 128
    response = client.post(
        "/api/v1/orders",
        {**ORDER, "venue": venue.pk},
        content_type="application/json",
        headers={"Authorization": f"Bearer {venue_token}", "X-Request-ID": long_id},
    )
    assert response.status_code == 201
    assert response["X-Request-ID"] == long_id
    assert Notification.objects.get(kind=NotificationKind.ORDER_PLACED).request_id == long_id
