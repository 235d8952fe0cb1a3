from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from monitoring.monitor import WebSocketMonitor, reset_monitor
from orders.models import Venue, VenueAccessToken


@pytest.fixture(autouse=True)
def fresh_monitor() -> Iterator[WebSocketMonitor]:
    """Each test counts from zero in this process, with no cached health."""
    from monitoring.health import WebSocketCheck, public_checks

    WebSocketCheck._cached = None
    public_checks.reset()
    yield reset_monitor()
    reset_monitor()
    WebSocketCheck._cached = None
    public_checks.reset()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    # Leave nothing of this run's channel layer behind.
    for key in client.scan_iter(f"{settings.CHANNEL_LAYER_PREFIX}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def venue(db: Any) -> Venue:
    return Venue.objects.create(name="Main Branch", slug="main-branch", timezone="Europe/London")


@pytest.fixture
def other_venue(db: Any) -> Venue:
    return Venue.objects.create(name="Harbour", slug="harbour")


@pytest.fixture
def venue_token(venue: Venue) -> str:
    _, raw = VenueAccessToken.issue(venue, "Kitchen screen")
    return raw


@pytest.fixture
def staff_user(db: Any) -> Any:
    return get_user_model().objects.create_user(
        "ops", "ops@example.com", "pw-ops-123", is_staff=True
    )


@pytest.fixture
def plain_user(db: Any) -> Any:
    return get_user_model().objects.create_user("waiter", "waiter@example.com", "pw-waiter-123")


def session_cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


# How long a test waits for the application to answer before calling it a failure. channels'
# 1 s default is a latency assertion in disguise: a loaded CI machine misses it now and then
# (admission runs database queries in a thread). Waiting longer costs nothing when it works.
ANSWER_TIMEOUT = 10.0


class PatientCommunicator(WebsocketCommunicator):
    """channels' WebsocketCommunicator whose waits fail only when nothing comes (its methods
    keep channels' signatures, `timeout` parameters included)."""

    async def connect(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().connect(timeout)

    async def receive_output(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_output(timeout)

    async def receive_from(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = ANSWER_TIMEOUT) -> Any:  # noqa: ASYNC109
        return await super().receive_json_from(timeout)

    async def wait(self, timeout: float = ANSWER_TIMEOUT) -> None:  # noqa: ASYNC109
        await super().wait(timeout)

    async def disconnect(
        self,
        code: int = 1000,
        timeout: float = ANSWER_TIMEOUT,  # noqa: ASYNC109
    ) -> None:
        await super().disconnect(code, timeout)
