"""The staff dashboard as a person sees it: headless Chromium against a real server process.

An operator signs in (a session cookie), opens the dashboard, and screens join a venue room:
the connection count and the live graph move without a reload. Anonymous visitors are
refused the page (sent to the admin login) and the socket (4401). With SCREENSHOT_DIR set,
the page is saved at laptop and phone sizes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from websockets.sync.client import ClientConnection, connect

from monitoring.models import AlertRule, Incident, RequestSample, WebSocketSample, Worker
from orders.models import Order, Venue, VenueAccessToken
from tests.conftest import session_cookie_for
from tests.servers import ServerGroup
from tests.test_pages_in_browser import CHROMIUM, shoot

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

LAPTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000


@dataclass(frozen=True)
class World:
    session: tuple[str, str]
    venue_id: int
    token: str


def seed() -> World:
    """A day of samples from two processes, an open and a resolved incident, some orders."""
    now = timezone.now()
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw-op-12345")
    venue = Venue.objects.create(name="Main Branch", slug="main-branch")
    _, token = VenueAccessToken.issue(venue, "Kitchen screen")
    rows = []
    for w in range(2):
        worker = Worker.objects.create(
            name=f"web:old-host:{w}", hostname="old-host", pid=100 + w,
            started_at=now - timedelta(days=2), last_seen_at=now - timedelta(minutes=5),
            stopped_at=now - timedelta(minutes=5),
        )  # fmt: skip
        # Every minute for the last two hours, up to 5 minutes ago (then the processes
        # were replaced by the server under test), every 5 minutes before that.
        for i in [*range(5, 120), *range(120, 24 * 60, 5)]:
            evening = 1 + (i % 720) / 180
            rows.append(
                WebSocketSample(
                    worker=worker,
                    recorded_at=now - timedelta(minutes=i),
                    interval_seconds=60 if i < 120 else 300,
                    active_connections=int(40 * evening),
                    messages_sent=int(900 * evening),
                    messages_received=300,
                    connections=30,
                    errors=3 if 200 < i < 250 else 0,
                    delivery_count=500,
                    delivery_sum_ms=500 * 12 * evening,
                    memory_rss_bytes=180_000_000 + w * 20_000_000,
                )
            )
            if i % 5 == 0:
                RequestSample.objects.create(
                    worker=worker, recorded_at=now - timedelta(minutes=i),
                    interval_seconds=300, route="api/v1/orders", requests=200,
                    server_errors=4 if 200 < i < 250 else 0, duration_sum_ms=200 * 35 * evening,
                    queries=800, query_ms=800 * 1.8,
                )  # fmt: skip
    WebSocketSample.objects.bulk_create(rows)
    rule, _ = AlertRule.objects.get_or_create(
        name="Elevated error rate", defaults={"metric": "ws.error_rate", "threshold": 1}
    )
    for title, severity, opened, resolved in (
        ("Elevated error rate 5.1%", "warning", now - timedelta(hours=4), now - timedelta(hours=3)),
        ("Process stopped reporting", "critical", now - timedelta(minutes=20), None),
    ):
        Incident.objects.create(
            rule=rule, title=title, severity=severity, opened_at=opened, last_seen_at=now,
            resolved_at=resolved, status="resolved" if resolved else "firing",
            first_value=1, peak_value=2, last_value=1,
            acknowledged_at=opened if resolved else None,
            acknowledged_by=user if resolved else None,
        )  # fmt: skip
    for n in range(12):
        Order.objects.create(
            venue=venue, number=n + 1, table=str(n % 5 + 1), currency="EUR",
            total=Decimal("23.50") + n,
        )  # fmt: skip
    name, value = session_cookie_for(user).decode().split("=", 1)
    return World((name, value), venue.pk, token)


@pytest.fixture
def world(transactional_db: None) -> World:
    return seed()


@pytest.fixture
def server(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    with ServerGroup(tmp_path / "servers") as group:
        yield group.start(DASHBOARD_PUSH_SECONDS="0.5").base_url


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def open_dashboard(browser: Any, server: str, world: World, viewport: dict[str, int]) -> Any:
    context = browser.new_context(viewport=viewport)
    name, value = world.session
    context.add_cookies([{"name": name, "value": value, "url": server}])
    page = context.new_page()
    page.goto(f"{server}/ops/dashboard/")
    page.wait_for_function("Number(document.getElementById('dashboard').dataset.frames) > 0",
                           timeout=WAIT_MS)  # fmt: skip
    page.wait_for_function("document.getElementById('dashboard').dataset.historyRange",
                           timeout=WAIT_MS)  # fmt: skip
    return page


WIDER_THAN_THE_SCREEN = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)"""


def no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, page.evaluate(WIDER_THAN_THE_SCREEN)


def join_room(server: str, world: World) -> ClientConnection:
    url = server.replace("http://", "ws://") + f"/ws/venues/{world.venue_id}/?token={world.token}"
    ws = connect(url, open_timeout=10)
    assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    return ws


LAST_LIVE_CONNECTIONS = (
    "() => { const d = window.InkwaveDashboard.liveCharts.connections.data[1];"
    " return d.length ? d[d.length - 1] : null; }"
)


def test_screens_joining_a_room_move_the_count_and_the_graph_without_a_reload(
    world: World, server: str, browser: Any
) -> None:
    page = open_dashboard(browser, server, world, LAPTOP)
    page.wait_for_function(f"({LAST_LIVE_CONNECTIONS})() === 0", timeout=WAIT_MS)
    assert page.inner_text("#live-activeConnections") == "0"
    page.evaluate("window.notReloaded = true")
    screens = [join_room(server, world) for _ in range(3)]
    try:
        page.wait_for_function(
            "document.getElementById('live-activeConnections').textContent === '3'",
            timeout=WAIT_MS,
        )
        page.wait_for_function(f"({LAST_LIVE_CONNECTIONS})() === 3", timeout=WAIT_MS)
        assert page.evaluate("window.notReloaded") is True
        assert "in 1 venue room" in page.inner_text("#live-rooms")
        # The alert history: the open incident first, with its admin page; then the resolved.
        rows = page.locator("#alerts tr")
        assert "Process stopped reporting" in rows.nth(0).inner_text()
        assert "not acknowledged" in rows.nth(0).inner_text()
        assert "acknowledged by op" in rows.nth(1).inner_text()
        assert "/admin/monitoring/incident/" in (
            rows.nth(0).locator("a").get_attribute("href") or ""
        )
        components = page.inner_text("#components")
        for label in ("Database", "Channel layer", "Celery workers", "Celery beat", "Slack"):
            assert label in components
        no_sideways_scroll(page)
        shoot(page, "dashboard-laptop")
        page.click("button[data-range='day']")
        page.wait_for_function(
            "document.getElementById('dashboard').dataset.historyRange === 'day'",
            timeout=WAIT_MS,
        )
        assert page.locator("#history-charts .uplot").count() >= 7
        shoot(page, "dashboard-laptop-day")
    finally:
        for ws in screens:
            ws.close()


def test_the_dashboard_reads_on_a_phone(world: World, server: str, browser: Any) -> None:
    page = open_dashboard(browser, server, world, PHONE)
    page.click("button[data-range='day']")
    page.wait_for_function(
        "document.getElementById('dashboard').dataset.historyRange === 'day'", timeout=WAIT_MS
    )
    no_sideways_scroll(page)
    shoot(page, "dashboard-phone")
    if os.environ.get("SCREENSHOT_DIR"):  # the first and the last screenful, at full size
        page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "dashboard-phone-top.png"))
        page.locator("#components").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "dashboard-phone-end.png"))


def test_anonymous_visitors_are_refused_the_page_and_the_socket(server: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server}/ops/dashboard/")
    assert "/admin/login/" in page.url
    code = page.evaluate(
        """() => new Promise(resolve => {
             const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws/ops/dashboard/');
             ws.onmessage = () => resolve('a frame');
             ws.onclose = event => resolve(event.code);
           })"""
    )
    assert code == 4401
